"""``noise{b}``: additive Gaussian noise at the rate-distortion bound of b bits.

``x_hat = x + eps * RMS(row) * 2^-b`` with eps ~ N(0, 1) i.i.d., so the
relative MSE is exactly ``4^-b`` (Panferov et al. 2025, "Unified Scaling Laws
for Compressed Representations", GMSE reference values section: the
information-theoretic bound that trained quantized models are compared
against). Projection is
stochastic: it draws from ``self.generator`` if one is set (a
``torch.Generator`` on the input's device), else from torch's global RNG, so a
training run seeded with ``torch.manual_seed`` is reproducible. No trust mask
(the gradient passes everywhere). ``b`` may be fractional (``noise2.5``).
"""

from __future__ import annotations

from .base import ProjectionPlan, Representation, register, spec_error
from .gaussian import GMSE


class Noise(Representation):
    """Additive Gaussian noise of relative variance 4^-b."""

    family = "noise"

    def __init__(self, spec: str, bits: float):
        self.spec = spec
        self.bits_per_element = float(bits)
        self.sigma = 2.0 ** -bits
        self.generator = None

    def _plan(self) -> ProjectionPlan:
        return ProjectionPlan()  # no kernel, no trust mask (the gradient passes everywhere)

    def _project(self, x):
        import torch

        rms = x.pow(2).mean(-1, keepdim=True).sqrt_()
        eps = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return eps.mul_(rms).mul_(self.sigma).add_(x), None

    def _gmse(self) -> GMSE:
        return GMSE(4.0 ** -self.bits_per_element, 0.0, "exact")


@register("noise", r"noise(?P<b>\d+(\.\d+)?)", "noise{b} (0<b<=16)")
def _noise(mt, opts):
    b = float(mt.group("b"))
    if not 0.0 < b <= 16.0:
        raise spec_error(mt.string, f"b={b:g} out of range 0 < b <= 16")
    return Noise(f"noise{b:g}", b)
