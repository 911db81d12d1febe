"""The two rounding rules of every grid: round to nearest (RTN) and stochastic rounding (SR).

One definition each: the float and integer rules live in
:mod:`raysweep.kernels.reference` (``round_float_ref``, ``round_int_ref``: the torch
reference the fused block kernel reproduces bit for bit, and what MX / NVFP4 call);
this module is their interface for ``formats/scalar.py`` (``int``, ``intz``, ``fp``,
``e{E}m{M}``, ``lloyd``, ``ternary``), plus the level-set rule and the uniforms. All
float32.

**Round to nearest** (:func:`round_to_float`): ``u`` to the nearest value of the
float format e{E}m{M}, ties to even, saturated at its largest magnitude.

**Stochastic rounding** (the ``@sr`` option; the contract a kernel matches).
Inputs: the scaled value ``v`` (exactly the value the RTN path would round) and
uniforms ``u``: float32 in [0, 1), one per element of the (unpadded) input, of
its shape. On magnitudes::

    a  = |v|
    lo = the largest grid magnitude <= a     (a above the top level: lo = hi = top)
    hi = the smallest grid magnitude >= a
    q  = hi if u < (a - lo) / (hi - lo) else lo       (q = lo when hi == lo)
    result = copysign(q, v)

so ``E[q] = v`` inside the grid (unbiased) and a value on a level stays there.
Three implementations of that one rule, equal bit for bit (tested):

- :func:`stochastic_round_float` ``(v, e, m, fn, u)``: float grids (fp4, fp8,
  e{E}m{M}; the elements of MX and NVFP4 use the same function,
  ``kernels.reference.round_float_ref``). ``k = clamp(floor(log2 a), emin,
  emax)``, ``step = 2^(k - M)``, ``lo = floor(a / step) step``, ``frac = (a - lo) /
  step`` (exact: a power-of-two step), ``q = lo + step`` if ``u < frac`` else
  ``lo``, then ``min(q, top)``.
- :func:`stochastic_round_int` ``(w, u, top)``: integer lattices (``w`` in units of
  the step; ``kernels.reference.round_int_ref``): ``lo = floor(|w|)``, ``q = lo + 1``
  if ``u < |w| - lo`` else ``lo``, then ``min(q, top)``. Used by ``int{b}`` (mid-rise:
  ``w = t / step + 1/2`` as in the RTN formula, so the levels ``(r - 1/2) step`` are
  the integers of w), by ``intz{b}`` (``w = x / step``) and by ``mxint8`` (``w = 64 x /
  X``, inside ``kernels.reference.block_quant_ref``).
- :func:`stochastic_round_levels` ``(v, pos, u)``: any sorted non-negative level
  set (``lloyd``, ``ternary``); the reference the other two are tested against.

**Uniforms.** :func:`uniforms` draws them: ``torch.rand(x.shape, device=x.device,
dtype=torch.float32, generator=generator)``. In training the generator is None,
i.e. torch's global RNG, so every forward gets fresh randomness and a checkpointed
RNG state resumes bit for bit; the Monte Carlo GMSE seeds torch's global RNG
(``Representation._mc_gmse``), so it is deterministic.

**Explicit uniforms** (the torch reference of a kernel's SR tests):
``rep.project_with_uniforms(x, u)`` (``formats.base.Representation``) projects
like ``rep.project(x)`` but with the given ``u`` (float32, x's shape, on x's
device) instead of fresh draws; ``rep.stochastic`` says whether a spec takes them
(``@sr`` specs and anything around one: ``@h``, ``@rh{B}``, ``@o{P}``).
"""

from __future__ import annotations

import functools

import numpy as np


def fp_levels(e: int, m: int, fn: bool = False) -> np.ndarray:
    """Sorted levels of a sign/exponent/mantissa float with subnormals (no inf).

    Bias ``2^(E-1) - 1``; every code is finite (as in OCP e2m1), except with
    ``fn=True`` (e4m3fn) where the all-ones code is NaN and is dropped.
    """
    bias = 2 ** (e - 1) - 1
    vals = [f / 2**m * 2.0 ** (1 - bias) for f in range(2**m)]          # subnormals (and 0)
    for ex in range(1, 2**e):
        vals += [(1 + f / 2**m) * 2.0 ** (ex - bias) for f in range(2**m)]
    if fn:
        vals = vals[:-1]
    pos = np.array(sorted(set(vals)))
    return np.concatenate([-pos[:0:-1], pos])


