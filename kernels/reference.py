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


# ----------------------------------------------------------------------------- block-scaled formats
#
# MX (OCP Microscaling v1.0) and NVFP4 fake quantization: the numbers of
# :func:`raysweep.kernels.block.block_quant_triton`, spelled out in torch. Blocks of
# BLOCK_SIZES[kind] consecutive values along the last dim (a partial last block is
# zero-padded). All float32; every division a true IEEE division; every rounding
# float32 bit arithmetic (exact). Per block, with amax = max |x| of the block:
#
#   mx:     e = floor(log2 amax) (amax's float32 exponent field - 127; -1 when amax
#           is 0, inf or NaN, torch.frexp's convention, and NaN anywhere in the block
#           makes amax NaN), shared = clamp(e - emax_elem, -127, 127), X = 2^shared
#           (2^-127 is a float32 subnormal, exact); v = x / X (int8: v = (x / X) * 64);
#           with a headroom h (Quartet's 3/4): v = v * h, and q = q / h after rounding.
#   nvfp4:  s = 2688 / amax(tensor) (nvfp4_tensor_scale; non-finite values ignored),
#           b = E4M3(amax / top * s) (top = 6; 4 for the 4/6 candidate), v = x / (b / s).
#
# then the element q = round(v) (RTN, ties to even, or SR given u; saturated at the
# element's top level, on magnitudes, sign copied bit-wise so -0 stays -0) and
#
#   mx:     x_hat = q * X (int8: (q * X) / 64), mask = |v| <= edge
#   nvfp4:  x_hat = (q * b) / s; a dead block (b == 0 or b / s == 0) divides by inf
#           instead of b / s, so v = +-0, and gives x_hat = +0; a non-finite x is
#           returned as is with v = 0; mask = |v| <= 7.
#
# edge = top + gap / 2 (the trust rule of the scalar grids: E2M1 7, E2M3 7.75,
# E3M2 30, E4M3 464, int8 127.5). 4/6: per block keep the candidate with the lower
# sum of squared errors (fp32 differences and squares, so huge blocks overflow and tiny
# ones underflow; summed in float64, so the order of the sum hardly matters; ties keep
# 6), made on the round-to-nearest candidates; with SR the elements are then rounded
# once with each block's chosen scale (nvfp4_blocks_ref). RTN of a float element e{E}m{M}
# (round_float_ref): k = clamp(floor(log2 |v|), 1 - bias, emax), step = 2^(k - M),
# q = min(rint(|v| / step) step, top). SR (the contract of
# raysweep.formats.rounding): lo = floor(|v| / step) step, q = lo + step if
# u < (|v| - lo) / step else lo, then min(q, top); int8 (round_int_ref): lo = floor(|v|),
# q = lo + 1 if u < |v| - lo else lo, min(q, 127). u: float32 uniforms in [0, 1)
# of the unpadded input's shape.
#
# These functions are the only definition of block-scaled fake quantization and of
# float / integer element rounding: raysweep.formats.block (MX, NVFP4) and
# raysweep.formats.rounding (the scalar grids' RTN and SR) call them.

BLOCK_SIZES = {"mx": 32, "nvfp4": 16}
NVFP4_TENSOR_NUM = 448.0 * 6.0  # s = 2688 / amax(tensor)
F32_MAX = 3.4028234663852886e38


def _element_table() -> dict[str, tuple[int, int, bool, float, float]]:
    table = {"int8": (0, 0, False, 127.0, 127.5)}
    for e in range(1, 6):
        emax = 2**e - 1 - (2 ** (e - 1) - 1)
        for m in range(1, 8):
            for fn in (False, True):
                top = (2.0 - 2.0 ** ((1 if fn else 0) - m)) * 2.0**emax
                table[f"e{e}m{m}" + ("fn" if fn else "")] = (e, m, fn, top,
                                                             top + 2.0 ** (emax - m) / 2.0)
    return table


BLOCK_ELEMENTS = _element_table()  # name -> (E, M, fn, top, edge); a dict: compile-friendly


