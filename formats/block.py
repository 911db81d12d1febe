"""Block-scaled formats: OCP Microscaling (``mxfp4``, ``mxfp6``, ``mxfp6e3m2``, ``mxfp8``,
``mxint8``) and NVIDIA's ``nvfp4`` (with the ``@46`` and ``@2d`` variants).

MX (OCP Microscaling Formats v1.0): blocks of 32 consecutive values along the
last dim share an E8M0 scale ``X = 2^(floor(log2 amax) - emax_elem)``
(``amax`` = max |x| of the block, ``emax_elem`` = exponent of the element
format's largest normal: 2 for E2M1 and E2M3, 4 for E3M2, 8 for E4M3; the
shared exponent is clamped to E8M0's -127..127). Each ``x / X`` is rounded to
the nearest element value, ties to even (the code with an even mantissa),
and saturated at the element format's largest magnitude; ``x_hat = q X``.
``mxint8``: ``q = clamp(round(64 x / X), -127, 127)`` (round half to even),
``X = 2^floor(log2 amax)``, ``x_hat = q X / 64``. Bits: element bits + 8/32.
An all-zero block stays zero.

NVFP4: a per-tensor float32 scale ``s = 448 * 6 / amax(tensor)``; blocks of 16
along the last dim get ``b = E4M3(amax(block) / 6 * s)`` (nearest E4M3 value,
ties to even, saturated at 448); elements ``q = E2M1(x / (b / s))`` (nearest,
ties to even, saturated at 6); ``x_hat = q * b / s``. Bits 4 + 8/16 = 4.5 (the
one 32-bit tensor scale is not counted). ``@46`` (Four Over Six): per block,
also try ``b4 = E4M3(amax(block) / 4 * s)`` and keep whichever of the two
candidates has the lower squared error (ties keep 6). ``@2d``: one scale per
16 x 16 tile over the last two dims (rows padded with zeros to a multiple of
16; a 1-D input is one row), bits 4 + 8/256. Amaxes ignore non-finite values
and a non-finite value is returned as is, so it spoils nothing else; a block
whose E4M3 scale is 0 (or an all-zero tensor) projects to zeros.

Trust mask: the rule of the other scalar grids, ``|u| <= top + gap/2`` with u
the scaled element (E2M1: 7, E2M3: 7.75, E3M2: 30, E4M3: 464, int8: 127.5),
i.e. saturated values get no gradient. GMSE by Monte Carlo.
"""

from __future__ import annotations

import functools

from .base import ProjectionPlan, Representation, register
from .scalar import fp_levels

E4M3_MAX = 448.0
E2M1_MAX = 6.0
F32_MAX = 3.4028234663852886e38

# element name -> (E, M, fn, emax_elem)
MX_ELEMENTS = {"fp4": (2, 1, False, 2), "fp6": (2, 3, False, 2), "fp6e3m2": (3, 2, False, 4),
               "fp8": (4, 3, True, 8)}


@functools.cache
def _positive_levels(e: int, m: int, fn: bool) -> tuple[float, ...]:
    """Non-negative levels of a float format in code order (index = code, 0 first)."""
    lv = fp_levels(e, m, fn)
    return tuple(float(v) for v in lv[lv >= 0])


def round_to_float(u, e: int, m: int, fn: bool = False):
    """u rounded to the nearest value of the float format e{E}m{M}, ties to even, saturated.

    Float32 bit arithmetic, exact: ``k = clamp(floor(log2 |u|), emin, emax)`` (the
    binade; emin = 1 - bias covers the subnormals), ``step = 2^(k - M)``,
    ``q = round(|u| / step) step`` (torch.round: half to even, and an even
    multiple of the step is an even mantissa, also across a binade edge), then
    ``min(q, max)``. Returns (rounded with u's sign, |u|).
    """
    import torch

    lv = _positive_levels(e, m, fn)
    bias = 2 ** (e - 1) - 1
    emax = 2**e - 1 - bias
    a = u.abs()
    k = (a.view(torch.int32) >> 23).sub_(127).clamp_(1 - bias, emax)
    step = k.add_(127 - m).bitwise_left_shift_(23).view(torch.float32)
    q = (a / step).round_().mul_(step).clamp_(max=lv[-1])
    return q.copysign_(u), a


def _trust_edge(e: int, m: int, fn: bool) -> float:
    lv = _positive_levels(e, m, fn)
    return lv[-1] + (lv[-1] - lv[-2]) / 2.0


def _pad_last(x, k: int):
    """x with its last dim zero-padded to a multiple of k (hardware pads partial blocks)."""
    import torch

    pad = -x.shape[-1] % k
    return torch.cat([x, x.new_zeros(*x.shape[:-1], pad)], dim=-1)


