"""Pure-torch references for the Triton kernels (the ``torch`` backend).

Each function here defines the numbers; the Triton kernel beside it in
:mod:`raysweep.kernels.quant` / :mod:`raysweep.kernels.sparse` reproduces them
bit for bit. The exact operation order matters, so it is spelled out.

Per-row RMS int grid (QuEST convention, mid-rise, ``2^b`` levels, no zero level)::

    ss   = sum(x_i^2)  accumulated in float64, then rounded to float32
    s    = sqrt(ss / n)                        (float32 division, correctly rounded sqrt)
    s    = max(s, tiny)
    t    = clamp(x / s, -a, a)                 (float32, correctly rounded division)
    r    = rint(t / step + 0.5)                (round half to even, like torch.round)
    xq   = (r * step - step/2) * s
    mask = |xq - x| <= half_trust * s          (trust mask, half_trust = T in units of s)

with ``a = clip_mult`` and ``step = 2a / (2^b - 1)`` rounded once to float32 on
the host; divisions are true IEEE divisions (by tensors: torch's CUDA division
by a Python scalar multiplies by the reciprocal instead); every product and sum
is rounded separately (no fused multiply-add: the Triton kernel is compiled
with ``enable_fp_fusion=False``). The float64 sum makes the scale
independent of the reduction order (a float32 sum differs between torch, the
interpreter and a GPU tree reduction in the last bit); squares of float32
values are exact in float64, so the only rounding left is the final one to
float32, identical everywhere except when the float64 sum lies within ~n ulp64
of a float32 rounding boundary (probability ~ n * 2^-29 per row).
An all-zero row (s = 0) gives xq = 0 and a full trust mask: the grid has no
zero level, and -step/2 * tiny would be a subnormal that backends round
differently.

Magnitude top-k (unstructured sparsity, per row): keep the entries whose
``|x|`` is at least the k-th largest ``|x|`` of the row (ties at the threshold
are all kept). N:M: in each group of m consecutive entries keep the n largest
``|x|``; ties go to the earlier index.
"""

from __future__ import annotations

import struct

import torch


def _scalar(v: float, like: torch.Tensor) -> torch.Tensor:
    """A 0-dim float32 tensor on ``like``'s device: dividing by it is a true IEEE
    division on every device (torch's CUDA kernels turn division by a *Python*
    scalar into a multiplication by its reciprocal, which rounds differently)."""
    return torch.full((), v, dtype=torch.float32, device=like.device)


def rms_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-row RMS of x (last dim) as float32, from a float64 sum of squares (0 for zero rows)."""
    # One fused float64 pass (vector_norm upcasts on the fly; an explicit .double() copy
    # is ~30x slower on CPU). norm^2 differs from the float64 sum by ~1 ulp64, which
    # changes the float32 rounding only within 2^-28 of a float32 midpoint.
    n64 = torch.linalg.vector_norm(x.float(), dim=-1, keepdim=True, dtype=torch.float64)
    ss = (n64 * n64).float()
    # float64 sqrt rounded to float32 is the correctly rounded float32 sqrt; torch's
    # float32 CPU sqrt is not (it is off by one ulp for ~20% of inputs).
    return torch.sqrt((ss / _scalar(x.shape[-1], ss)).double()).float()


def f32(v: float) -> float:
    """v rounded to the nearest float32, as a Python float (no tensor: compile-friendly)."""
    return struct.unpack("f", struct.pack("f", v))[0]


def grid_constants(bits: int, clip_mult: float) -> tuple[float, float, float]:
    """(a, step, inv_step) as float32-representable Python floats for the int grid."""
    step64 = 2.0 * clip_mult / (2**bits - 1)
    return f32(clip_mult), f32(step64), f32(1.0 / step64)


def int_quant_ref(x: torch.Tensor, bits: int, clip_mult: float,
                  trust: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row RMS int grid quantize-dequantize; returns (x_hat in x.dtype, trust mask bool).

    ``trust`` is the trust radius in units of the row scale (default: half a step).
    """
    a, step, _ = grid_constants(bits, clip_mult)
    half_trust = step / 2 if trust is None else f32(trust)
    xf = x.float()
    s0 = rms_scale(xf)
    s = s0.clamp_min(torch.finfo(torch.float32).tiny)
    t = (xf / s).clamp_(-a, a)                       # in place from here: fewer passes
    r = t.div_(_scalar(step, t)).add_(0.5).round_()
    xq = r.mul_(step).sub_(step / 2).mul_(s).masked_fill_(s0 == 0, 0.0)
    mask = (xq - xf).abs_() <= half_trust * s
    return xq.to(x.dtype), mask


def int_codes_ref(x: torch.Tensor, bits: int, clip_mult: float):
    """(codes r - 1/2 as float8 e4m3, row scales step * s (rows, 1)) of the int grid, b <= 4.

    ``codes * scale`` is the float32 x_hat before its final rounding: the FP8
    GEMM path multiplies codes exactly and applies the scales to the fp32 sum.
    """
    a, step, _ = grid_constants(bits, clip_mult)
    xf = x.float().reshape(-1, x.shape[-1])
    s0 = rms_scale(xf)
    t = torch.clamp(xf / s0.clamp_min(torch.finfo(torch.float32).tiny), -a, a)
    r = torch.round(t / _scalar(step, t) + 0.5)
    return (r - 0.5).to(torch.float8_e4m3fn), s0 * step


def masked_grad_ref(g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Backward of a trust/sparsity estimator: the gradient where mask, else 0."""
    return torch.where(mask, g, torch.zeros((), dtype=g.dtype, device=g.device))


def topk_mask_ref(x: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of entries with |x| >= the k-th largest |x| of their row (ties kept)."""
    n = x.shape[-1]
    if k <= 0:
        return torch.zeros(x.shape, dtype=torch.bool, device=x.device)
    if k >= n:
        return torch.ones(x.shape, dtype=torch.bool, device=x.device)
    ax = x.float().abs()
    thr = torch.topk(ax, k, dim=-1, sorted=False).values.amin(-1, keepdim=True)
    return ax >= thr


def nm_mask_ref(x: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool N:M mask: the n largest |x| of every m consecutive entries (earlier wins ties)."""
    if x.shape[-1] % m:
        raise ValueError(f"last dim {x.shape[-1]} is not a multiple of m={m}")
    ax = x.float().abs().reshape(*x.shape[:-1], x.shape[-1] // m, m)
    idx = torch.arange(m, device=x.device)
    # rank_i = #{j: |x_j| > |x_i|} + #{j < i: |x_j| == |x_i|}
    gt = ax.unsqueeze(-2) > ax.unsqueeze(-1)            # [..., i, j]: x_j > x_i
    eq = (ax.unsqueeze(-2) == ax.unsqueeze(-1)) & (idx < idx.unsqueeze(-1))
    rank = (gt | eq).sum(-1)
    return (rank < n).reshape(x.shape)
