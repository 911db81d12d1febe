"""From a results table to the arrays a scaling law is fitted on.

A row of the results table is one trained model: its size N (``n_params``), its
training tokens D (``tokens``), its final validation ``loss``, and the
representation it was trained in. The laws in :mod:`raysweep.fit.laws` see the
representation only through :class:`Design`:

- ``label``: the key of the row's representation in the ``rho`` output; the
  ``format`` column when present, else ``"<weights>|<activations>"``;
- ``parts``: one entry per non-identity *part* of the representation, with its
  role (weights or activations), capacity family and GMSE. A composite weight
  spec ``sparse50+int4`` yields two parts, ``sparse`` at GMSE 0.0713 and ``int``
  at GMSE(int4): the unified law multiplies the capacities of the parts, each
  taken from its own family's curve (the unified law, composability);
- per-row ``sparsity`` (for the Frantar law) and ``bits`` per role (for the
  Kumar law).

Where representations come from, in order of preference: the ``weights`` /
``activations`` spec columns, parsed by :func:`raysweep.formats.parse` (exact
per-part GMSE); else the ``gmse_weights`` / ``gmse_activations`` columns with a
``family`` column (or ``family_weights`` / ``family_activations``); a row with
GMSE 0 in a role is dense in that role. A table with none of these is all dense.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import pandas as pd

from raysweep.errors import FitError, RaysweepError
from raysweep.results import is_dense, row_label

REQUIRED = ("n_params", "tokens", "loss")
ROLES = ("weights", "activations")
MAX_LOSS = 1e6  # a cross-entropy above this (nats; ln of any vocabulary is < 20) is absurd
DENSE_BITS = 16.0  # bits per element of the bf16 baseline (Pareto view, Kumar's P)


@dataclass(frozen=True)
class Part:
    """One non-identity component of a representation, as the fit sees it."""

    role: str  # "weights" | "activations"
    spec: str  # the part's spec text ("int4"), or "" when only a GMSE is known
    family: str
    gmse: float
    bits: float = math.nan
    sparsity: float = math.nan


@dataclass(frozen=True)
class Design:
    """Rows of a table reduced to arrays; rows are in table order after filtering."""

    log_n: np.ndarray
    log_d: np.ndarray
    log_loss: np.ndarray
    labels: tuple[str, ...]
    row_parts: tuple[tuple[Part, ...], ...]
    families: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n(self) -> int:
        return len(self.log_n)

    def memo(self, key, fn):
        """``fn()`` computed once per design (laws cache their row-index arrays here)."""
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]

    @property
    def dense(self) -> np.ndarray:
        return self.memo("dense", lambda: np.array([len(p) == 0 for p in self.row_parts],
                                                   dtype=bool))

    def take(self, idx: np.ndarray) -> Design:
        """The design restricted to (or resampled at) row indices ``idx``."""
        idx = np.asarray(idx, dtype=int)
        return Design(
            self.log_n[idx], self.log_d[idx], self.log_loss[idx],
            tuple(self.labels[i] for i in idx), tuple(self.row_parts[i] for i in idx),
            self.families, self.notes,
        )

    def part_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Flattened parts: (row index, family index, GMSE, role index)."""
        return self.memo("parts", self._part_arrays)

    def _part_arrays(self):
        fam_index = {f: i for i, f in enumerate(self.families)}
        rows, fams, gm, roles = [], [], [], []
        for i, parts in enumerate(self.row_parts):
            for p in parts:
                rows.append(i)
                fams.append(fam_index[p.family])
                gm.append(p.gmse)
                roles.append(ROLES.index(p.role))
        return (np.array(rows, dtype=int), np.array(fams, dtype=int),
                np.array(gm, dtype=float), np.array(roles, dtype=int))


