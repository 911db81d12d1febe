"""The run registry and the results table: every finished trial recorded exactly once.

Layout of a study's output directory ``OUT/<study>/``::

    registry.jsonl     one JSON line per finished or failed trial (the source of truth)
    results.csv        the results table (docs/architecture.md), rebuilt from the registry
    results.parquet    the same table in parquet
    study.yaml         the resolved study
    ray/               Ray Tune's storage_path (absolute)
    checkpoints/<id>/  train-backend checkpoints, one directory per run id

Why a JSON-lines registry: appending one line (``write`` + ``fsync``) is the
cheapest durable record of a trial, and a line either is whole or is detected as
torn (it does not parse) when the driver is killed mid-write. The tables are
snapshots of the registry, each written to a temporary file in the same
directory and renamed over the old one (``os.replace`` is atomic on POSIX), so a
reader never sees half a table. If the driver dies between a registry append
and the next snapshot, the next ``raysweep run`` (or ``status``) rebuilds the
snapshot from the registry: no row is lost. Rows are keyed by run id and the
first successful record wins, so no row is ever duplicated even if a trial
reports twice (a retry racing a node failure).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from raysweep.results import DONE, write_table


class Registry:
    """Append-only log of trial outcomes, keyed by run id."""

    def __init__(self, study_dir: str | Path):
        self.dir = Path(study_dir)
        self.path = self.dir / "registry.jsonl"

    def records(self) -> list[dict]:
        """Every whole record in file order (a torn last line is skipped)."""
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and "run_id" in rec:
                    out.append(rec)
        return out

    def state(self) -> dict[str, dict]:
        """run id -> its decisive record: the first finished one, else the last failure."""
        state: dict[str, dict] = {}
        for rec in self.records():
            prev = state.get(rec["run_id"])
            if prev is None or prev.get("status") not in DONE:
                state[rec["run_id"]] = rec
        return state

    def done_rows(self) -> dict[str, dict]:
        """run id -> result row of every finished trial."""
        return {k: r["row"] for k, r in self.state().items() if r.get("status") in DONE}

    def append(self, run_id: str, status: str, row: dict | None = None, error: str = "") -> None:
        """Durably append one record (fsync'd; repairs a torn last line first)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        rec = {"run_id": run_id, "status": status, "time": time.time(), "error": error,
               "row": _clean(row) if row is not None else None}
        line = json.dumps(rec, allow_nan=True) + "\n"
        with open(self.path, "ab+") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # a previous writer died mid-line
                    fh.write(b"\n")
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())


def _clean(row: dict) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


class TableWriter:
    """Rebuilds the tables from the in-memory rows at most every ``min_interval_s``.

    Every call to :meth:`add` follows a durable registry append, so throttling
    the (O(rows)) snapshot costs nothing in safety; :meth:`flush` at the end of a
    run writes the final state.
    """

    def __init__(self, study_dir: str | Path, rows: dict[str, dict], min_interval_s: float = 1.0):
        self.dir, self.rows, self.min_interval_s = Path(study_dir), dict(rows), min_interval_s
        self._last, self._dirty = 0.0, False

    def add(self, run_id: str, row: dict[str, Any]) -> bool:
        """Record a finished row; False (and nothing written) if the run id is already there."""
        if run_id in self.rows:
            return False
        self.rows[run_id] = row
        self._dirty = True
        if time.monotonic() - self._last >= self.min_interval_s:
            self.flush()
        return True

    def flush(self) -> None:
        if self._dirty or not (self.dir / "results.csv").exists():
            write_table(self.dir, list(self.rows.values()))
            self._last, self._dirty = time.monotonic(), False
