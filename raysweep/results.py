"""A run's record: its id, the results table, its label, what is dense, its FLOPs.

The one home of the results contract (docs/architecture.md, "Results table"),
imported by every wing: training writes rows, the sweep records and tables them,
the active search prices and labels them, the fit and the report read them.
Light: no torch, no ray; pandas only where a table is read or written.

- :data:`COLUMNS`: the contract columns of the table, in order; rows may carry more.
- :func:`run_id`: the hash of a resolved trial config that makes a sweep idempotent.
- :func:`format_label`: a representation's label (``"<weights>|<activations>"``).
- :func:`is_dense`: whether a spec (or a table's value for one) is the dense baseline.
- :func:`run_flops`: ``6 N D``, the training FLOPs of a run.
- :func:`read_table`, :func:`write_table`, :func:`rows_frame`: the table on disk.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from raysweep.atomic import atomic_write
from raysweep.errors import TableError

# Results-table columns (contract) in their order; rows may carry more.
COLUMNS = ("run_id", "study", "format", "weights", "activations", "n_params", "n_layers",
           "d_model", "tokens", "tokens_per_param", "seed", "loss", "train_loss",
           "gmse_weights", "gmse_activations", "bits_weights", "bits_activations", "flops",
           "wall_s", "status", "error",
           # warmup-stable-decay (docs/training.md): trunk_id "" and role "run" for plain
           # runs; a role "trunk" row is at constant LR, not a run of its D (fits drop it)
           "trunk_id", "branch_step", "cooldown", "schedule", "role")

# A row's role (warmup-stable-decay, docs/training.md): "run" (a plain run, or a WSD run
# from scratch), "branch" (a trunk's cooldown branch: a run of its D too) or "trunk" (its
# loss is at constant LR, not a run of any D: it stays out of the results table).
ROLES = ("run", "trunk", "branch")

# Statuses of a finished run (recorded once, never re-run); anything else is a failure.
DONE = ("ok", "diverged")

# Names of the uncompressed baseline: the spec grammar's ``bf16`` / ``none``, and the
# values other tables use for it (``fp32``, ``fp16``, ``dense``; an empty cell).
DENSE_SPECS = ("bf16", "none", "fp32", "fp16", "dense")

# Keys that say where or how fast a trial runs, not what it computes: not hashed.
_UNHASHED = ("run_id", "study", "size", "checkpoint_dir", "threads", "device", "trunk_dir")
_UNHASHED_SIM = ("sleep_s", "fail_prob")


def run_id(cfg: dict) -> str:
    """Hash of the resolved trial config: sha256 of its canonical JSON, 16 hex digits.

    The study name is left out (the same trial in two studies is the same
    experiment), and so is the size string (``d32`` and ``2x32`` are one model:
    its resolved shape is hashed), as are run-location keys (``checkpoint_dir``,
    ``threads``, ``device``) and the simulated runner's sleep/failure injection.
    """
    core = {k: v for k, v in cfg.items() if k not in _UNHASHED}
    core["training"] = {k: v for k, v in cfg.get("training", {}).items() if k not in _UNHASHED}
    if "simulated" in core:
        core["simulated"] = {k: v for k, v in core["simulated"].items() if k not in _UNHASHED_SIM}
    blob = json.dumps(core, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _missing(value: Any) -> bool:
    """An empty table cell: None, NaN, pandas' NA, or an empty (or ``nan``) string."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    if isinstance(value, str):
        return value.strip().lower() in ("", "nan")
    return str(value) in ("<NA>", "NaT", "nan")


def is_dense(spec: Any) -> bool:
    """Whether a spec is the uncompressed baseline (rho = 1).

    True for the dense names (:data:`DENSE_SPECS`, any case), a composite of
    them only (``bf16+bf16``), and a missing value (an empty or NaN cell of a
    table means "not compressed in that role").
    """
    if _missing(spec):
        return True
    return all(p.strip().lower() in DENSE_SPECS for p in str(spec).split("+"))


def format_label(weights: Any = None, activations: Any = None, name: Any = None) -> str:
    """A representation's label: ``name`` when given, else ``"<weights>|<activations>"``.

    The specs are written as given (the label is hashed into run ids: ``none|int4``
    stays ``none|int4``); a missing role (an empty or NaN cell) is ``bf16``.
    """
    if not _missing(name):
        return str(name)
    w = "bf16" if _missing(weights) else str(weights)
    a = "bf16" if _missing(activations) else str(activations)
    return f"{w}|{a}"


def row_label(row: dict) -> str:
    """The label of a table row: its ``format`` column, else from its spec columns."""
    return format_label(row.get("weights"), row.get("activations"), row.get("format"))


def row_is_dense(row: dict) -> bool:
    """Whether a table row is a dense run: both spec columns dense, or, without them, its label."""
    if "weights" in row or "activations" in row:
        return is_dense(row.get("weights")) and is_dense(row.get("activations"))
    fmt = row.get("format")
    return is_dense(fmt) or str(fmt).lower() == "bf16|bf16"


def run_flops(n_params: float, tokens: float) -> float:
    """Training FLOPs of a run, ``6 N D`` (forward and backward; Kaplan et al. 2020)."""
    return 6.0 * float(n_params) * float(tokens)


# ---------------------------------------------------------------- the table on disk


def rows_frame(rows: list[dict]):
    """A DataFrame with the contract columns first (missing ones as NaN/empty)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = "" if c in ("error", "status") else math.nan
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[list(COLUMNS) + extra]
    if "error" in df:
        df["error"] = df["error"].fillna("").astype(str)
    return df


def in_table(row: dict) -> bool:
    """Whether a finished row belongs in the results table: every run of a D does; a WSD
    trunk's row (its loss is at constant LR, no run of its D) stays in the registry."""
    return row.get("role") != ROLES[1]


def write_table(study_dir: str | Path, rows: list[dict]) -> None:
    """Write results.csv and results.parquet atomically (temp file + os.replace)."""
    d = Path(study_dir)
    d.mkdir(parents=True, exist_ok=True)
    df = rows_frame([r for r in rows if in_table(r)])
    for name, writer in (("results.csv", lambda p: df.to_csv(p, index=False)),
                         ("results.parquet", lambda p: _parquet(df, p))):
        atomic_write(d / name, writer)


def _parquet(df, path: str) -> None:
    # object columns of mixed types (e.g. a replayed table's extras) become strings
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object and c not in ("weights", "activations", "format"):
            out[c] = out[c].map(lambda v: v if v is None or isinstance(v, str) else str(v))
    out.to_parquet(path, index=False)


def read_table(path: str | Path):
    """Read a results table (.parquet, .csv); a missing or unreadable file is a TableError."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise TableError(f"table {str(path)!r} does not exist (expected results.parquet or .csv)")
    if path.suffix == ".parquet":
        reader = pd.read_parquet
    elif path.suffix in (".csv", ".txt"):
        reader = pd.read_csv
    else:
        raise TableError(f"table {str(path)!r}: unknown suffix {path.suffix!r} "
                         "(allowed: .parquet, .csv)")
    try:
        return reader(path)
    except Exception as exc:  # pyarrow, pandas parser, OS and unicode errors alike
        msg = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise TableError(f"table {str(path)!r} could not be read as {path.suffix[1:]}: "
                         f"{msg}") from exc
