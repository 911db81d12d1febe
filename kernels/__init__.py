"""Triton kernels with torch references; plain tensors in, plain tensors out.

Every entry point takes ``backend = "auto" | "triton" | "torch"``: ``torch``
runs the reference in :mod:`raysweep.kernels.reference`, ``triton`` the fused
kernel (on CPU only under ``TRITON_INTERPRET=1``), ``auto`` Triton for CUDA
tensors and the reference elsewhere. Both give identical results (see the
reference module for the exact operation order and tie rules).

- :func:`int_quant`: per-row RMS int grid quantize-dequantize + trust mask.
- :func:`masked_grad`: the estimator's backward, ``g`` where the mask is set, else 0.
- :func:`topk_mask`: per-row magnitude top-k keep mask.
- :func:`nm_mask`: N:M keep mask along the last dim.

Triton is imported only when a Triton backend runs, so the torch backend works
where Triton is missing (macOS, Windows).
"""

from __future__ import annotations

BACKENDS = ("auto", "triton", "torch")


def _triton(backend: str, x) -> bool:
    if backend == "torch":
        return False
    if backend == "triton":
        return True
    if backend == "auto":
        return bool(x.is_cuda)
    from raysweep.errors import RaysweepError

    raise RaysweepError(f"backend: unknown {backend!r}; allowed: {', '.join(BACKENDS)}")


def int_quant(x, bits: int, clip_mult: float, trust: float | None = None,
              backend: str = "auto"):
    """(x_hat, trust mask) of the per-row RMS int grid; see reference.int_quant_ref."""
    if _triton(backend, x):
        from raysweep.kernels.quant import int_quant_triton

        return int_quant_triton(x, bits, clip_mult, trust)
    from raysweep.kernels.reference import int_quant_ref

    return int_quant_ref(x, bits, clip_mult, trust)


def masked_grad(g, mask, backend: str = "auto"):
    """``g`` where ``mask`` is set, else 0 (the masked backward of an estimator)."""
    if _triton(backend, g):
        from raysweep.kernels.quant import masked_grad_triton

        return masked_grad_triton(g, mask)
    from raysweep.kernels.reference import masked_grad_ref

    return masked_grad_ref(g, mask)


def topk_mask(x, k: int, backend: str = "auto"):
    """Bool mask keeping |x| >= the k-th largest |x| of each row (last dim)."""
    if _triton(backend, x):
        from raysweep.kernels.sparse import topk_mask_triton

        return topk_mask_triton(x, k)
    from raysweep.kernels.reference import topk_mask_ref

    return topk_mask_ref(x, k)


def nm_mask(x, n: int, m: int, backend: str = "auto"):
    """Bool N:M mask: the n largest |x| of every m consecutive entries (earlier wins ties)."""
    if _triton(backend, x):
        from raysweep.kernels.sparse import nm_mask_triton

        return nm_mask_triton(x, n, m)
    from raysweep.kernels.reference import nm_mask_ref

    return nm_mask_ref(x, n, m)


__all__ = ["BACKENDS", "int_quant", "masked_grad", "nm_mask", "topk_mask"]