class MX(Representation):
    """An OCP MX format: blocks of 32, shared E8M0 scale, fp or int8 elements."""

    family = "fp"
    block = 32

    def __init__(self, spec: str, element: str):
        self.spec = spec
        self.element = element
        self.row_multiple = self.block
        if element == "int8":
            self.family = "int"
            self.elem_bits, self.emax, self.edge = 8, 0, 127.5
        else:
            e, m, fn, emax = MX_ELEMENTS[element]
            self.elem_bits, self.emax, self.edge = 1 + e + m, emax, _trust_edge(e, m, fn)
        self.bits_per_element = self.elem_bits + 8.0 / self.block

    def _plan(self) -> ProjectionPlan:
        return ProjectionPlan()  # no fused kernel: call project, use its mask

    def _project(self, x):
        import torch

        n = x.shape[-1]
        if n % self.block:  # a partial last block: zeros do not change its amax
            out, mask = self._project(_pad_last(x, self.block))
            return out[..., :n].contiguous(), mask[..., :n].contiguous()
        xb = x.reshape(*x.shape[:-1], n // self.block, self.block)
        amax = xb.abs().amax(-1, keepdim=True)
        _, ex = torch.frexp(amax)                         # amax = f 2^ex, f in [0.5, 1)
        shared = (ex - 1 - self.emax).clamp_(-127, 127)   # floor(log2 amax) - emax, E8M0 range
        scale = torch.ldexp(torch.ones_like(amax), shared)
        if self.element == "int8":
            u = xb / scale * 64.0
            q = u.round().clamp_(-127.0, 127.0)
            out = q * scale / 64.0
            a = u.abs()
        else:
            e, m, fn, _ = MX_ELEMENTS[self.element]
            u = xb / scale
            q, a = round_to_float(u, e, m, fn)
            out = q * scale
        mask = a <= self.edge
        return out.reshape(x.shape), mask.reshape(x.shape)


class NVFP4(Representation):
    """NVFP4: E2M1 elements, E4M3 scales per 16 (or per 16 x 16 tile), fp32 tensor scale."""

    family = "fp"
    block = 16

    def __init__(self, spec: str, four_six: bool = False, two_d: bool = False):
        self.spec = spec
        self.four_six, self.two_d = four_six, two_d
        self.row_multiple = self.block
        per_scale = self.block * (self.block if two_d else 1)
        self.bits_per_element = 4.0 + 8.0 / per_scale

    def _plan(self) -> ProjectionPlan:
        return ProjectionPlan()  # no fused kernel: call project, use its mask

    def _blocks(self, x):
        """x as (..., tiles, elements per tile) and the function that undoes it."""
        import torch

        n, k = x.shape[-1], self.block
        if n % k:  # a partial last block (or tile column): zeros do not change its amax
            t, undo = self._blocks(_pad_last(x, k))
            return t, lambda y: undo(y)[..., :n].contiguous()
        if not self.two_d:
            return x.reshape(*x.shape[:-1], n // k, k), lambda y: y.reshape(x.shape)
        x2 = x.reshape(1, n) if x.dim() == 1 else x
        rows = x2.shape[-2]
        pad = -rows % k
        if pad:
            x2 = torch.cat([x2, x2.new_zeros(*x2.shape[:-2], pad, n)], dim=-2)
        lead = x2.shape[:-2]
        r = x2.shape[-2]
        t = (x2.reshape(*lead, r // k, k, n // k, k).transpose(-3, -2)
             .reshape(*lead, r // k, n // k, k * k))

        def undo(y):
            y = (y.reshape(*lead, r // k, n // k, k, k).transpose(-3, -2)
                 .reshape(*lead, r, n))
            return y[..., :rows, :].reshape(x.shape)

        return t, undo

    def _project(self, x):
        import torch

        finite = torch.isfinite(x)
        xf = torch.where(finite, x, torch.zeros((), device=x.device))
        t_amax = xf.abs().amax() if xf.numel() else torch.zeros((), device=x.device)
        # a true float32 division (a python scalar / tensor would multiply by a reciprocal)
        s = (torch.full_like(t_amax, E4M3_MAX * E2M1_MAX) / t_amax).clamp(max=F32_MAX)
        xb, undo = self._blocks(xf)
        amax = xb.abs().amax(-1, keepdim=True)
        out, u = self._candidate(xb, amax, s, E2M1_MAX)
        if self.four_six:
            out4, u4 = self._candidate(xb, amax, s, 4.0)
            use4 = ((out4 - xb).pow(2).sum(-1, keepdim=True)
                    < (out - xb).pow(2).sum(-1, keepdim=True))
            out, u = torch.where(use4, out4, out), torch.where(use4, u4, u)
        mask = undo(u.abs() <= 7.0)
        out = torch.where(finite, undo(out), x)
        return out, mask

    @staticmethod
    def _candidate(xb, amax, s, top: float):
        """(x_hat, u) with the block max scaled to ``top`` (6, or 4 for the 4/6 variant)."""
        import torch

        b, _ = round_to_float(amax / top * s, 4, 3, fn=True)     # E4M3, saturated at 448
        u = xb / (b / s)
        q, _ = round_to_float(u, 2, 1)
        dead = (b == 0) | (b / s == 0)
        out = torch.where(dead, 0.0, q * b / s)
        u = torch.where(dead, 0.0, u)
        return out, u


# ----------------------------------------------------------------------------- forms

@register("mx", r"mx(?P<elem>fp6e3m2|fp4|fp6|fp8|int8)",
          "mxfp4, mxfp6 (e2m3), mxfp6e3m2, mxfp8 (e4m3), mxint8 (MX blocks of 32)")
def _mx(m, opts):
    return MX(opts["spec"], m.group("elem"))


@register("nvfp4", r"nvfp4", "nvfp4 (options @46, @2d)")
def _nvfp4(m, opts):
    return NVFP4(opts["spec"], four_six=opts["46"], two_d=opts["2d"])


__all__ = ["MX", "NVFP4", "round_to_float"]
