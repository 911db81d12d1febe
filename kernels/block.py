"""Fused block-scaled fake quantization (MX and NVFP4) in Triton.

One program handles ``BLOCK_G`` blocks of ``K`` consecutive values (K = 32 for MX,
16 for NVFP4) as a ``[BLOCK_G, K]`` tile: block ``g`` is row ``g // nb``, columns
``(g % nb) K ..`` (``nb`` = blocks per row; columns past the row end load as zeros,
the zero padding of a partial last block). Per block, in registers: absmax, the
scale (E8M0 for MX; E4M3 times the per-tensor fp32 scale for NVFP4, the 4/6
variant tries both maxima), the element rounding (to nearest, ties to even, or
stochastic given the uniforms ``u``), saturation, dequantization and the trust
mask; x_hat (input dtype) and a uint8 mask are written. No autotuning.

The numbers equal :func:`raysweep.kernels.reference.block_quant_ref` bit for bit
(that module spells out the operation order). Float32 throughout; divisions are
``div_rn``; rounding half to even is the ``1.5 * 2^23`` trick (here ``|t| < 2^22``;
larger, infinite and NaN values pass through, they are integers or non-finite);
signs are copied bit-wise (``-0`` stays ``-0``); NaN never reaches ``minimum`` /
``max`` (their NaN rules differ between the interpreter and the GPU): the block
absmax is taken over NaN-free values and a NaN flag is reduced beside it.

:func:`block_quant_triton` is the custom operator ``raysweep::block_quant``
(``torch.library.custom_op`` with a fake implementation), so ``torch.compile``
traces it with ``fullgraph=True``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from raysweep.kernels.quant import _NO_FMA, _interpreting, _round_bf16
from raysweep.kernels.reference import (
    BLOCK_SIZES,
    block_element,
    check_block_args,
    nvfp4_tensor_scale,
)

_MAGIC = tl.constexpr(12582912.0)  # 1.5 * 2**23
_RNE_LIMIT = tl.constexpr(4194304.0)  # 2**22: the trick is exact below it
_SIGN = tl.constexpr(-2147483648)  # the float32 sign bit as an int32
_INF = tl.constexpr(float("inf"))


@triton.jit
def _rne(t):
    """Round half to even; |t| >= 2^22, inf and NaN pass through (already integral)."""
    small = tl.abs(t) < _RNE_LIMIT
    ts = tl.where(small, t, 0.0)
    return tl.where(small, (ts + _MAGIC) - _MAGIC, t)


@triton.jit
def _floor(t):
    r = _rne(t)
    return tl.where(r > t, r - 1.0, r)


@triton.jit
def _copysign(q, v):
    """q (non-negative or NaN) with v's sign bit."""
    sign = v.to(tl.int32, bitcast=True) & _SIGN
    return (q.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True)


@triton.jit
def _element(v, uu, E: tl.constexpr, M: tl.constexpr, TOP: tl.constexpr,
             SR: tl.constexpr):
    """v rounded onto the element grid (RTN, or SR with uniforms uu), saturated at TOP."""
    a = tl.abs(v)
    if E == 0:  # int8: the integers
        if SR:
            lo = _floor(a)
            q = tl.where(uu < a - lo, lo + 1.0, lo)
        else:
            q = _rne(a)
    else:
        k = (a.to(tl.int32, bitcast=True) >> 23) - 127
        k = tl.minimum(tl.maximum(k, 2 - (1 << (E - 1))), (1 << (E - 1)))
        step = ((k + (127 - M)) << 23).to(tl.float32, bitcast=True)
        t = tl.div_rn(a, step)
        if SR:
            lo = _floor(t) * step
            q = tl.where(uu < tl.div_rn(a - lo, step), lo + step, lo)
        else:
            q = _rne(t) * step
    q = tl.where(q > TOP, TOP, q)  # NaN stays NaN
    return _copysign(q, v)


@triton.jit
def _nv_scale(amax, s, C: tl.constexpr):
    """The E4M3 block scale E4M3(amax / C * s) (RTN, saturated at 448)."""
    return _element(tl.div_rn(amax, C) * s, amax, 4, 3, 448.0, False)