@functools.cache
def positive_levels(e: int, m: int, fn: bool) -> tuple[float, ...]:
    """Non-negative levels of a float format in code order (index = code, 0 first)."""
    lv = fp_levels(e, m, fn)
    return tuple(float(v) for v in lv[lv >= 0])


def round_to_float(u, e: int, m: int, fn: bool = False):
    """u (float32) rounded to the nearest value of e{E}m{M}, ties to even, saturated.

    :func:`raysweep.kernels.reference.round_float_ref` (the one definition, float32 bit
    arithmetic, exact: the binade ``k = clamp(floor(log2 |u|), emin, emax)``, ``step =
    2^(k - M)``, ``q = rint(|u| / step) step``, an even multiple of the step being an even
    mantissa, also across a binade edge, then ``min(q, max)``) with the top level of
    :func:`positive_levels`. Returns (rounded with u's sign, |u|).
    """
    from raysweep.kernels.reference import round_float_ref

    return round_float_ref(u, e, m, positive_levels(e, m, fn)[-1])


def stochastic_round_float(v, e: int, m: int, fn: bool, u):
    """v (float32) stochastically rounded onto e{E}m{M} (module docstring), saturated.

    :func:`raysweep.kernels.reference.round_float_ref` with uniforms. Returns (rounded
    with v's sign, |v|), like :func:`round_to_float`.
    """
    from raysweep.kernels.reference import round_float_ref

    return round_float_ref(v, e, m, positive_levels(e, m, fn)[-1], u)


def stochastic_round_int(w, u, top: float | None = None):
    """w (float32) stochastically rounded to an integer (on magnitudes), saturated at ``top``.

    :func:`raysweep.kernels.reference.round_int_ref` with uniforms. Returns (rounded with
    w's sign, |w|).
    """
    from raysweep.kernels.reference import round_int_ref

    return round_int_ref(w, top, u)


def stochastic_round_levels(v, pos, u):
    """v stochastically rounded onto the sorted non-negative levels ``pos`` (a tensor, 0 first).

    The rule of the module docstring literally (a above ``pos[-1]`` saturates).
    Returns (rounded with v's sign, |v|).
    """
    import torch

    a = v.abs()
    top = pos[-1]
    ac = torch.minimum(a, top)
    i = torch.bucketize(ac, pos, right=True).sub_(1).clamp_(0, len(pos) - 1)
    lo = pos[i]
    hi = pos[(i + 1).clamp_(max=len(pos) - 1)]
    hi = torch.where(lo == ac, lo, hi)
    gap = hi - lo
    frac = torch.where(gap > 0, (ac - lo) / torch.where(gap > 0, gap, 1.0), 0.0)
    q = torch.where(u < frac, hi, lo)
    return q.copysign_(v), a


def uniforms(x, generator=None):
    """Float32 uniforms in [0, 1) of x's shape on x's device (torch's global RNG by default)."""
    import torch

    return torch.rand(x.shape, device=x.device, dtype=torch.float32, generator=generator)


def check_uniforms(x, u, spec: str):
    """``u`` as float32 on x's device, or a RaysweepError naming what is wrong."""
    import torch

    from raysweep.errors import RaysweepError

    if not isinstance(u, torch.Tensor) or tuple(u.shape) != tuple(x.shape):
        got = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
        raise RaysweepError(f"{spec}: uniforms must be a tensor of x's shape "
                            f"{tuple(x.shape)}, got {got}")
    return u.to(device=x.device, dtype=torch.float32)


__all__ = ["fp_levels", "positive_levels", "round_to_float", "stochastic_round_float",
           "stochastic_round_int", "stochastic_round_levels", "uniforms"]
