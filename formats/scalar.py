"""Scalar grids: ``int{b}``, ``intz{b}``, ``fp4``/``fp8``/``e{E}m{M}``, ``lloyd{b}``, ``ternary``.

``intz{b}`` is the hardware int grid with a zero level (2^b - 1 levels ``k d``,
``|k| <= 2^(b-1) - 1``; :meth:`ScalarGrid._project_zero_int`). ``@sr`` rounds
stochastically (:mod:`.rounding`'s contract) on the value the RTN path rounds;
scales, clamps and the trust mask's clip rule stay those of RTN.

Every scalar grid is a sorted set of unit levels ``L`` and a scale per row (or
per group of G elements with ``@g{G}``)::

    RMS scaling (default):  s = c* RMS(row),    x_hat = s Q_L(x / s)
    @absmax:                s = max|row| / max(L)  (the top level lands on max|row|)

with ``c*`` the MSE-optimal scale of L for N(0, 1) (Panferov et al. 2025,
"Unified Scaling Laws for Compressed Representations", GMSE reference values
section), so GMSE is exact for RMS scaling without groups and Monte Carlo
otherwise (the group or row maxima and RMS estimates depend on the group size).

Rounding (a Triton kernel elsewhere reproduces it bit for bit):

- ``int{b}`` uses the mid-rise formula of :mod:`raysweep.kernels.reference`
  (computed by :mod:`.fastint`, identical bit for bit)
  (``r = round(clamp(x/s, -a, a)/step + 1/2)``, round half to even, ``x_hat =
  (r step - step/2) s``, float64 row sum of squares) with ``a = alpha*(b)``.
- other grids pick the nearest level by ``torch.bucketize`` on the level
  midpoints; a value exactly on a midpoint goes to the lower level.
- an all-zero row (or group) projects to zeros with a full trust mask.

Trust mask (QuEST, the paper's estimators section): ``|x_hat - x| <= (step/2) s``
for int grids, i.e. clipped values more than half a step beyond the grid get
no gradient; ``int1@h`` uses a 1.30x wider radius (estimators section: "1-bit
uses a wider trust region (scale 1.30 with Hadamard)"); plain ``int1`` keeps
half a step. The inner grid of an ``@h`` spec is built with ``rotated=True``
(its mask lives in the rotated domain; the layer takes it from the plan's
``Rotation.inner``).
Other grids: ``|x| <= (top + gap/2) s`` with gap the distance between the two
largest levels: the same rule (inside the grid the error is at most half the
local gap).
"""

from __future__ import annotations

import math

import numpy as np

from .base import TINY, IntGrid, ProjectionPlan, Representation, register, spec_error
from .gaussian import GMSE, grid_mse, lloyd_levels, optimal_scale, uniform_levels, zero_levels
from .rounding import (
    fp_levels,
    stochastic_round_float,
    stochastic_round_int,
    stochastic_round_levels,
    uniforms,
)

INT1_TRUST_WIDEN = 1.30