@lru_cache(maxsize=512)
def spec_parts(spec: str, role: str) -> tuple[Part, ...]:
    """The non-identity parts of one spec, each with family, GMSE, bits and sparsity.

    Uses :func:`raysweep.formats.parse`; a composite exposes ``.parts``. The
    GMSE of each *part* enters its family's capacity curve, not the GMSE of the
    composite.
    """
    if is_dense(spec):
        return ()
    from raysweep.formats import parse

    try:
        rep = parse(spec)
    except RaysweepError as exc:
        raise FitError(f"column {role!r}: {exc}") from exc
    subs = getattr(rep, "parts", None) or (rep,)
    out = []
    for sub in subs:
        if getattr(sub, "is_identity", False):
            continue
        sparsity = getattr(sub, "sparsity", None)
        out.append(Part(role, str(getattr(sub, "spec", spec)), str(sub.family),
                        float(sub.gmse().value), float(sub.bits_per_element),
                        math.nan if sparsity is None else float(sparsity)))
    return tuple(out)


def _column_parts(row: pd.Series, role: str) -> tuple[Part, ...]:
    """Parts of one role from the gmse_<role> and family columns (no spec parsing)."""
    g = row.get(f"gmse_{role}")
    if g is None or pd.isna(g) or float(g) <= 0.0:
        return ()
    fam = row.get(f"family_{role}", row.get("family"))
    if fam is None or pd.isna(fam) or str(fam) == "":
        raise FitError(f"row {row.name}: gmse_{role}={g} needs a 'family' or 'family_{role}' "
                       "column (or a parseable spec in the "
                       f"{role!r} column)")
    bits = row.get(f"bits_{role}", math.nan)
    spec = row.get(role, "")
    if spec is None or pd.isna(spec) or spec == "":
        spec = _label_side(row, role)
    sparsity = _sparsity_from_text(str(spec)) if fam == "sparse" else math.nan
    return (Part(role, "" if pd.isna(spec) else str(spec), str(fam), float(g),
                 float(bits) if bits is not None and not pd.isna(bits) else math.nan,
                 sparsity),)


def _label_side(row: pd.Series, role: str) -> str:
    """The role's spec text from a ``"<weights>|<activations>"`` format label, else ""."""
    fmt = row.get("format")
    if isinstance(fmt, str) and fmt.count("|") == 1:
        return fmt.split("|")[ROLES.index(role)]
    return ""


def _sparsity_from_text(spec: str) -> float:
    """Sparsity of ``sparse{P}`` / ``{n}:{m}`` spec text; NaN otherwise."""
    m = re.fullmatch(r"sparse(\d+(?:\.\d+)?)", spec.strip())
    if m:
        return float(m.group(1)) / 100.0
    m = re.fullmatch(r"(\d+):(\d+)", spec.strip())
    if m:
        return 1.0 - int(m.group(1)) / int(m.group(2))
    return math.nan


def _row_parts(row: pd.Series, use_specs: bool) -> tuple[Part, ...]:
    parts: list[Part] = []
    for role in ROLES:
        spec = row.get(role)
        if use_specs and spec is not None and not is_dense(spec):
            got = _spec_or_columns(row, role, str(spec))
        else:
            got = _column_parts(row, role)
        parts.extend(got)
    return tuple(parts)


def _spec_or_columns(row: pd.Series, role: str, spec: str) -> tuple[Part, ...]:
    """Parse the spec; fall back to the GMSE columns when formats cannot parse it."""
    try:
        return spec_parts(spec, role)
    except FitError:
        if f"gmse_{role}" in row.index and ("family" in row.index or f"family_{role}" in row.index):
            return _column_parts(row, role)
        raise


