"""Representations: spec strings -> project(), gmse(), bits_per_element, family.

>>> from raysweep.formats import parse
>>> rep = parse("int4")
>>> x_hat, trust = rep.project(x)          # along the last dim
>>> rep.gmse()                             # GMSE(value=0.01154..., stderr=0.0, method='exact')
>>> rep.plan                               # ProjectionPlan(grid=IntGrid(bits=4, ...), ...)

See docs/formats.md for the grammar, conventions and limits. The rounding rules
(round to nearest, and the ``@sr`` stochastic-rounding contract a kernel matches,
with ``rep.project_with_uniforms(x, u)``) live in :mod:`raysweep.formats.rounding`. Importing this
package imports numpy and scipy but not torch (torch is imported on first
projection or Monte Carlo GMSE).
"""

from __future__ import annotations

# Importing the form modules registers their spec forms (order = error-message order).
from . import block, noise, scalar, sparse, vq  # noqa: F401
from .base import (
    Identity,
    IntGrid,
    KeepMask,
    ProjectionPlan,
    Representation,
    Rotation,
    forms,
    valid_forms,
)
from .gaussian import GMSE
from .parse import Composite, parse

__all__ = ["GMSE", "Composite", "Identity", "IntGrid", "KeepMask", "ProjectionPlan",
           "Representation", "Rotation", "forms", "parse", "valid_forms"]
