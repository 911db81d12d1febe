"""The ``@o{P}`` option: keep the largest P% magnitudes of each row exact (dense-and-sparse).

``x_hat = where(keep, x, Q(where(keep, 0, x)))``: ``keep`` marks the ``k = round(P n /
100)`` largest ``|x|`` of each row of n (Python's round, half to even; every entry tied
with the k-th largest is kept, the rule of ``kernels.reference.topk_mask_ref``); the
kept values are returned exactly (stored as bf16 values: exact for bf16 inputs, the
math is float32), and the rest is projected by the inner representation Q with the
kept entries zeroed, so outliers no longer set its scales. Rows with ``k = 0`` (short
rows, small P) keep nothing. Non-finite values are returned as they are (kept, on top
of the k largest finite ones), so they spoil nothing else. ``@o{P}`` wraps everything
else of the part (``int4@h@o1`` = keep 1%, rotate the rest, quantize, rotate back).

Bits per element: the inner's plus ``P/100 * (16 + 16)``: every element keeps its
dense code (a dense GEMM operand; the kept slots hold a zero code) and each kept value
adds a 16-bit bf16 value and a 16-bit column index (rows up to 65536 long).
``int4@o1`` = 4 + 0.32 = 4.32 bits.

Trust mask: kept entries are trusted (exact), the rest get the inner mask (None from
the inner: everywhere). GMSE by Monte Carlo. The plan is the default one (the layer
calls ``project`` and uses its mask).
"""

from __future__ import annotations

from .base import ProjectionPlan, Representation

INDEX_BITS = 16  # column index per kept value
VALUE_BITS = 16  # bf16 value per kept value


class KeptOutliers(Representation):
    """``inner@o{P}``: the P% largest magnitudes of each row exact, the rest by ``inner``."""

    def __init__(self, inner: Representation, percent: float):
        self.inner = inner
        self.percent = float(percent)
        self.spec = f"{inner.spec}@o{self.percent:g}"
        self.family = inner.family
        self.row_multiple = inner.row_multiple
        self.stochastic = inner.stochastic
        self.cache_tag = inner.cache_tag
        self.bits_per_element = (inner.bits_per_element
                                 + self.percent / 100.0 * (INDEX_BITS + VALUE_BITS))

    def _plan(self) -> ProjectionPlan:
        return ProjectionPlan()

    def keep_count(self, n: int) -> int:
        """Entries kept exact per row of n."""
        return round(self.percent * n / 100.0)

    def _project(self, x, r=None):
        import torch
        from raysweep.kernels.reference import topk_mask_ref

        finite = torch.isfinite(x)   # non-finite values are returned as is, on top of the k
        keep = topk_mask_ref(torch.where(finite, x, 0.0), self.keep_count(x.shape[-1]))
        keep |= ~finite
        rest = x.masked_fill(keep, 0.0)
        if r is None:
            q, mask = self.inner.project(rest)
        else:
            q, mask = self.inner.project_with_uniforms(rest, r)
        out = torch.where(keep, x, q)
        if mask is not None:
            mask = mask | keep
        return out, mask
