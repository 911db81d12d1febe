"""Fused magnitude masks in Triton: per-row top-k and N:M.

Top-k by bisection on the bit pattern: for non-negative float32 values the
int32 bit pattern is monotone in the value, so the k-th largest ``|x|`` of a
row is the largest pattern ``t`` with ``count(bits(|x|) >= t) >= k``. Building
``t`` bit by bit from the top (31 rounds, each a compare-and-count over the
row held in registers) finds it exactly, with no sort. The mask keeps
``|x| >= t``: ties at the threshold are all kept, like
:func:`raysweep.kernels.reference.topk_mask_ref`.

N:M: each group of m consecutive entries is one row of a [groups, m] tile;
the rank of entry i is ``#{j: |x_j| > |x_i|} + #{j < i: |x_j| == |x_i|}`` (m
compares, m is small) and the mask keeps rank < n.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from raysweep.kernels.quant import _interpreting

_MAX_BLOCK_N = 16384


@triton.jit
def _topk_mask_kernel(
    x_ptr, m_ptr,                         # input (any float dtype), uint8 mask output
    n_rows, n_cols, k,                    # sizes; k = entries to keep per row
    stride_x, stride_m,                   # row strides (last dim contiguous)
    BLOCK_M: tl.constexpr,                # rows per program
    BLOCK_N: tl.constexpr,                # power of two >= n_cols
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    rows64 = rows.to(tl.int64)
    ok = (rows < n_rows)[:, None] & (cols[None, :] < n_cols)
    x = tl.load(x_ptr + rows64[:, None] * stride_x + cols[None, :], mask=ok, other=0.0)
    bits = tl.abs(x.to(tl.float32)).to(tl.int32, bitcast=True)
    bits = tl.where(ok, bits, -1)         # padding never counts
    thr = tl.zeros([BLOCK_M], dtype=tl.int32)
    for i in range(31):
        cand = thr | (1 << (30 - i))
        cnt = tl.sum((bits >= cand[:, None]).to(tl.int32), axis=1)
        thr = tl.where(cnt >= k, cand, thr)
    keep = bits >= thr[:, None]
    tl.store(m_ptr + rows64[:, None] * stride_m + cols[None, :], keep.to(tl.uint8), mask=ok)


@triton.jit
def _nm_mask_kernel(
    x_ptr, m_ptr,                         # contiguous input, uint8 mask output
    n_groups,                             # number of groups of M entries
    N: tl.constexpr, M: tl.constexpr,     # keep N of every M
    M_P2: tl.constexpr,                   # M rounded up to a power of two
    BLOCK_G: tl.constexpr,                # groups per program
):
    g = tl.program_id(0).to(tl.int64) * BLOCK_G + tl.arange(0, BLOCK_G)
    i = tl.arange(0, M_P2)
    ok = (g < n_groups)[:, None] & (i[None, :] < M)
    ptrs = g[:, None] * M + i[None, :]
    ax = tl.abs(tl.load(x_ptr + ptrs, mask=ok, other=0.0).to(tl.float32))
    rank = tl.zeros([BLOCK_G, M_P2], dtype=tl.int32)
    for j in tl.static_range(M):
        aj = tl.abs(tl.load(x_ptr + g * M + j, mask=g < n_groups, other=0.0).to(tl.float32))
        beats = (aj[:, None] > ax) | ((aj[:, None] == ax) & (j < i[None, :]))
        rank += beats.to(tl.int32)
    tl.store(m_ptr + ptrs, (rank < N).to(tl.uint8), mask=ok)


def topk_mask_triton(x: torch.Tensor, k: int) -> torch.Tensor:
    """Triton version of :func:`~raysweep.kernels.reference.topk_mask_ref`.

    The custom operator ``raysweep::topk_mask`` (a bool mask: no gradient).
    """
    return _topk_mask_op(x, k)


@torch.library.custom_op("raysweep::topk_mask", mutates_args=())
def _topk_mask_op(x: torch.Tensor, k: int) -> torch.Tensor:
    shape = x.shape
    n_cols = shape[-1]
    if k <= 0 or k >= n_cols or n_cols > _MAX_BLOCK_N or x.numel() == 0:
        from raysweep.kernels.reference import topk_mask_ref

        return topk_mask_ref(x, k)
    x2 = x.reshape(-1, n_cols)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = torch.empty(x2.shape, dtype=torch.bool, device=x.device)
    block_n = triton.next_power_of_2(n_cols)
    budget = 1 << 16 if _interpreting() else 1 << 12
    block_m = max(1, min(64, budget // block_n))
    grid = (triton.cdiv(x2.shape[0], block_m),)
    _topk_mask_kernel[grid](x2, m.view(torch.uint8), x2.shape[0], n_cols, k,
                            x2.stride(0), m.stride(0), BLOCK_M=block_m, BLOCK_N=block_n,
                            num_warps=8 if block_m * block_n > 2048 else 4)
    return m.reshape(shape)


def nm_mask_triton(x: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Triton version of :func:`~raysweep.kernels.reference.nm_mask_ref`.

    The custom operator ``raysweep::nm_mask`` (a bool mask: no gradient).
    """
    if x.shape[-1] % m:
        raise ValueError(f"last dim {x.shape[-1]} is not a multiple of m={m}")
    return _nm_mask_op(x, n, m)


@torch.library.custom_op("raysweep::nm_mask", mutates_args=())
def _nm_mask_op(x: torch.Tensor, n: int, m: int) -> torch.Tensor:
    xc = x.contiguous()
    out = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    n_groups = xc.numel() // m
    if n_groups:
        m_p2 = triton.next_power_of_2(m)
        budget = 1 << 16 if _interpreting() else 1 << 12
        block_g = max(1, budget // m_p2)
        _nm_mask_kernel[(triton.cdiv(n_groups, block_g),)](
            xc, out.view(torch.uint8), n_groups, N=n, M=m, M_P2=m_p2, BLOCK_G=block_g)
    return out


@_topk_mask_op.register_fake
def _topk_mask_fake(x, k):
    return x.new_empty(x.shape, dtype=torch.bool)


@_nm_mask_op.register_fake
def _nm_mask_fake(x, n, m):
    return x.new_empty(x.shape, dtype=torch.bool)