@triton.jit
def _nv_candidate(xz, b, s, uu, SR: tl.constexpr):
    """(x_hat, v) of NVFP4 with block scales b; a dead block divides by inf (v = +-0) and
    gives x_hat = +0."""
    bs = tl.div_rn(b, s)
    dead = (b == 0.0) | (bs == 0.0)
    v = tl.div_rn(xz, tl.where(dead, _INF, bs)[:, None])
    q = _element(v, uu, 2, 1, 6.0, SR)
    return tl.where(dead[:, None], 0.0, tl.div_rn(q * b[:, None], s)), v


@triton.jit
def _block_quant_kernel(
    x_ptr, u_ptr, s_ptr, y_ptr, m_ptr,    # input, uniforms (SR), nvfp4 tensor scale, outputs
    n_blocks, n_cols, nb,                 # blocks in all, columns, blocks per row
    stride_x,                             # row stride of x (last dim contiguous)
    K: tl.constexpr,                      # block size (32 MX, 16 NVFP4)
    BLOCK_G: tl.constexpr,                # blocks per program
    NV: tl.constexpr,                     # NVFP4 (else MX)
    E: tl.constexpr, M: tl.constexpr,     # element e{E}m{M} (E = 0: int8)
    TOP: tl.constexpr, EDGE: tl.constexpr,  # element top level, trust edge
    EMAX: tl.constexpr,                   # MX: exponent of the element's largest normal
    FOUR_SIX: tl.constexpr,               # NVFP4 4/6
    HEAD: tl.constexpr,                   # MX headroom factor h (1.0: none)
    SR: tl.constexpr,                     # stochastic rounding with u
    BF16: tl.constexpr,                   # x_hat is bfloat16 (round explicitly)
):
    g = tl.program_id(0).to(tl.int64) * BLOCK_G + tl.arange(0, BLOCK_G)
    j = tl.arange(0, K)
    row = g // nb
    col = (g % nb)[:, None] * K + j[None, :]
    ok = (g < n_blocks)[:, None] & (col < n_cols)
    if BF16:  # bfloat16 as raw bits both ways: the interpreter's conversions lose subnormals
        xi = tl.load(x_ptr + row[:, None] * stride_x + col, mask=ok, other=0).to(tl.int32)
        x = (xi << 16).to(tl.float32, bitcast=True)
    else:
        x = tl.load(x_ptr + row[:, None] * stride_x + col, mask=ok, other=0.0).to(tl.float32)
    if SR:
        uu = tl.load(u_ptr + row[:, None] * n_cols + col, mask=ok, other=0.0)
    else:
        uu = x
    isnan = x != x
    if NV:
        finite = (~isnan) & (tl.abs(x) != _INF)
        xz = tl.where(finite, x, 0.0)
        amax = tl.max(tl.abs(xz), axis=1)
        s = tl.load(s_ptr)
        b6 = _nv_scale(amax, s, 6.0)
        if FOUR_SIX:  # choose on the RTN candidates, then (SR) round with the chosen scale
            b4 = _nv_scale(amax, s, 4.0)
            out, v = _nv_candidate(xz, b6, s, uu, False)
            out4, v4 = _nv_candidate(xz, b4, s, uu, False)
            d6 = out - xz
            d4 = out4 - xz
            e6 = tl.sum((d6 * d6).to(tl.float64), axis=1)
            use4 = tl.sum((d4 * d4).to(tl.float64), axis=1) < e6
            out = tl.where(use4[:, None], out4, out)
            v = tl.where(use4[:, None], v4, v)
            if SR:
                out, _ = _nv_candidate(xz, tl.where(use4, b4, b6), s, uu, True)
        else:
            out, v = _nv_candidate(xz, b6, s, uu, SR)
        out = tl.where(finite, out, x)
    else:
        amax = tl.max(tl.where(isnan, 0.0, tl.abs(x)), axis=1)
        anynan = tl.max(isnan.to(tl.int32), axis=1) > 0
        ex = (amax.to(tl.int32, bitcast=True) >> 23) - 127
        normal = (~anynan) & (amax != _INF) & (amax > 0.0)
        ex = tl.where(normal, ex, -1)
        shared = tl.minimum(tl.maximum(ex - EMAX, -127), 127)
        bits = tl.where(shared >= -126, (shared + 127) << 23, 1 << 22)  # 2^-127: subnormal
        scale = bits.to(tl.float32, bitcast=True)[:, None]
        v = tl.div_rn(x, scale)
        if E == 0:
            v = v * 64.0
        if HEAD != 1.0:
            v = v * HEAD
        q = _element(v, uu, E, M, TOP, SR)
        if HEAD != 1.0:
            q = tl.div_rn(q, HEAD)
        out = q * scale
        if E == 0:
            out = tl.div_rn(out, 64.0)
    mask = tl.abs(v) <= EDGE
    offs = row[:, None] * n_cols + col
    if BF16:
        bits = _round_bf16(out).to(tl.int32, bitcast=True) >> 16
        tl.store(y_ptr + offs, bits.to(tl.int16), mask=ok)
    else:
        tl.store(y_ptr + offs, out.to(y_ptr.dtype.element_ty), mask=ok)
    tl.store(m_ptr + offs, mask.to(tl.uint8), mask=ok)