class ScalarGrid(Representation):
    """A scalar grid with per-row (or per-group) RMS or absmax scaling."""

    def __init__(self, spec: str, family: str, levels: np.ndarray, bits: float,
                 absmax: bool = False, group: int | None = None, int_bits: int | None = None,
                 rotated: bool = False, sr: bool = False, zero_bits: int | None = None,
                 float_code: tuple[int, int, bool] | None = None):
        self.spec, self.family = spec, family
        self.levels = np.asarray(levels, dtype=np.float64)
        self.absmax, self.group, self.int_bits = absmax, group, int_bits
        self.stochastic, self.zero_bits, self.float_code = sr, zero_bits, float_code
        self.row_multiple = group or 1
        self.rotated = rotated
        self.bits_per_element = float(bits) + (16.0 / group if group else 0.0)
        top = float(self.levels[-1])
        # MSE-optimal scale of the unit grid for N(0,1), searched around "top at 0.5..12 sigma"
        self.scale, self._exact = optimal_scale(self.levels, 0.5 / top, 12.0 / top)
        gap = top - float(self.levels[-2]) if len(self.levels) > 1 else top
        self.trust_edge = top + gap / 2.0          # in units of the scale
        if int_bits is not None:
            self.clip_mult = self.scale          # alpha*(b): top level in units of RMS
            if not absmax and not group and not sr:  # the kernel grid rounds to nearest
                self.grid = ("int", int_bits, self.clip_mult)

    def _plan(self) -> ProjectionPlan:
        """Per-row RMS int grids name their kernel grid; the rest project by themselves."""
        g = self.grid
        return ProjectionPlan(grid=None if g is None else IntGrid(g[1], g[2], kind=g[0]))

    # -- projection
    def _grouped(self, x):
        """View x as rows of G (the group size) or as its own rows."""
        if not self.group:
            return x
        n = x.shape[-1]
        if n % self.group:
            raise spec_error(self.spec, f"last dim {n} is not a multiple of the group size "
                                        f"{self.group}; use a G that divides it")
        return x.reshape(*x.shape[:-1], n // self.group, self.group)

    def _project(self, x, r=None):
        if self.stochastic and r is None:
            r = uniforms(x)                      # torch's global RNG
        xg = self._grouped(x)
        rg = None if r is None else r.reshape(xg.shape)
        if self.int_bits is not None:
            out, mask = self._project_int(xg, rg)
        elif self.zero_bits is not None:
            out, mask = self._project_zero_int(xg, rg)
        else:
            out, mask = self._project_levels(xg, rg)
        return out.reshape(x.shape), mask.reshape(x.shape)

    def _trust_radius(self, step: float) -> float:
        wide = self.int_bits == 1 and self.rotated
        return step / 2 * (INT1_TRUST_WIDEN if wide else 1.0)

    def _project_int(self, x, r=None):
        import torch
        from raysweep.kernels.reference import f32, grid_constants

        from .fastint import int_rms_project

        b = self.int_bits
        if r is not None:
            return self._project_int_sr(x, r)
        if not self.absmax:  # the numbers of kernels.reference.int_quant_ref, bit for bit
            a, step, _ = grid_constants(b, self.clip_mult)
            return int_rms_project(x, b, self.clip_mult, f32(self._trust_radius(step)))
        # absmax: s = max|row|, the grid spans [-1, 1] in units of s (nothing is clipped)
        _, step, _ = grid_constants(b, 1.0)
        s0 = x.abs().amax(-1, keepdim=True)
        s = s0.clamp_min(TINY)
        t = (x / s).clamp_(-1.0, 1.0)
        r = t.div_(torch.full((), step)).add_(0.5).round_()
        xq = r.mul_(step).sub_(step / 2).mul_(s).masked_fill_(s0 == 0, 0.0)
        mask = (xq - x).abs() <= self._trust_radius(step) * s
        return xq, mask

    def _project_int_sr(self, x, r):
        """Mid-rise int grid, stochastic rounding of ``w = t / step + 1/2`` (formats.rounding).

        The scale and ``t = clamp(x / s, -a, a)`` are the RTN path's (``int_quant_ref``;
        ``@absmax``: ``s = max|row|``, ``a = 1``); ``r = SR(w)``, ``x_hat = (r step - step/2) s``.
        Trust mask (the RTN path's clip rule): ``|x / s| <= a + radius`` (radius: half a
        step; int1@h 1.30x).
        """
        from raysweep.kernels.reference import _scalar, f32, grid_constants, rms_scale

        if self.absmax:
            a, step, _ = grid_constants(self.int_bits, 1.0)
            s0 = x.abs().amax(-1, keepdim=True)
        else:
            a, step, _ = grid_constants(self.int_bits, self.clip_mult)
            s0 = rms_scale(x)
        s = s0.clamp_min(TINY)
        v = x / s
        w = v.clamp(-a, a).div_(_scalar(step, v)).add_(0.5)
        q, _ = stochastic_round_int(w, r)
        xq = q.mul_(step).sub_(step / 2).mul_(s).masked_fill_(s0 == 0, 0.0)
        mask = v.abs_() <= f32(a + self._trust_radius(step))
        return xq, mask

    def _project_zero_int(self, x, r=None):
        """``intz{b}``: ``q = clamp(round(x / d), -Q, Q)``, ``Q = 2^(b-1) - 1``, ``x_hat = q d``.

        ``d`` = the step: ``c* RMS(row) / Q`` (c* the MSE-optimal top level), with
        ``@absmax`` ``max|row| / Q``. round: half to even (``@sr``: formats.rounding's
        integer rule, saturated at Q). Trust mask: ``|x / d| <= Q + 1/2``.
        """
        top = float(2 ** (self.zero_bits - 1) - 1)
        if self.absmax:
            s0 = x.abs().amax(-1, keepdim=True) / top
        else:
            s0 = x.pow(2).mean(-1, keepdim=True).sqrt_().mul_(self.scale / top)
        s = s0.clamp_min(TINY)
        w = x / s
        if r is None:
            q = w.round().clamp_(-top, top)
        else:
            q, _ = stochastic_round_int(w, r, top)
        xq = q.mul_(s).masked_fill_(s0 == 0, 0.0)
        mask = w.abs() <= top + 0.5
        return xq, mask

    def _project_levels(self, x, r=None):
        import torch

        lv = torch.as_tensor(self.levels, dtype=torch.float32, device=x.device)
        mids = (lv[1:] + lv[:-1]) * 0.5
        if self.absmax:
            s0 = x.abs().amax(-1, keepdim=True) / float(self.levels[-1])
        else:
            s0 = x.pow(2).mean(-1, keepdim=True).sqrt_().mul_(self.scale)
        s = s0.clamp_min(TINY)
        u = x / s
        if r is None:
            q = lv[torch.bucketize(u, mids)]
        elif self.float_code is not None:
            q, _ = stochastic_round_float(u, *self.float_code, r)
        else:
            q, _ = stochastic_round_levels(u, lv[lv >= 0], r)
        xq = q.mul_(s).masked_fill_(s0 == 0, 0.0)
        mask = u.abs() <= self.trust_edge
        return xq, mask

    # -- Gaussian MSE
    def _gmse(self) -> GMSE:
        if not self.absmax and not self.group and not self.stochastic:
            return GMSE(float(self._exact), 0.0, "exact")
        return super()._gmse()


# ----------------------------------------------------------------------------- forms


def _bits(m, name: str, lo: int, hi: int, part: str) -> int:
    b = int(m.group(name))
    if not lo <= b <= hi:
        raise spec_error(part, f"{name}={b} out of range {lo}..{hi}")
    return b


@register("int", r"int(?P<b>\d+)", "int{b} (b=1..8)")
def _int(m, opts):
    b = _bits(m, "b", 1, 8, m.string)
    return ScalarGrid(opts["spec"], "int", uniform_levels(b), b, opts["absmax"], opts["group"],
                      int_bits=b, rotated=opts["h"], sr=opts["sr"])


@register("intz", r"intz(?P<b>\d+)", "intz{b} (b=2..8, symmetric with a zero level)")
def _intz(m, opts):
    b = _bits(m, "b", 2, 8, m.string)
    return ScalarGrid(opts["spec"], "int", zero_levels(b), b, opts["absmax"], opts["group"],
                      sr=opts["sr"], zero_bits=b)


@register("fp", r"fp(?P<b>\d+)", "fp4 (e2m1), fp8 (e4m3)")
def _fp(m, opts):
    b = int(m.group("b"))
    if b not in (4, 8):
        raise spec_error(m.string, f"fp{b} unknown; fp4 (e2m1) and fp8 (e4m3) exist, "
                                   "other floats are e{E}m{M}")
    code = (2, 1, False) if b == 4 else (4, 3, True)
    return ScalarGrid(opts["spec"], "fp", fp_levels(*code), b, opts["absmax"], opts["group"],
                      sr=opts["sr"], float_code=code)


@register("float", r"e(?P<e>\d+)m(?P<m>\d+)", "e{E}m{M} (E=1..5, M=0..6, 1+E+M<=8)")
def _float(m, opts):
    e = _bits(m, "e", 1, 5, m.string)
    mm = _bits(m, "m", 0, 6, m.string)
    if 1 + e + mm > 8:
        raise spec_error(m.string, f"1+E+M = {1 + e + mm} bits exceeds 8")
    code = (e, mm, (e, mm) == (4, 3))
    return ScalarGrid(opts["spec"], "fp", fp_levels(*code), 1 + e + mm, opts["absmax"],
                      opts["group"], sr=opts["sr"], float_code=code)


@register("lloyd", r"lloyd(?P<b>\d+)", "lloyd{b} (b=1..8)")
def _lloyd(m, opts):
    b = _bits(m, "b", 1, 8, m.string)
    return ScalarGrid(opts["spec"], "int", lloyd_levels(b), b, opts["absmax"], opts["group"],
                      sr=opts["sr"])


@register("ternary", r"ternary", "ternary")
def _ternary(m, opts):
    return ScalarGrid(opts["spec"], "int", np.array([-1.0, 0.0, 1.0]), math.log2(3.0),
                      opts["absmax"], opts["group"], sr=opts["sr"])


__all__ = ["ScalarGrid", "fp_levels", "grid_mse"]
