"""Sparsity: ``sparse{P}`` (unstructured magnitude pruning) and ``{n}:{m}`` (N:M).

``sparse{P}`` zeroes the P percent smallest |x| of each row: it keeps
``k = n - round(P n / 100)`` entries (Python's round, half to even), namely
every entry with ``|x| >= `` the k-th largest ``|x|`` of its row, so ties at the
threshold are all kept (the rule of ``kernels.reference.topk_mask_ref``). Rows
shorter than ``TINY_ROW`` are pruned per tensor (one threshold over all
entries), since a per-row fraction of 4 entries is too coarse.
GMSE is exact in the large-row limit: ``s - 2 t phi(t)``, ``t = Phi^-1((1+s)/2)``.

``{n}:{m}`` keeps the n largest |x| of every m consecutive entries (ties to the
earlier index, ``kernels.reference.nm_mask_ref``); the last dim must be a
multiple of m. GMSE by Monte Carlo.

The trust mask of both is the keep mask (backward = forward mask).

Bits per element (standalone, survivors stored in bf16): a 1-bit bitmap plus
``16 (1 - s)`` for unstructured; ``log2(C(m, n)) / m`` index bits plus
``16 n / m`` for N:M. In a composition only the mask cost is counted here and
the survivors are charged at the next quantizer's bits (see compose).
"""

from __future__ import annotations

import math

from .base import KeepMask, ProjectionPlan, Representation, register, spec_error
from .gaussian import GMSE, sparse_gmse

TINY_ROW = 16


class Sparse(Representation):
    """Unstructured magnitude pruning of a fraction ``sparsity`` per row."""

    family = "sparse"

    def __init__(self, spec: str, percent: float):
        self.spec = spec
        self.sparsity = percent / 100.0
        self.mask_bits = 1.0
        self.keep_fraction = 1.0 - self.sparsity
        self.bits_per_element = self.mask_bits + 16.0 * self.keep_fraction

    def keep_count(self, n: int) -> int:
        return n - round(self.sparsity * n)

    def row_keep_count(self, n: int) -> int | None:
        """Entries kept per row at row length n; None for rows pruned per tensor."""
        return self.keep_count(n) if n >= TINY_ROW else None

    def _plan(self) -> ProjectionPlan:
        return ProjectionPlan(mask=KeepMask("topk", keep_count=self.row_keep_count))

    def _project(self, x):
        from raysweep.kernels.reference import topk_mask_ref

        n = x.shape[-1]
        if n < TINY_ROW:  # per tensor
            flat = x.reshape(1, -1)
            keep = topk_mask_ref(flat, self.keep_count(flat.shape[-1])).reshape(x.shape)
        else:
            keep = topk_mask_ref(x, self.keep_count(n))
        return x * keep, keep

    def _gmse(self) -> GMSE:
        return GMSE(sparse_gmse(self.sparsity), 0.0, "exact")


class NM(Representation):
    """N:M structured sparsity along the last dim."""

    family = "sparse"

    def __init__(self, spec: str, n: int, m: int):
        self.spec = spec
        self.nm = (n, m)
        self.row_multiple = m
        self.sparsity = 1.0 - n / m
        self.keep_fraction = n / m
        self.mask_bits = math.log2(math.comb(m, n)) / m
        self.bits_per_element = self.mask_bits + 16.0 * self.keep_fraction

    def _plan(self) -> ProjectionPlan:
        return ProjectionPlan(mask=KeepMask("nm", nm=self.nm))

    def _project(self, x):
        from raysweep.kernels.reference import nm_mask_ref

        n, m = self.nm
        if x.shape[-1] % m:
            raise spec_error(self.spec, f"last dim {x.shape[-1]} is not a multiple of m={m}")
        keep = nm_mask_ref(x, n, m)
        return x * keep, keep


@register("sparse", r"sparse(?P<p>\d+(\.\d+)?)", "sparse{P} (0<=P<100, percent zeroed)")
def _sparse(mt, opts):
    p = float(mt.group("p"))
    if not 0.0 <= p < 100.0:
        raise spec_error(mt.string, f"P={p:g} out of range 0 <= P < 100")
    return Sparse(f"sparse{p:g}", p)


@register("nm", r"(?P<n>\d+):(?P<m>\d+)", "{n}:{m} (1<=n<m<=64, e.g. 2:4)")
def _nm(mt, opts):
    n, m = int(mt.group("n")), int(mt.group("m"))
    if not 1 <= n < m <= 64:
        raise spec_error(mt.string, f"N:M needs 1 <= n < m <= 64, got {n}:{m}")
    return NM(f"{n}:{m}", n, m)