def _launch(x: torch.Tensor, kind: str, element: str, four_six: bool,
            u: torch.Tensor | None, headroom: float) -> tuple[torch.Tensor, torch.Tensor]:
    e, m, _, top, edge = block_element(element)
    k = BLOCK_SIZES[kind]
    shape, n = x.shape, x.shape[-1]
    if x.numel() == 0:
        return x.clone(), torch.zeros(shape, dtype=torch.bool, device=x.device)
    x2 = x.reshape(-1, n)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    bf16 = x.dtype == torch.bfloat16
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    mk = torch.empty(x2.shape, dtype=torch.bool, device=x.device)
    nv = kind == "nvfp4"
    s = nvfp4_tensor_scale(x).reshape(1) if nv else y  # a pointer the MX kernel ignores
    u2 = u.reshape(-1, n).float().contiguous() if u is not None else y
    nb = triton.cdiv(n, k)
    n_blocks = x2.shape[0] * nb
    block_g = (1 << 16 if _interpreting() else 1 << 12) // k
    block_g = min(block_g, triton.next_power_of_2(n_blocks))
    emax = 0 if e == 0 else (1 << (e - 1))
    _block_quant_kernel[(triton.cdiv(n_blocks, block_g),)](
        x2.view(torch.int16) if bf16 else x2, u2, s, y.view(torch.int16) if bf16 else y,
        mk.view(torch.uint8), n_blocks, n, nb, x2.stride(0),
        K=k, BLOCK_G=block_g, NV=nv, E=e, M=m, TOP=top, EDGE=edge, EMAX=emax,
        FOUR_SIX=four_six, HEAD=headroom, SR=u is not None, BF16=bf16,
        num_warps=4, **_NO_FMA,
    )
    return y.reshape(shape), mk.reshape(shape)


@torch.library.custom_op("raysweep::block_quant", mutates_args=())
def _block_quant_op(x: torch.Tensor, kind: str, element: str, four_six: bool,
                    u: torch.Tensor | None, headroom: float) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch(x, kind, element, four_six, u, headroom)


@_block_quant_op.register_fake
def _(x, kind, element, four_six, u, headroom):
    return torch.empty_like(x), torch.empty(x.shape, dtype=torch.bool, device=x.device)


def block_quant_triton(x: torch.Tensor, kind: str, element: str, four_six: bool = False,
                       u: torch.Tensor | None = None, headroom: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of :func:`~raysweep.kernels.reference.block_quant_ref` (same arguments)."""
    check_block_args(x, kind, element, four_six, u, headroom)
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        x = x.float()
    return _block_quant_op(x, kind, element, four_six, u,
                           1.0 if headroom is None else float(headroom))