def check_columns(df: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise FitError(f"table is missing required column(s) {missing}; required: {list(REQUIRED)}"
                       f"; present: {sorted(map(str, df.columns))}")


def clean_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Drop rows whose ``status`` is not ``ok``; reject NaN, infinite or non-positive
    numbers in the required columns, and a loss above :data:`MAX_LOSS` (an ``ok`` run
    with such a loss is a corrupt row, not data: a FitError naming the run, as for a
    NaN loss; a run that diverged has status ``diverged`` and is left out)."""
    check_columns(df)
    notes = []
    if "role" in df.columns:  # a warmup-stable-decay trunk's row is no run of its D
        trunk = df["role"].astype(str) == "trunk"
        if trunk.any():
            notes.append(f"{int(trunk.sum())} trunk row(s) (role 'trunk': constant LR, not a "
                         "run of their D) left out")
            df = df[~trunk]
    if "status" in df.columns:
        bad = df["status"].astype(str) != "ok"
        if bad.any():
            notes.append(f"{int(bad.sum())} row(s) with status != 'ok' left out")
            df = df[~bad]
    for col in REQUIRED:
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = ~(vals > 0) | ~np.isfinite(vals)
        if bad.any():
            first = df.index[bad.to_numpy()][0]
            ident = df.loc[first, "run_id"] if "run_id" in df.columns else f"row {first}"
            raise FitError(f"column {col!r} must be positive and finite: {int(bad.sum())} row(s) "
                           f"are NaN or <= 0 (first: {ident}, value {df.loc[first, col]!r})")
    loss = pd.to_numeric(df["loss"], errors="coerce")
    absurd = (loss > MAX_LOSS).to_numpy()
    if absurd.any():
        idents = [str(df.loc[i, "run_id"]) if "run_id" in df.columns else f"row {i}"
                  for i in df.index[absurd]]
        first = df.index[absurd][0]
        raise FitError(f"column 'loss': {int(absurd.sum())} row(s) with status 'ok' have an "
                       f"absurd loss above {MAX_LOSS:g} (first: {idents[0]}, value "
                       f"{float(loss[first])!r}; runs: {', '.join(idents[:5])}"
                       f"{', ...' if len(idents) > 5 else ''}); allowed: a validation loss "
                       f"in (0, {MAX_LOSS:g}] (mark a diverged run's status 'diverged')")
    return df, notes


def table_families(df: pd.DataFrame) -> tuple[str, ...]:
    """The capacity families of the table's rows (their parts), sorted."""
    use_specs = any(r in df.columns for r in ROLES)
    return tuple(sorted({p.family for _, row in df.iterrows()
                         for p in _row_parts(row, use_specs)}))


def check_share(share: dict, families) -> None:
    """``share`` (``--share-family FAM=TO``) must map families of the table onto
    families of the table, and a target must not itself be shared onto another."""
    present = sorted(families)
    allowed = f"the table's families {present}" if present else (
        "none: the table has no compressed rows, so no family")
    for fam, to in share.items():
        for name in (fam, to):
            if name not in present:
                raise FitError(f"--share-family {fam}={to}: family {name!r} is not in the "
                               f"table; allowed: {allowed}")
        if to != fam and share.get(to, to) != to:
            raise FitError(f"--share-family {fam}={to}: {to!r} is itself shared onto "
                           f"{share[to]!r}; share {fam} onto {share[to]} directly")


def make_design(df: pd.DataFrame, clean: bool = True, share: dict | None = None) -> Design:
    """Validate a table and reduce it to a :class:`Design`.

    ``clean=False`` keeps every row (for predicting); only the columns are checked.
    ``share`` maps family names onto others that share their capacity curve
    (``{"noise": "int"}``: noise injection on the scalar-quantization curve, as
    the paper finds for QuEST).
    """
    if clean:
        df, notes = clean_rows(df)
    else:
        check_columns(df)
        notes = []
    if len(df) == 0:
        raise FitError("table has no usable rows (need columns n_params, tokens, loss > 0)")
    use_specs = any(r in df.columns for r in ROLES)
    share = share or {}
    row_parts = tuple(tuple(replace(p, family=share.get(p.family, p.family)) for p in
                            _row_parts(row, use_specs)) for _, row in df.iterrows())
    labels = tuple(row_label(row) for _, row in df.iterrows())
    families = tuple(sorted({p.family for parts in row_parts for p in parts}))
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = [np.log(pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float))
                for c in REQUIRED]
    return Design(
        *logs,
        labels, row_parts, families, tuple(notes),
    )
