"""The Representation base class and the registry of spec forms.

A representation projects a tensor along its last dimension (rows = all other
dims) and knows its Gaussian MSE, storage cost and capacity family. Subclasses
implement ``_project(x32) -> (x_hat32, mask | None)`` on a float32 tensor;
:meth:`Representation.project` handles dtypes, shapes and empty tensors.

The registry maps a form name (``"int"``, ``"sparse"``, ...) to a regular
expression for the base spec and a builder. It fails loudly on a name
collision, and :func:`valid_forms` is what a bad spec's error message lists.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from raysweep.errors import SpecError

from .gaussian import GMSE

TINY = 1.1754943508222875e-38  # float32 tiny: the floor of every scale


class Representation:
    """One compressed representation (see docs/formats.md).

    Attributes: ``spec`` (canonical string), ``family`` (capacity family of the
    fit), ``bits_per_element`` (storage cost), ``is_identity``; routing hints
    for the layer: ``grid`` (``("int", bits, clip_mult)`` for per-row RMS int
    grids), ``sparsity`` (fraction zeroed), ``nm`` ((n, m)), ``hadamard``
    (block size of an ``@h`` rotation), ``parts`` (the parts of ``A+B``).
    """

    spec: str = ""
    family: str = ""
    bits_per_element: float = 16.0
    is_identity: bool = False
    grid: tuple | None = None
    sparsity: float | None = None
    nm: tuple[int, int] | None = None
    hadamard: int | None = None
    parts: tuple | None = None

    def project(self, x):
        """(x_hat, trust_mask | None): x projected along its last dim.

        x_hat has x's shape, dtype and device (math in float32); the trust mask
        is a bool tensor of x's shape marking where a straight-through gradient
        passes (None: everywhere). No autograd bookkeeping happens here.
        """
        import torch

        if x.numel() == 0:
            return x.clone(), None
        with torch.no_grad():
            x_hat, mask = self._project(x.float())
        return x_hat.to(x.dtype), mask

    def _project(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def gmse(self) -> GMSE:
        """Gaussian MSE (relative: 1.0 means "outputs zero"), computed once and cached."""
        cached = self.__dict__.get("_gmse")
        if cached is None:
            cached = self._gmse()
            self.__dict__["_gmse"] = cached
        return cached

    def _gmse(self) -> GMSE:
        from .gaussian import monte_carlo

        return monte_carlo(self.project)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"


class Identity(Representation):
    """``bf16`` / ``none``: the dense baseline; project returns x itself."""

    family = "dense"
    is_identity = True

    def __init__(self) -> None:
        self.spec = "bf16"

    def project(self, x):
        return x, None

    def _gmse(self) -> GMSE:
        return GMSE(0.0, 0.0, "exact")


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Form:
    """A registered spec form: ``pattern`` matches the base spec (no options)."""

    name: str
    pattern: re.Pattern
    usage: str
    build: Callable[[re.Match, dict], Representation]


_FORMS: dict[str, Form] = {}


def register(name: str, pattern: str, usage: str):
    """Decorator registering ``build(match, options) -> Representation`` for a form."""

    def deco(build):
        if name in _FORMS:
            raise RuntimeError(f"format form {name!r} registered twice")
        _FORMS[name] = Form(name, re.compile(pattern + r"\Z"), usage, build)
        return build

    return deco


def forms() -> dict[str, Form]:
    return dict(_FORMS)


OPTIONS_USAGE = "options @absmax, @g{G} (G = 2..65536), @h (int, fp, lloyd, ternary; @h also vq)"


def valid_forms() -> str:
    """One line listing every valid spec form (for error messages)."""
    return ("valid forms: " + ", ".join(f.usage for f in _FORMS.values())
            + f"; {OPTIONS_USAGE}; compose with A+B")


def spec_error(part: str, why: str) -> SpecError:
    return SpecError(f"spec part {part!r}: {why}; {valid_forms()}")
