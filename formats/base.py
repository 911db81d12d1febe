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
    cache_tag: str = ""  # extra Monte Carlo cache key (e.g. a codebook's build settings)

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
        the trained layer's reduction dimension (paper.md §3: absmax needs MC
        "with the actual group size"); exact values ignore it.
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
    order = ("int", "fp", "float", "lloyd", "ternary", "noise", "sparse", "nm", "vq")
    names = sorted(_FORMS, key=lambda n: order.index(n) if n in order else len(order))
    return ("valid forms: bf16|none, " + ", ".join(_FORMS[n].usage for n in names)
            + f"; {OPTIONS_USAGE}; compose with A+B")


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