def block_element(element: str) -> tuple[int, int, bool, float, float]:
    """(E, M, fn, top, edge) of a block element name: ``e{E}m{M}`` (every code finite, as
    OCP's E2M1/E2M3/E3M2), ``e{E}m{M}fn`` (the all-ones code is NaN: OCP E4M3, top 448)
    or ``int8`` (E = M = 0, top 127, edge 127.5); E in 1..5, M in 1..7; a RaysweepError
    names the allowed forms. ``edge = top + gap / 2`` (gap = top - the next level down)."""
    found = BLOCK_ELEMENTS.get(element) if isinstance(element, str) else None
    if found is None:
        from raysweep.errors import RaysweepError

        raise RaysweepError(f"block element: unknown {element!r}; allowed: int8, e{{E}}m{{M}} or "
                            f"e{{E}}m{{M}}fn with E in 1..5, M in 1..7 (e2m1, e2m3, e3m2, "
                            f"e4m3fn)")
    return found


def _element_step(a: torch.Tensor, e: int, m: int) -> torch.Tensor:
    """2^(k - M), k = clamp(floor(log2 a), 1 - bias, emax), from a's float32 bits."""
    bias = 2 ** (e - 1) - 1
    k = (a.view(torch.int32) >> 23).sub_(127).clamp_(1 - bias, 2**e - 1 - bias)
    return k.add_(127 - m).bitwise_left_shift_(23).view(torch.float32)


