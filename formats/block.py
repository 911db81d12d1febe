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

Options (docs/formats.md): ``@sr`` rounds the elements stochastically
(:mod:`.rounding`; scales stay round-to-nearest; ``nvfp4@46@sr`` picks 4 or 6 on
the RTN errors, then rounds with the chosen scale); ``@q`` (MX, Quartet's 4/3
headroom): ``v = (x / X) * 3/4``, ``x_hat = (q / 0.75) X`` (``mxint8@q``: ``v = (64 x /
X) * 3/4``, ``x_hat = (q / 0.75) X / 64``).

One definition of the numbers: MX and NVFP4 (per 16) call
:func:`raysweep.kernels.reference.block_quant_ref`, the torch reference the fused
Triton kernel reproduces bit for bit; ``@2d`` lays its tiles out as blocks of 256 for
:func:`raysweep.kernels.reference.nvfp4_blocks_ref`, the same per-block math. This
module adds the spec forms, bits, trust edges, the tile layout and fresh uniforms.
"""

from __future__ import annotations

from .base import BlockScale, ProjectionPlan, Representation, register
from .rounding import round_to_float  # re-exported (tests and callers import it from here)

HEADROOM = 0.75  # @q (Quartet): elements x / X scaled by 3/4, the block max lands in [3, 6)

# MX element name -> the element of raysweep.kernels.reference.block_element
MX_ELEMENTS = {"fp4": "e2m1", "fp6": "e2m3", "fp6e3m2": "e3m2", "fp8": "e4m3fn", "int8": "int8"}


def _pad_last(x, k: int):
    """x with its last dim zero-padded to a multiple of k (hardware pads partial blocks)."""
    import torch

    pad = -x.shape[-1] % k
    return torch.cat([x, x.new_zeros(*x.shape[:-1], pad)], dim=-1)


class MX(Representation):
    """An OCP MX format: blocks of 32, shared E8M0 scale, fp or int8 elements.

    The numbers are :func:`raysweep.kernels.reference.block_quant_ref`'s (kind "mx"),
    which the fused kernel reproduces bit for bit.
    """

    family = "fp"
    block = 32

    def __init__(self, spec: str, element: str, sr: bool = False, headroom: bool = False):
        from raysweep.kernels.reference import block_element

        self.spec = spec
        self.element = element
        self.stochastic, self.headroom = sr, headroom
        self.row_multiple = self.block
        e, m, _, _, self.edge = block_element(MX_ELEMENTS[element])
        if element == "int8":
            self.family = "int"
        self.elem_bits = 8 if element == "int8" else 1 + e + m
        self.bits_per_element = self.elem_bits + 8.0 / self.block

    def _plan(self) -> ProjectionPlan:
        return ProjectionPlan(block=BlockScale("mx", MX_ELEMENTS[self.element],
                                               stochastic=self.stochastic,
                                               headroom=HEADROOM if self.headroom else None))

    def _project(self, x, r=None):
        from raysweep.kernels.reference import block_quant_ref

        from .rounding import uniforms

        if self.stochastic and r is None:
            r = uniforms(x)                               # torch's global RNG
        return block_quant_ref(x, "mx", MX_ELEMENTS[self.element], u=r,
                               headroom=HEADROOM if self.headroom else None)


class NVFP4(Representation):
    """NVFP4: E2M1 elements, E4M3 scales per 16 (or per 16 x 16 tile), fp32 tensor scale.

    Per 16: :func:`raysweep.kernels.reference.block_quant_ref` (kind "nvfp4"), the fused
    kernel's numbers. ``@2d``: the same per-block math
    (:func:`raysweep.kernels.reference.nvfp4_blocks_ref`) on the tiles laid out as blocks
    of 256.
    """

    family = "fp"
    block = 16

    def __init__(self, spec: str, four_six: bool = False, two_d: bool = False, sr: bool = False):
        self.spec = spec
        self.four_six, self.two_d = four_six, two_d
        self.stochastic = sr
        self.row_multiple = self.block
        per_scale = self.block * (self.block if two_d else 1)
        self.bits_per_element = 4.0 + 8.0 / per_scale

    def _plan(self) -> ProjectionPlan:
        if self.two_d:
            return ProjectionPlan()  # @2d: no fused kernel, call project and use its mask
        return ProjectionPlan(block=BlockScale("nvfp4", "e2m1", four_six=self.four_six,
                                               stochastic=self.stochastic))

    def _tiles(self, x):
        """x as (..., tiles, 256) (16 x 16 tiles over the last two dims) and the function
        that undoes it."""
        import torch

        n, k = x.shape[-1], self.block
        if n % k:  # a partial tile column: zeros do not change its amax
            t, undo = self._tiles(_pad_last(x, k))
            return t, lambda y: undo(y)[..., :n].contiguous()
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

    def _project(self, x, r=None):
        from raysweep.kernels.reference import block_quant_ref, nvfp4_blocks_ref

        from .rounding import uniforms

        if self.stochastic and r is None:
            r = uniforms(x)                               # torch's global RNG
        if not self.two_d:
            return block_quant_ref(x, "nvfp4", "e2m1", self.four_six, r)
        xb, undo = self._tiles(x)
        rb = None if r is None else self._tiles(r)[0]   # the uniforms, laid out alike
        out, mask = nvfp4_blocks_ref(xb, self.four_six, rb)
        return undo(out), undo(mask)


# ----------------------------------------------------------------------------- forms

@register("mx", r"mx(?P<elem>fp6e3m2|fp4|fp6|fp8|int8)",
          "mxfp4, mxfp6 (e2m3), mxfp6e3m2, mxfp8 (e4m3), mxint8 (MX blocks of 32; @q, @sr)")
def _mx(m, opts):
    return MX(opts["spec"], m.group("elem"), sr=opts["sr"], headroom=opts["q"])


@register("nvfp4", r"nvfp4", "nvfp4 (options @46, @2d, @sr)")
def _nvfp4(m, opts):
    return NVFP4(opts["spec"], four_six=opts["46"], two_d=opts["2d"], sr=opts["sr"])


__all__ = ["MX", "NVFP4", "round_to_float"]
