"""Fused per-row RMS int-grid quantization (QuEST) in Triton, and its masked backward.

One program handles ``BLOCK_M`` rows. When a row fits in one block
(``n <= BLOCK_N``) the row is read once: sum of squares (float64 accumulator),
scale, clamp, round, dequantize and the trust mask happen in registers, and
x_hat (input dtype) plus a uint8 mask are written: 2 bytes in, 3 bytes out per
bf16 element. Longer rows take two passes (sum, then quantize).

The numbers equal :func:`raysweep.kernels.reference.int_quant_ref` bit for bit;
see that module for the operation order. Rounding half to even uses the
float32 "magic number" ``(u + 1.5 * 2^23) - 1.5 * 2^23``, exact for
``|u| < 2^22`` (here ``|u| <= 2^(b-1) + 1/2``), because
``libdevice.rint`` does not run under the CPU interpreter.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl
from raysweep.kernels.reference import f32, grid_constants

_MAGIC = tl.constexpr(12582912.0)  # 1.5 * 2**23: add and subtract = round half to even
_MAX_BLOCK_N = 8192


@triton.jit
def _quant_tile(x, s0, a, step, half_trust):
    """Quantize a float32 tile with per-row scales s0; return (xq, trust mask, level r)."""
    s = tl.maximum(s0, 1.1754943508222875e-38)
    t = tl.div_rn(x, s)
    t = tl.minimum(tl.maximum(t, -a), a)
    u = tl.div_rn(t, step) + 0.5
    r = (u + _MAGIC) - _MAGIC
    xq = tl.where(s0 > 0, (r * step - step * 0.5) * s, 0.0)
    mask = tl.abs(xq - x) <= half_trust * s
    return xq, mask, r


@triton.jit
def _round_bf16(v):
    """Round float32 to the nearest bfloat16 (ties to even), still as float32.

    Done with integer ops because the CPU interpreter's float32 -> bfloat16 cast
    truncates; after this the cast is exact on every backend. (NaN/inf inputs are
    not special-cased: the quantizer's outputs are finite.)
    """
    b = v.to(tl.int32, bitcast=True)
    b = (b + (0x7FFF + ((b >> 16) & 1))) & -65536
    return b.to(tl.float32, bitcast=True)


@triton.jit
def _store_out(ptr, v, ok, BF16: tl.constexpr):
    if BF16:
        v = _round_bf16(v)
    tl.store(ptr, v.to(ptr.dtype.element_ty), mask=ok)


@triton.jit
def _store_tile(y_ptrs, m_ptrs, c_ptrs, xq, mask, r, ok, BF16: tl.constexpr,
                CODES: tl.constexpr):
    _store_out(y_ptrs, xq, ok, BF16)
    tl.store(m_ptrs, mask.to(tl.uint8), mask=ok)
    if CODES:  # half-integer grid codes r - 1/2, exact in float8 e4m3 for b <= 4
        tl.store(c_ptrs, (r - 0.5).to(c_ptrs.dtype.element_ty), mask=ok)


@triton.jit
def _int_quant_fwd(
    x_ptr, y_ptr, m_ptr,                  # input, x_hat output, uint8 mask output
    c_ptr, sc_ptr,                        # codes output (fp8), row scale output (fp32), if CODES
    n_rows, n_cols,                       # sizes
    stride_x, stride_y, stride_m, stride_c,  # row strides (last dim contiguous)
    n_f, a, step, half_trust,             # n_cols as float32, grid constants (float32)
    BLOCK_M: tl.constexpr,                # rows per program
    BLOCK_N: tl.constexpr,                # columns per tile (power of two)
    SINGLE: tl.constexpr,                 # whole row fits in one tile
    BF16: tl.constexpr,                   # x_hat is bfloat16 (round explicitly)
    CODES: tl.constexpr,                  # also write codes and row scales (FP8 GEMM)
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    r64 = rows.to(tl.int64)[:, None]
    if SINGLE:
        ok = row_ok[:, None] & (cols[None, :] < n_cols)
        x = tl.load(x_ptr + r64 * stride_x + cols[None, :], mask=ok, other=0.0)
        x = x.to(tl.float32)
        xd = x.to(tl.float64)
        ss = tl.sum(xd * xd, axis=1).to(tl.float32)
        s = tl.sqrt_rn(tl.div_rn(ss, n_f))
        xq, mask, r = _quant_tile(x, s[:, None], a, step, half_trust)
        _store_tile(y_ptr + r64 * stride_y + cols[None, :], m_ptr + r64 * stride_m + cols[None, :],
                    c_ptr + r64 * stride_c + cols[None, :], xq, mask, r, ok, BF16, CODES)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float64)
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            ok = row_ok[:, None] & (c[None, :] < n_cols)
            x = tl.load(x_ptr + r64 * stride_x + c[None, :], mask=ok, other=0.0)
            xd = x.to(tl.float32).to(tl.float64)
            acc += xd * xd
        ss = tl.sum(acc, axis=1).to(tl.float32)
        s = tl.sqrt_rn(tl.div_rn(ss, n_f))
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            ok = row_ok[:, None] & (c[None, :] < n_cols)
            x = tl.load(x_ptr + r64 * stride_x + c[None, :], mask=ok, other=0.0)
            xq, mask, r = _quant_tile(x.to(tl.float32), s[:, None], a, step, half_trust)
            _store_tile(y_ptr + r64 * stride_y + c[None, :], m_ptr + r64 * stride_m + c[None, :],
                        c_ptr + r64 * stride_c + c[None, :], xq, mask, r, ok, BF16, CODES)
    if CODES:
        tl.store(sc_ptr + rows, s * step, mask=row_ok)


@triton.jit
def _masked_grad(
    g_ptr, m_ptr, o_ptr,                  # gradient in, uint8 mask, gradient out
    n,                                    # number of elements (all contiguous)
    BLOCK: tl.constexpr,                  # elements per program
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    g = tl.load(g_ptr + offs, mask=ok, other=0.0)
    m = tl.load(m_ptr + offs, mask=ok, other=0)
    tl.store(o_ptr + offs, tl.where(m != 0, g, tl.zeros_like(g)), mask=ok)


def _tiles(n_cols: int, interpret: bool) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps): ~4k-8k elements per program on GPU, bigger when
    interpreted (each program instance costs milliseconds there)."""
    block_n = min(triton.next_power_of_2(max(n_cols, 1)), _MAX_BLOCK_N)
    budget = 1 << 16 if interpret else 1 << 12
    block_m = max(1, min(64, budget // block_n))
    warps = 4 if block_m * block_n <= 2048 else 8
    return block_m, block_n, warps


# No multiply-add contraction: the reference rounds every product and sum separately.
_NO_FMA = {} if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") else {
    "enable_fp_fusion": False}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def int_quant_triton(x: torch.Tensor, bits: int, clip_mult: float,
                     trust: float | None = None, out_dtype: torch.dtype | None = None,
                     codes: bool = False):
    """Triton version of :func:`~raysweep.kernels.reference.int_quant_ref`.

    Returns (x_hat, mask), or with ``codes=True`` (b <= 4) also the float8 e4m3
    codes ``r - 1/2`` and the float32 row scales ``step * s`` of shape
    (rows, 1), so that ``x_hat = codes * scale`` up to the final rounding.
    One call of the custom operator ``raysweep::int_quant`` (torch.compile and
    CUDA graphs take it whole; its gradient is the trust-masked straight-through
    estimator, ``grad_x = mask * grad_x_hat``).
    """
    y, m, c, sc = _int_quant_op(x, bits, float(clip_mult), None if trust is None else float(trust),
                                out_dtype or x.dtype, codes)
    return (y, m, c, sc) if codes else (y, m)


@torch.library.custom_op("raysweep::int_quant", mutates_args=())
def _int_quant_op(x: torch.Tensor, bits: int, clip_mult: float, trust: float | None,
                  out_dtype: torch.dtype, codes: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_hat, mask, codes, row scales); the last two are empty unless ``codes``."""
    a, step, _ = grid_constants(bits, clip_mult)
    half_trust = step / 2 if trust is None else f32(trust)
    shape = x.shape
    n_cols = shape[-1]
    x2 = x.reshape(-1, n_cols)
    if x2.numel() and x2.stride(-1) != 1:
        x2 = x2.contiguous()
    n_rows = x2.shape[0]
    y = torch.empty(x2.shape, dtype=out_dtype, device=x.device)
    m = torch.empty(x2.shape, dtype=torch.bool, device=x.device)
    c = torch.empty(x2.shape if codes else (0,), dtype=torch.float8_e4m3fn, device=x.device)
    sc = torch.empty((n_rows, 1) if codes else (0,), dtype=torch.float32, device=x.device)
    if x2.numel():
        bm, bn, warps = _tiles(n_cols, _interpreting())
        grid = (triton.cdiv(n_rows, bm),)
        _int_quant_fwd[grid](
            x2, y, m.view(torch.uint8), c if codes else m.view(torch.uint8), sc,
            n_rows, n_cols, x2.stride(0), y.stride(0), m.stride(0), c.stride(0) if codes else 0,
            float(n_cols), a, step, half_trust,
            BLOCK_M=bm, BLOCK_N=bn, SINGLE=n_cols <= bn, BF16=out_dtype == torch.bfloat16,
            CODES=codes, num_warps=warps, **_NO_FMA,
        )
    return y.reshape(shape), m.reshape(shape), c, sc


@_int_quant_op.register_fake
def _int_quant_fake(x, bits, clip_mult, trust, out_dtype, codes):
    rows = math.prod(x.shape[:-1])
    flat = (rows, x.shape[-1])
    return (x.new_empty(x.shape, dtype=out_dtype), x.new_empty(x.shape, dtype=torch.bool),
            x.new_empty(flat if codes else (0,), dtype=torch.float8_e4m3fn),
            x.new_empty((rows, 1) if codes else (0,), dtype=torch.float32))


def _int_quant_setup(ctx, inputs, output):
    ctx.mark_non_differentiable(output[1], output[2], output[3])  # mask, codes, scales
    ctx.save_for_backward(output[1])


def _int_quant_backward(ctx, g_y, g_m, g_c, g_sc):
    (mask,) = ctx.saved_tensors
    return masked_grad_triton(g_y, mask), None, None, None, None, None


torch.library.register_autograd("raysweep::int_quant", _int_quant_backward,
                                setup_context=_int_quant_setup)


def masked_grad_triton(g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Triton version of :func:`~raysweep.kernels.reference.masked_grad_ref`.

    The custom operator ``raysweep::masked_grad`` (linear in g: its gradient is
    the same masking of the incoming gradient).
    """
    return _masked_grad_op(g, mask)


@torch.library.custom_op("raysweep::masked_grad", mutates_args=())
def _masked_grad_op(g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    g_c = g.contiguous()
    m_c = mask.contiguous()
    out = torch.empty_like(g_c)
    n = g_c.numel()
    if n:
        block = 1 << 16 if _interpreting() else 4096
        _masked_grad[(triton.cdiv(n, block),)](g_c, m_c.view(torch.uint8), out, n,
                                               BLOCK=block, num_warps=8)
    return out.view(g.shape)


@_masked_grad_op.register_fake
def _masked_grad_fake(g, mask):
    return g.new_empty(g.shape)


def _masked_grad_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _masked_grad_backward(ctx, grad):
    (mask,) = ctx.saved_tensors
    return _masked_grad_op(grad, mask), None


torch.library.register_autograd("raysweep::masked_grad", _masked_grad_backward,
                                setup_context=_masked_grad_setup)
