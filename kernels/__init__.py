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
- :func:`block_quant`: block-scaled (MX, NVFP4) quantize-dequantize + trust mask,
  round to nearest or stochastic given uniforms.

Triton is imported only when a Triton backend runs, so the torch backend works
where Triton is missing (macOS, Windows).

The backend switch lives here alone: :data:`BACKENDS` (the allowed names),
:func:`check_backend` (validate a name) and :func:`use_triton` (does this
backend run Triton for this tensor); ``raysweep.train.layers`` imports them.
"""

from __future__ import annotations

BACKENDS = ("auto", "triton", "torch")


def check_backend(backend: str) -> str:
    """``backend`` itself if it is one of :data:`BACKENDS`, else a RaysweepError naming them."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        from raysweep.errors import RaysweepError

        raise RaysweepError(f"backend: unknown {backend!r}; allowed: {', '.join(BACKENDS)}")
    return backend


def use_triton(backend: str, x) -> bool:
    """Whether ``backend`` runs the Triton kernel on tensor x.

    ``triton`` always, ``auto`` for CUDA tensors, ``torch`` never; an unknown
    name is an error (:func:`check_backend`).
    """
    backend = check_backend(backend)
    return backend == "triton" or (backend == "auto" and bool(x.is_cuda))


def int_quant(x, bits: int, clip_mult: float, trust: float | None = None,
              backend: str = "auto"):
    """(x_hat, trust mask) of the per-row RMS int grid; see reference.int_quant_ref."""
    if use_triton(backend, x):
        from raysweep.kernels.quant import int_quant_triton

        return int_quant_triton(x, bits, clip_mult, trust)
    from raysweep.kernels.reference import int_quant_ref

    return int_quant_ref(x, bits, clip_mult, trust)


def masked_grad(g, mask, backend: str = "auto"):
    """``g`` where ``mask`` is set, else 0 (the masked backward of an estimator)."""
    if use_triton(backend, g):
        from raysweep.kernels.quant import masked_grad_triton

        return masked_grad_triton(g, mask)
    from raysweep.kernels.reference import masked_grad_ref

    return masked_grad_ref(g, mask)


def topk_mask(x, k: int, backend: str = "auto"):
    """Bool mask keeping |x| >= the k-th largest |x| of each row (last dim)."""
    if use_triton(backend, x):
        from raysweep.kernels.sparse import topk_mask_triton

        return topk_mask_triton(x, k)
    from raysweep.kernels.reference import topk_mask_ref

    return topk_mask_ref(x, k)


def nm_mask(x, n: int, m: int, backend: str = "auto"):
    """Bool N:M mask: the n largest |x| of every m consecutive entries (earlier wins ties)."""
    if use_triton(backend, x):
        from raysweep.kernels.sparse import nm_mask_triton

        return nm_mask_triton(x, n, m)
    from raysweep.kernels.reference import nm_mask_ref

    return nm_mask_ref(x, n, m)


def block_quant(x, kind: str, element: str, four_six: bool = False, u=None,
                headroom: float | None = None, backend: str = "auto"):
    """(x_hat, trust mask) of a block-scaled format; see reference.block_quant_ref.

    ``kind`` "mx" | "nvfp4", ``element`` "e2m1" | "e2m3" | "e3m2" | "e4m3fn" | "int8"
    (any e{E}m{M}[fn]; nvfp4: e2m1), ``four_six`` NVFP4's 4/6 variant, ``u`` float32
    uniforms of x's shape for stochastic rounding (None: round to nearest), ``headroom``
    (mx) a factor h on the scaled elements before rounding, undone after (None: 1).
    """
    if use_triton(backend, x):
        from raysweep.kernels.block import block_quant_triton

        return block_quant_triton(x, kind, element, four_six, u, headroom)
    from raysweep.kernels.reference import block_quant_ref

    return block_quant_ref(x, kind, element, four_six, u, headroom)


__all__ = ["BACKENDS", "block_quant", "check_backend", "int_quant", "masked_grad", "nm_mask",
           "topk_mask", "use_triton"]
