"""The Representation base class and the table of spec forms.

A representation projects a tensor along its last dimension (rows = all other
dims) and knows its Gaussian MSE, storage cost and capacity family. Subclasses
implement ``_project(x32) -> (x_hat32, mask | None)`` on a float32 tensor;
:meth:`Representation.project` handles dtypes, shapes and empty tensors.

Every representation also says *how* it projects, through one typed
description, :class:`ProjectionPlan` (``rep.plan``): the per-row int grid a
fused kernel computes bit for bit, the keep-mask rule of a sparsity part, the
Hadamard rotation around an inner representation, the parts of a composite,
and whether it is the identity. The layer (``raysweep.train.layers``) routes on
``rep.plan`` alone; each representation class builds its own in :meth:`_plan`.

The table of forms (``register``) maps a form name (``"int"``, ``"sparse"``, ...) to a regular
expression for the base spec and a builder. It fails loudly on a name
collision, and :func:`valid_forms` is what a bad spec's error message lists.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from raysweep.atomic import atomic_write
from raysweep.errors import RaysweepError, SpecError

from .gaussian import GMSE

TINY = 1.1754943508222875e-38  # float32 tiny: the floor of every scale
MC_VERSION = "mc2"  # bump when a projection's numbers change (invalidates cached MC GMSE)


# ----------------------------------------------------------------------------- projection plan


@dataclass(frozen=True)
class IntGrid:
    """A per-row RMS int grid that ``raysweep.kernels.int_quant`` computes bit for bit.

    ``kind`` is ``"int"`` (the only kernel grid so far), ``bits`` the grid's b,
    ``clip_mult`` its clip alpha*(b) in units of the row RMS. The kernel's trust
    mask is the half-step rule, so a grid with a wider trust radius (``int1@h``'s
    inner grid) still names it here but the layer leaves int1 to ``project``.
    """

    bits: int
    clip_mult: float
    kind: str = "int"


@dataclass(frozen=True)
class KeepMask:
    """The keep mask of a sparsity part (its trust mask is the same mask).

    ``kind``: ``"topk"`` (per-row magnitude top-k, ties at the threshold kept,
    ``kernels.topk_mask``) or ``"nm"`` (``kernels.nm_mask``, ``nm = (n, m)``).
    ``keep_count(n)`` (topk): the entries kept per row at row length n, or None
    where the projection is not a per-row top-k (e.g. tiny rows pruned per
    tensor); a topk mask without the rule leaves the layer to ask ``project``.
    """

    kind: str
    nm: tuple[int, int] | None = None
    keep_count: Callable[[int], int | None] | None = None


@dataclass(frozen=True)
class Rotation:
    """An ``@h`` block-Hadamard rotation around ``inner`` (the un-rotated representation).

    ``block`` is the largest block size; on a last dim n the block used is
    :func:`raysweep.formats.hadamard.block_size` ``(n, block)``. The inner trust
    mask lives in the rotated domain, so a layer rotates, projects by ``inner``
    and applies the inner mask there.
    """

    block: int
    inner: Representation
    random: bool = False  # random signs (``@rh{B}``): x -> H (d * x), d redrawn per projection


@dataclass(frozen=True)
class BlockScale:
    """A block-scaled format that ``raysweep.kernels.block_quant`` computes bit for bit.

    ``kind``: ``"mx"`` (blocks of 32, E8M0 scale) or ``"nvfp4"`` (blocks of 16, E4M3
    scale times the fp32 tensor scale); ``element``: the element grid as the kernel
    names it (``"e2m1"``, ``"e2m3"``, ``"e3m2"``, ``"e4m3fn"``, ``"int8"``);
    ``four_six``: NVFP4's 4/6 variant; ``stochastic``: the elements are rounded
    stochastically (the caller passes fresh uniforms, :func:`formats.rounding.uniforms`);
    ``headroom``: MX ``@q``'s factor on the scaled elements (None: none).
    """

    kind: str
    element: str
    four_six: bool = False
    stochastic: bool = False
    headroom: float | None = None


@dataclass(frozen=True)
class ProjectionPlan:
    """How a representation projects: the one description a layer routes on.

    - ``identity``: ``project`` returns x itself (a layer skips it).
    - ``grid``: the :class:`IntGrid` a fused kernel reproduces, or None.
    - ``mask``: the :class:`KeepMask` of a sparsity part, or None (not sparse).
    - ``rotation``: the :class:`Rotation` of an ``@h`` spec, or None.
    - ``parts``: the parts of a composite ``A+B`` (applied left to right), or ``()``.
    - ``block``: the :class:`BlockScale` of an MX / NVFP4 format a fused kernel
      reproduces, or None.

    A plan with none of these set (VQ, noise, fp grids, ``@absmax``/``@g``)
    means: call ``project`` and use its trust mask.
    """

    identity: bool = False
    grid: IntGrid | None = None
    mask: KeepMask | None = None
    rotation: Rotation | None = None
    parts: tuple[Representation, ...] = ()
    block: BlockScale | None = None

    @property
    def sparse(self) -> bool:
        """A sparsity part (its backward estimator is a keep mask)."""
        return self.mask is not None


class Representation:
    """One compressed representation (see docs/formats.md).

    Attributes: ``spec`` (canonical string), ``family`` (capacity family of the
    fit), ``bits_per_element`` (storage cost), ``is_identity``, and :attr:`plan`
    (:class:`ProjectionPlan`, how it projects: what a layer routes on).
    Descriptive attributes, read by the fit and tests: ``grid`` (``("int", bits,
    clip_mult)`` for per-row RMS int grids), ``sparsity`` (fraction zeroed),
    ``nm`` ((n, m)), ``hadamard`` (block size of an ``@h`` rotation), ``parts``
    (the parts of ``A+B``).
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
    cache_tag: str = ""  # extra Monte Carlo cache key (e.g. a codebook's build settings)
    stochastic: bool = False  # draws uniforms per projection (``@sr``; see formats.rounding)

    @functools.cached_property
    def plan(self) -> ProjectionPlan:
        """How this representation projects (built once by :meth:`_plan`)."""
        return self._plan()

    def _plan(self) -> ProjectionPlan:
        """Subclasses describe themselves; the default is "call project, use its mask"."""
        return ProjectionPlan(identity=self.is_identity)

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

    def project_with_uniforms(self, x, u):
        """``project(x)`` with explicit stochastic-rounding uniforms ``u`` (x's shape, [0, 1)).

        Only for ``stochastic`` specs (``@sr``, or around one); the torch reference a
        kernel's SR tests call (contract: :mod:`raysweep.formats.rounding`).
        """
        import torch

        from .rounding import check_uniforms

        if not self.stochastic:
            raise RaysweepError(f"{self.spec!r} does not round stochastically (no @sr): "
                                "project_with_uniforms needs an @sr spec")
        if x.numel() == 0:
            return x.clone(), None
        u = check_uniforms(x, u, self.spec)
        with torch.no_grad():
            x_hat, mask = self._project(x.float(), u)
        return x_hat.to(x.dtype), mask

    row_multiple: int = 1  # the last dim must be a multiple of this (group size, m, d)

    def gmse(self, row_len: int | None = None) -> GMSE:
        """Gaussian MSE (relative: 1.0 means "outputs zero"), computed once and cached.

        Monte Carlo values (absmax scaling, groups, composites, vq) are means
        over i.i.d. N(0, 1) rows of :meth:`mc_row_len` values: 1024 (MC_COLS)
        rounded up to a multiple of :attr:`row_multiple` (``int4@g33``: 1056;
        ``int4@g2048``: 2048). Grouped values do not depend on the row length,
        but row-wise ``@absmax`` does: the row maximum of n Gaussians grows like
        sqrt(2 ln n), so ``int4@absmax`` on the 32..128-wide rows of a tiny CPU
        model has a smaller GMSE than the 1024-row value, and on 640+ rows of
        the paper presets a similar one. ``row_len`` (a multiple of
        ``row_multiple``) asks for the Monte Carlo on rows of that length, e.g.
        the trained layer's reduction dimension (Panferov et al. 2025, "Unified
        Scaling Laws for Compressed Representations", GMSE reference values
        section: absmax needs MC "with the actual group size"); exact values
        ignore it.
        """
        if row_len is not None:
            row_len = int(row_len)
            if row_len < 1 or row_len % self.row_multiple:
                raise RaysweepError(f"gmse row_len={row_len}: must be a positive multiple of "
                                    f"{self.row_multiple} for {self.spec!r}")
            if row_len == self.mc_row_len():
                row_len = None
        cache = self.__dict__.setdefault("_gmse_by_row", {})
        cached = cache.get(row_len)
        if cached is None:
            cached = self._gmse() if row_len is None else self._gmse_rows(row_len)
            cache[row_len] = cached
        return cached

    def mc_row_len(self) -> int:
        """Default Monte Carlo row length: MC_COLS rounded up to a multiple of row_multiple."""
        from .gaussian import MC_COLS

        m = self.row_multiple
        return m * -(-MC_COLS // m)

    def _gmse_rows(self, row_len: int) -> GMSE:
        """GMSE on rows of ``row_len``: the exact value if there is one, else Monte Carlo."""
        res = self.gmse()
        return res if res.method == "exact" else self._mc_gmse(row_len)

    def _gmse(self) -> GMSE:
        """Monte Carlo GMSE (subclasses with an exact value override this)."""
        return self._mc_gmse(self.mc_row_len())

    def _mc_gmse(self, cols: int) -> GMSE:
        """Monte Carlo GMSE on rows of ``cols`` values.

        Deterministic, so it is cached on disk under :func:`cache_dir` keyed by
        the spec and every Monte Carlo setting (``RAYSWEEP_NO_CACHE=1`` skips it).
        """
        import hashlib
        import json

        from . import gaussian as g

        key = (f"{MC_VERSION}|{self.spec}|{self.cache_tag}|{cols}|{g.MC_SEED}|"
               f"{g.MC_REL_SE}|{g.MC_MAX_ELEMENTS}")
        path = cache_dir() / "gmse" / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".json")
        use_cache = not os.environ.get("RAYSWEEP_NO_CACHE")
        if use_cache and path.exists():
            try:
                rec = json.loads(path.read_text())
                if rec["key"] == key:
                    return GMSE(float(rec["value"]), float(rec["stderr"]), "mc")
            except (OSError, ValueError, KeyError):
                pass
        import torch

        # stochastic parts (@sr, @rh, noise) draw from torch's global RNG: seed it here
        # (the caller's RNG state is restored), so the value is deterministic
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(g.MC_SEED + 1)
            res = g.monte_carlo(self.project, rel_se=g.MC_REL_SE, seed=g.MC_SEED, cols=cols,
                                max_elements=g.MC_MAX_ELEMENTS)  # the settings of the key
        if use_cache:
            rec = json.dumps({"key": key, "value": res.value, "stderr": res.stderr})
            save_cache(path, lambda p: Path(p).write_text(rec, encoding="utf-8"))
        return res

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"