def _copysign_bits(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q (non-negative or NaN; a fresh tensor, changed in place) with v's sign bit."""
    q.view(torch.int32).bitwise_or_(v.view(torch.int32) & -(2**31))
    return q


def round_float_ref(v: torch.Tensor, e: int, m: int, top: float,
                    u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, |v|): v (float32) rounded onto the float format e{E}m{M} (bias 2^(E-1) - 1,
    subnormals), saturated at ``top`` (its largest magnitude): RTN, ties to even (u None),
    or SR given uniforms u; q has v's sign bit.

    The one definition of float rounding: the block elements and scales here, and the
    scalar grids through :mod:`raysweep.formats.rounding` (``fp``, ``e{E}m{M}``, M >= 0).
    ``k = clamp(floor(log2 |v|), 1 - bias, emax)``, ``step = 2^(k - M)``, ``t = |v| / step``
    (exact); RTN ``q = rint(t) step``; SR ``q = lo + step`` if ``u < (|v| - lo) / step``
    else ``lo``, ``lo = floor(t) step``, computed as ``(floor(t) + [u < t - floor(t)])
    step`` (the same bits: ``(|v| - lo) / step = t - floor(t)`` exactly, a power-of-two
    step); then ``min(q, top)``.
    """
    a = v.abs()
    step = _element_step(a, e, m)
    t = a / step
    if u is None:
        q = t.round_()
    else:
        f = t.floor()
        q = f.add_(u < t.sub_(f))
    return _copysign_bits(q.mul_(step).clamp_(max=top), v), a


def round_int_ref(w: torch.Tensor, top: float | None = None,
                  u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, |w|): w (float32) rounded to an integer on magnitudes: RTN, half to even (u
    None), or SR given u (``lo = floor(|w|)``, ``lo + 1`` if ``u < |w| - lo`` else
    ``lo``); saturated at ``top`` (None: not); q has w's sign bit. The int8 element here;
    ``int{b}@sr``, ``intz{b}@sr`` through :mod:`raysweep.formats.rounding`."""
    a = w.abs()
    if u is None:
        q = a.round()
    else:
        lo = a.floor()
        q = lo.add_(u < a - lo)
    if top is not None:
        q = q.clamp_(max=top)
    return _copysign_bits(q, w), a


def _round_element(v: torch.Tensor, element: str, u: torch.Tensor | None = None):
    """(q, |v|) of :func:`round_element_ref`."""
    e, m, _, top, _ = block_element(element)
    if e == 0:  # int8
        return round_int_ref(v, top, u)
    return round_float_ref(v, e, m, top, u)


def round_element_ref(v: torch.Tensor, element: str, u: torch.Tensor | None = None):
    """v (float32) rounded onto the element grid: RTN (u None) or SR given u; saturated."""
    return _round_element(v, element, u)[0]


def _tensor_scale(xz: torch.Tensor) -> torch.Tensor:
    """``2688 / amax(|xz|)`` clamped to the float32 maximum (xz finite, any layout)."""
    amax = xz.abs().amax() if xz.numel() else torch.zeros((), device=xz.device)
    return (torch.full_like(amax, NVFP4_TENSOR_NUM) / amax).clamp(max=F32_MAX)


def nvfp4_tensor_scale(x: torch.Tensor) -> torch.Tensor:
    """NVFP4's per-tensor float32 scale ``2688 / amax(|x|)`` (non-finite values ignored;
    clamped to the float32 maximum, so an all-zero tensor gives F32_MAX), a 0-dim tensor."""
    xf = x.float()
    return _tensor_scale(torch.where(torch.isfinite(xf), xf, torch.zeros((), device=x.device)))


def _mx_scale(xb: torch.Tensor, emax: int) -> torch.Tensor:
    """2^clamp(floor(log2 amax) - emax, -127, 127) per block (last dim), torch.frexp style."""
    amax = xb.abs().amax(-1, keepdim=True)
    ex = (amax.view(torch.int32) >> 23) - 127
    ex = torch.where(torch.isfinite(amax) & (amax > 0), ex, -1)
    shared = (ex - emax).clamp_(-127, 127)
    bits = torch.where(shared >= -126, (shared + 127) << 23, 1 << 22)  # 2^-127: subnormal
    return bits.view(torch.float32)


def _nvfp4_scale(amax, s, top: float):
    """The E4M3 block scale b = E4M3(amax / top * s) (nearest, saturated at 448)."""
    return round_element_ref(amax / _scalar(top, amax) * s, "e4m3fn")


def _nvfp4_candidate(xb, b, s, u):
    """(x_hat, |v|) with block scales b; a dead block (b == 0 or b / s == 0) divides by inf."""
    bs = b / s
    dead = (b == 0) | (bs == 0)
    v = xb / torch.where(dead, float("inf"), bs)
    q, a = _round_element(v, "e2m1", u)
    return q.mul_(b).div_(s).masked_fill_(dead, 0.0), a


def nvfp4_blocks_ref(xb: torch.Tensor, four_six: bool = False,
                     u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat, trust mask) of NVFP4 on float32 values laid out as (..., blocks, elements):
    one E4M3 scale per block over the last dim (16 in :func:`block_quant_ref`; formats'
    ``nvfp4@2d`` passes its 16 x 16 tiles as blocks of 256) times the tensor scale of all
    of ``xb`` (zero padding does not change it); ``four_six`` the 4/6 choice (made on
    the RTN candidates; with uniforms ``u`` of xb's layout the elements are then rounded
    stochastically with each block's chosen scale). Non-finite values are returned as is
    (amaxes ignore them)."""
    finite = torch.isfinite(xb)
    # eager on the CPU: skip two masking passes when all is finite (no sync on a GPU, no
    # data-dependent branch in a traced graph)
    clean = (xb.device.type == "cpu" and not torch.compiler.is_compiling()
             and bool(finite.all()))
    xz = xb if clean else torch.where(finite, xb, torch.zeros((), device=xb.device))
    s = _tensor_scale(xz)
    amax = xz.abs().amax(-1, keepdim=True)
    b6 = _nvfp4_scale(amax, s, 6.0)
    if not four_six:
        out, a = _nvfp4_candidate(xz, b6, s, u)
    else:
        b4 = _nvfp4_scale(amax, s, 4.0)
        out, a = _nvfp4_candidate(xz, b6, s, None)
        out4, a4 = _nvfp4_candidate(xz, b4, s, None)
        d6, d4 = out - xz, out4 - xz
        err6 = (d6 * d6).double().sum(-1, keepdim=True)
        err4 = (d4 * d4).double().sum(-1, keepdim=True)
        use4 = err4 < err6
        out, a = torch.where(use4, out4, out), torch.where(use4, a4, a)
        if u is not None:
            out, _ = _nvfp4_candidate(xz, torch.where(use4, b4, b6), s, u)
    if not clean:
        out = torch.where(finite, out, xb)
    return out, a <= block_element("e2m1")[4]


def block_quant_ref(x: torch.Tensor, kind: str, element: str, four_six: bool = False,
                    u: torch.Tensor | None = None,
                    headroom: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat in x.dtype, trust mask bool) of a block-scaled format (the comment above).

    ``kind`` "mx" (blocks of 32, E8M0 scale) or "nvfp4" (blocks of 16, E4M3 scale times
    the fp32 tensor scale; element must be e2m1); ``four_six`` (nvfp4 only) the 4/6
    variant; ``u`` uniforms of x's shape for stochastic rounding (None: RTN);
    ``headroom`` (mx only) the factor h of the scaled elements (None: 1).
    """
    k = check_block_args(x, kind, element, four_six, u, headroom)
    if x.numel() == 0:
        return x.clone(), torch.zeros(x.shape, dtype=torch.bool, device=x.device)
    shape, n = x.shape, x.shape[-1]
    xf = x.float().reshape(-1, n)
    pad = -n % k
    if pad:
        xf = torch.cat([xf, xf.new_zeros(xf.shape[0], pad)], dim=-1)
    xb = xf.reshape(xf.shape[0], -1, k)
    ub = None
    if u is not None:
        ub = u.float().reshape(-1, n)
        if pad:
            ub = torch.cat([ub, ub.new_zeros(ub.shape[0], pad)], dim=-1)
        ub = ub.reshape(xb.shape)
    if kind == "mx":
        e, _, _, _, edge = block_element(element)
        emax = 0 if e == 0 else 2**e - 1 - (2 ** (e - 1) - 1)
        scale = _mx_scale(xb, emax)
        v = xb / scale                      # fresh tensors from here: in place is safe
        if e == 0:
            v.mul_(64.0)
        if headroom is not None:
            v.mul_(headroom)
        q, a = _round_element(v, element, ub)
        if headroom is not None:
            q.div_(_scalar(headroom, q))
        out = q.mul_(scale)
        if e == 0:
            out.div_(_scalar(64.0, out))
        mask = a <= edge
    else:
        out, mask = nvfp4_blocks_ref(xb, four_six, ub)
    out = out.reshape(xf.shape)[:, :n].reshape(shape).to(x.dtype)
    return out, mask.reshape(xf.shape)[:, :n].reshape(shape)


def check_block_args(x, kind: str, element: str, four_six: bool, u,
                     headroom: float | None = None) -> int:
    """The block size of ``kind``; a RaysweepError for a bad kind/element/u combination."""
    from raysweep.errors import RaysweepError

    if kind not in BLOCK_SIZES:
        raise RaysweepError(f"block kind: unknown {kind!r}; allowed: {', '.join(BLOCK_SIZES)}")
    block_element(element)
    if kind == "nvfp4" and element != "e2m1":
        raise RaysweepError(f"block element: nvfp4 takes e2m1 elements, got {element!r}")
    if four_six and kind != "nvfp4":
        raise RaysweepError("four_six: only nvfp4 has the 4/6 variant")
    if headroom is not None and (kind != "mx" or not 0.0 < headroom <= 1.0):
        raise RaysweepError(f"headroom: a factor in (0, 1] for mx, got {headroom!r} for {kind}")
    if u is not None and (tuple(u.shape) != tuple(x.shape) or u.device != x.device):
        raise RaysweepError(f"u: uniforms must have x's shape {tuple(x.shape)} and device "
                            f"{x.device}, got {tuple(u.shape)} on {u.device}")
    if x.dim() == 0:
        raise RaysweepError("x: block formats need at least one dimension")
    return BLOCK_SIZES[kind]
