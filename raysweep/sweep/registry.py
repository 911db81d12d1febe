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

The registry is the source of truth and nothing destroys it: a record that
does not validate (not JSON, not UTF-8, no run id, a finished status without a
row) is skipped with a warning naming its line; a table holding rows the
registry lacks (its registry deleted, say) is imported into the registry
before anything rewrites the table (:func:`reconcile`); the file is opened
without following symbolic links. One writer per study directory:
:class:`StudyLock` (``OUT/<study>/.lock``, an ``flock`` that dies with its
process) is held by ``raysweep run``; ``status``, ``plan``, ``fit`` and
``report`` only read and never take it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
import warnings
from pathlib import Path
from typing import Any

from raysweep.errors import RaysweepError
from raysweep.results import DONE, read_table, write_table

REGISTRY = "registry.jsonl"
LOCK = ".lock"


class RegistryWarning(UserWarning):
    """A registry record or table row that was skipped or imported (the run goes on)."""


def _open_nofollow(path: Path, flags: int) -> int:
    """``os.open`` that refuses a symbolic link or a directory with a one-line error."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        return fd
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RaysweepError(f"{path}: is a symbolic link; allowed: a regular file "
                                "(raysweep does not write through links)") from None
        if exc.errno == errno.EISDIR or path.is_dir():
            raise RaysweepError(f"{path}: is a directory; allowed: the study's "
                                f"{path.name} file (move the directory away)") from None
        raise


class StudyLock:
    """One writer per study directory: an exclusive ``flock`` on ``OUT/<study>/.lock``.

    The kernel drops the lock when its process dies (even by SIGKILL), so a
    stale lock file never blocks a later run. Held locks are counted per
    process, so nested acquisition by the same process (``raysweep run`` locks
    every study up front, :func:`raysweep.sweep.run.run_study` again) is fine.
    A second process gets a one-line :class:`~raysweep.errors.RaysweepError`
    naming the holder's pid.
    """

    _held: dict[str, list] = {}  # path -> [fd, depth]

    def __init__(self, study_dir: str | Path):
        self.path = Path(study_dir) / LOCK

    def __enter__(self) -> StudyLock:
        key = str(self.path.resolve())
        if key in self._held:
            self._held[key][1] += 1
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RaysweepError(
                f"{self.path.parent}: another `raysweep run` (pid {holder}) is running this "
                f"study (lock {self.path}); allowed: one run per study directory at a time "
                "(wait for it, or stop it; `raysweep status` works meanwhile)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._held[key] = [fd, 1]
        return self

    def __exit__(self, *exc) -> None:
        key = str(self.path.resolve())
        held = self._held.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del self._held[key]
            os.close(held[0])  # releases the flock


class Registry:
    """Append-only log of trial outcomes, keyed by run id."""

    def __init__(self, study_dir: str | Path):
        self.dir = Path(study_dir)
        self.path = self.dir / REGISTRY

    def records(self) -> list[dict]:
        """Every valid record in file order; invalid ones are skipped with a warning.

        A torn last line (the driver killed mid-write) is skipped silently: it is
        the expected trace of a crash, and the trial it was recording runs again.
        """
        if not os.path.lexists(self.path):
            return []
        fd = _open_nofollow(self.path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as fh:
            lines = fh.read().split(b"\n")
        out = []
        for no, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            rec, why = _parse_record(raw)
            if rec is not None:
                out.append(rec)
            elif no < len(lines) or raw.endswith(b"}"):  # not just a torn last line
                warnings.warn(f"{self.path}:{no}: skipped a registry record ({why})",
                              RegistryWarning, stacklevel=2)
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

    def append(self, run_id: str, status: str, row: dict | None = None, error: str = "",
               **extra: Any) -> None:
        """Durably append one record (fsync'd; repairs a torn last line first)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        rec = {"run_id": run_id, "status": status, "time": time.time(), "error": error,
               "row": _clean(row) if row is not None else None, **extra}
        line = json.dumps(rec, allow_nan=True, default=str) + "\n"
        fd = _open_nofollow(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        with os.fdopen(fd, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # a previous writer died mid-line
                    fh.write(b"\n")
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())


def _parse_record(raw: bytes) -> tuple[dict | None, str]:
    """(record, "") for a valid line, else (None, why)."""
    try:
        rec = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except json.JSONDecodeError:
        return None, "not JSON"
    if not isinstance(rec, dict):
        return None, "not a JSON object"
    if not isinstance(rec.get("run_id"), str) or not rec["run_id"]:
        return None, "no run_id string"
    if not isinstance(rec.get("status"), str):
        return None, "no status string"
    if rec["status"] in DONE and not isinstance(rec.get("row"), dict):
        return None, f"status {rec['status']!r} without a row object"
    if rec["status"] in DONE and rec["row"].get("run_id", rec["run_id"]) != rec["run_id"]:
        return None, "its row has another run_id"
    return rec, ""


def reconcile(study_dir: str | Path, registry: Registry | None = None) -> int:
    """Import into the registry every finished row the table has and the registry lacks.

    Run before the table is rebuilt from the registry, so a deleted or
    truncated ``registry.jsonl`` never costs the rows of an existing table.
    Reads ``results.parquet``, else ``results.csv``; a table that exists but
    cannot be read stops the run (one line: nothing is rewritten). Returns the
    number of rows imported (each announced by a warning).
    """
    d = Path(study_dir)
    registry = registry or Registry(d)
    table = next((d / n for n in ("results.parquet", "results.csv") if (d / n).exists()), None)
    if table is None:
        return 0
    try:
        df = read_table(table)
    except RaysweepError as exc:
        raise RaysweepError(f"{exc}; the run stops so as not to overwrite it (move it "
                            "away, or repair it, and run again)") from None
    if "run_id" not in df.columns:
        raise RaysweepError(f"{table}: has no run_id column; the run stops so as not to "
                            "overwrite it; allowed: a raysweep results table")
    have = registry.done_rows()
    n = 0
    for row in df.to_dict("records"):
        rid = row.get("run_id")
        status = row.get("status") if isinstance(row.get("status"), str) else "ok"
        if not isinstance(rid, str) or rid in have or status not in DONE:
            continue
        clean = {k: v for k, v in row.items() if not (isinstance(v, float) and v != v)}
        registry.append(rid, status, clean, imported_from=table.name)
        have[rid] = clean
        n += 1
    if n:
        warnings.warn(f"{table}: imported {n} rows the registry lacked into {registry.path}",
                      RegistryWarning, stacklevel=2)
    return n


def _clean(row: dict) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


class TableWriter:
    """Rebuilds the tables from the in-memory rows at most every ``min_interval_s``
    (and every ``rows / 2000`` seconds once the table is large).

    Every call to :meth:`add` follows a durable registry append, so throttling
    the (O(rows)) snapshot costs nothing in safety; :meth:`flush` at the end of a
    run writes the final state.
    """

    def __init__(self, study_dir: str | Path, rows: dict[str, dict], min_interval_s: float = 1.0):
        # rows are kept as compact JSON (half the memory of the dicts at 10,000 trials)
        self.dir, self.min_interval_s = Path(study_dir), min_interval_s
        self.rows: dict[str, bytes] = {k: _pack(v) for k, v in rows.items()}
        self._last, self._dirty = 0.0, False

    def add(self, run_id: str, row: dict[str, Any]) -> bool:
        """Record a finished row; False (and nothing written) if the run id is already there."""
        if run_id in self.rows:
            return False
        self.rows[run_id] = _pack(row)
        self._dirty = True
        # a snapshot costs O(rows): space them out as the table grows (1 s per 2,000 rows),
        # so a 10,000-trial sweep does not spend its driver rewriting tables
        if time.monotonic() - self._last >= max(self.min_interval_s, len(self.rows) / 2000):
            self.flush()
        return True

    def flush(self) -> None:
        if self._dirty or not (self.dir / "results.csv").exists():
            write_table(self.dir, [json.loads(r) for r in self.rows.values()])
            self._last, self._dirty = time.monotonic(), False


def _pack(row: dict) -> bytes:
    return json.dumps(_clean(row), allow_nan=True, default=str, separators=(",", ":")).encode()