class Identity(Representation):
    """``bf16`` / ``none``: the dense baseline; project returns x itself."""

    family = "dense"
    is_identity = True

    def __init__(self) -> None:
        self.spec = "bf16"

    def _plan(self) -> ProjectionPlan:
        return ProjectionPlan(identity=True)

    def project(self, x):
        return x, None

    def _gmse(self) -> GMSE:
        return GMSE(0.0, 0.0, "exact")


# ------------------------------------------------ the table of spec forms (not the run registry)


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
        _FORMS[name] = Form(name, re.compile(pattern + r"\Z", re.ASCII), usage, build)
        return build

    return deco


def forms() -> dict[str, Form]:
    return dict(_FORMS)


MAX_PARTS = 4  # parts of a composite A+B+...: each adds a projection (and Monte Carlo cost)
OPTIONS_USAGE = ("options @absmax, @g{G} (G = 2..65536), @h (int, intz, fp, lloyd, ternary; "
                 "@h also vq), @sr (stochastic rounding: scalar grids, mx, nvfp4), "
                 "@rh{B} (random-sign Hadamard, B = 16, 32, 64, 128), @o{P} (keep the P% "
                 "largest of each row exact), @q (mx: Quartet 3/4 headroom), @46, @2d (nvfp4)")


def valid_forms() -> str:
    """One line listing every valid spec form (for error messages)."""
    order = ("int", "fp", "float", "lloyd", "ternary", "noise", "sparse", "nm", "vq")
    names = sorted(_FORMS, key=lambda n: order.index(n) if n in order else len(order))
    return ("valid forms: bf16|none, " + ", ".join(_FORMS[n].usage for n in names)
            + f"; {OPTIONS_USAGE}; compose with A+B (at most {MAX_PARTS} parts)")


def spec_error(part: str, why: str) -> SpecError:
    return SpecError(f"spec part {part!r}: {why}; {valid_forms()}")


# ----------------------------------------------------------------------------- disk cache


def cache_dir() -> Path:
    """Where VQ codebooks and Monte Carlo GMSE values are cached.

    ``$RAYSWEEP_CACHE_DIR`` if set, else ``~/.cache/raysweep``. Every cached
    value is deterministic (seeded), so the cache only saves time.
    """
    return Path(os.environ.get("RAYSWEEP_CACHE_DIR") or Path.home() / ".cache" / "raysweep")


def save_cache(path: Path, write: Callable[[str], object]) -> None:
    """Publish a cache file with :func:`raysweep.atomic.atomic_write` (``write(tmp_path)``).

    Failures (read-only home, full disk) are ignored: the cache is optional.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except OSError:
        pass
