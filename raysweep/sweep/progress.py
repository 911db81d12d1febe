"""The driver side of a sweep: record each finished trial, show progress, export metrics.

:class:`SweepCallback` is a Ray Tune callback running in the driver process. On
a trial's final result (the one carrying ``row_json``) it appends the row to the
run registry (durable), then to the results table (atomic snapshot), updates
the progress line and the Ray metrics. A trial that errors after its retries is
recorded as ``failed`` (re-run by the next ``raysweep run``).

The progress line (stderr, at most every ``every_s`` seconds and at the end)::

    [quickstart] 12/48 done, 2 running, 0 failed | 1m20s elapsed, ETA 3m10s

The ETA weighs trials by FLOPs (6ND): elapsed / finished FLOPs * remaining
FLOPs, since trials of one study differ in cost by 10x or more. An active
search (``budget_flops`` given) runs only part of its pool, so its line counts
against the FLOP budget instead (finished, running and failed runs all count as
spent, as the search counts them), and the ETA is for the rest of the budget::

    [demo] 40 done of 192 candidates (active), 4 running, 0 failed | 31% of the
    FLOP budget | 1m05s elapsed, ETA <= 2m24s

(``<=``: the search may stop earlier, when no affordable candidate is left or
its target is pinned).

Metrics (``ray.util.metrics``, shown on the Ray dashboard's metrics view when
Prometheus/Grafana are set up, see docs/cluster.md): counters
``raysweep_trials_finished`` and ``raysweep_trials_failed``, gauge
``raysweep_tokens_per_s`` (aggregate training tokens/s over the last minute)
and counter ``raysweep_device_hours`` (trial wall time x its GPU share, or x its
CPUs on a CPU-only trial), all tagged with the study name.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque

from ray import tune

from raysweep.results import DONE
from raysweep.sweep.registry import Registry, TableWriter


def fmt_s(s: float) -> str:
    s = int(max(0, s))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class _Metrics:
    """Ray metrics, created lazily; a no-op if the metrics agent is unavailable."""

    def __init__(self, study: str):
        self.tags = {"study": study}
        try:
            from ray.util import metrics as m

            keys = ("study",)
            self.finished = m.Counter("raysweep_trials_finished", "trials finished", keys)
            self.failed = m.Counter("raysweep_trials_failed", "trials failed", keys)
            self.tps = m.Gauge("raysweep_tokens_per_s", "aggregate training tokens/s", keys)
            self.hours = m.Counter("raysweep_device_hours", "device-hours spent", keys)
            self.ok = True
        except Exception:  # noqa: BLE001 - metrics are best effort
            self.ok = False

    def record(self, finished: int = 0, failed: int = 0, hours: float = 0.0,
               tps: float | None = None) -> None:
        if not self.ok:
            return
        try:
            if finished:
                self.finished.inc(finished, tags=self.tags)
            if failed:
                self.failed.inc(failed, tags=self.tags)
            if hours > 0:
                self.hours.inc(hours, tags=self.tags)
            if tps is not None:
                self.tps.set(tps, tags=self.tags)
        except Exception:  # noqa: BLE001
            self.ok = False


class SweepCallback(tune.Callback):
    """Records finished trials exactly once and prints a readable progress line."""

    def __init__(self, study: str, study_dir, n_total: int, n_done: int, flops_by_id: dict,
                 share: float, every_s: float = 5.0, stream=None, table_interval_s: float = 1.0,
                 budget_flops: float | None = None, spent0: float = 0.0,
                 rows: dict | None = None, strip_results: bool = False):
        self.study, self.n_total, self.share = study, n_total, share
        self.budget_flops, self.spent0 = budget_flops, float(spent0)
        self.running_ids: dict[str, str] = {}  # trial id -> run id, for running FLOPs
        self.flops_failed = 0.0
        self.registry = Registry(study_dir)
        # the table's rows: the study's finished trials (``rows``; default: every finished run)
        self.table = TableWriter(study_dir, self.registry.done_rows() if rows is None else rows,
                                 table_interval_s)
        self.flops_by_id = flops_by_id
        self.strip_results = strip_results
        self.n_done0 = n_done
        self.finished = self.failed = 0
        self.running: set[str] = set()
        self.flops_done = 0.0
        self.flops_left = float(sum(flops_by_id.values()))
        self.t0 = time.monotonic()
        self.every_s, self._last_print = every_s, 0.0
        self.stream = stream or sys.stderr
        self.metrics = _Metrics(study)
        self._tokens = deque()  # (time, tokens) of recent finishes, for tokens/s

    def __getstate__(self):  # Tune snapshots callbacks: leave out the stream and metrics
        d = dict(self.__dict__)
        d["stream"], d["metrics"] = None, None
        return d

    def __setstate__(self, d):
        d.setdefault("budget_flops", None)  # a snapshot from before these fields
        d.setdefault("spent0", 0.0)
        d.setdefault("running_ids", {})
        d.setdefault("flops_failed", 0.0)
        d.setdefault("strip_results", False)
        self.__dict__.update(d)
        self.stream = self.stream or sys.stderr
        self.metrics = self.metrics or _Metrics(self.study)

    # -- Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self.running_ids[trial.trial_id] = (getattr(trial, "config", None) or {}).get("run_id")
        self._maybe_print()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "row_json" in result:
            # its final row: done, though Tune calls on_trial_complete a little later
            self.running.discard(trial.trial_id)
            self._finish(json.loads(result["row_json"]))
            if self.strip_results:
                # recorded now; Tune keeps each trial's last result for the whole run (and
                # snapshots it): the row and Tune's copy of the config leave it. Not for a
                # searcher that reads the final result (the active search does)
                result.pop("row_json")
                result.pop("config", None)
        elif "failed_json" in result:  # a trial that reports its own (final) failure
            self.running.discard(trial.trial_id)
            rec = json.loads(result["failed_json"])
            self.fail(rec["run_id"], rec["error"])

    def fail(self, rid: str, error: str) -> None:
        """Record a trial (or a WSD branch that cannot start) as failed, with why."""
        self.registry.append(rid, "failed", error=error)
        self.failed += 1
        self.flops_left -= self.flops_by_id.get(rid, 0.0)
        self.flops_failed += self.flops_by_id.get(rid, 0.0)
        self.metrics.record(failed=1)
        print(f"[{self.study}] trial {rid} failed: {error[-200:]}", file=self.stream, flush=True)
        self._maybe_print(force=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self._maybe_print()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.fail(trial.config.get("run_id", "?"), _error_text(trial))

    def on_experiment_end(self, trials, **info):
        self.table.flush()  # the sweep may go on with another Tuner; it calls close()

    # -- bookkeeping
    def _finish(self, row: dict) -> None:
        rid = row["run_id"]
        status = row.get("status") or "ok"
        if rid in self.table.rows:  # already recorded (resume, or a duplicate report)
            return
        self.registry.append(rid, status if status in DONE else "ok", row)
        self.table.add(rid, row)
        self.finished += 1
        f = self.flops_by_id.get(rid, 0.0)
        self.flops_done += f
        self.flops_left -= f
        wall = float(row.get("wall_s") or 0.0)
        now = time.monotonic()
        self._tokens.append((now, float(row.get("tokens") or 0)))
        while self._tokens and now - self._tokens[0][0] > 60:
            self._tokens.popleft()
        span = max(now - self._tokens[0][0], now - self.t0, 1e-9) if self._tokens else 1.0
        tps = sum(t for _, t in self._tokens) / min(span, 60.0)
        self.metrics.record(finished=1, hours=wall * self.share / 3600.0, tps=tps)
        self._maybe_print()

    def line(self) -> str:
        done = self.n_done0 + self.finished
        el = time.monotonic() - self.t0
        if self.budget_flops:
            return self._active_line(done, el)
        eta = "?"
        if self.flops_done > 0 and self.flops_left > 0:
            eta = fmt_s(el / self.flops_done * self.flops_left)
        elif self.flops_left <= 0:
            eta = "0s"
        return (f"[{self.study}] {done}/{self.n_total} done, {len(self.running)} running, "
                f"{self.failed} failed | {fmt_s(el)} elapsed, ETA {eta}")

    def _active_line(self, done: int, el: float) -> str:
        running = sum(self.flops_by_id.get(self.running_ids.get(t), 0.0) for t in self.running)
        spent = self.spent0 + self.flops_done + self.flops_failed + running
        left = max(self.budget_flops - spent, 0.0)
        eta = "?"
        if left <= 0 and not self.running:
            eta = "0s"
        elif self.flops_done > 0:
            # the rest of the budget plus the runs in flight, at this session's FLOPs/s
            eta = "<= " + fmt_s(el / self.flops_done * (left + running))
        pct = 100.0 * min(spent / self.budget_flops, 1.0)
        return (f"[{self.study}] {done} done of {self.n_total} candidates (active), "
                f"{len(self.running)} running, {self.failed} failed | {pct:.0f}% of the FLOP "
                f"budget | {fmt_s(el)} elapsed, ETA {eta}")

    def _maybe_print(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_print >= self.every_s:
            self._last_print = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        """Write the final table and progress line (idempotent)."""
        self.table.flush()
        self.running.clear()
        if not getattr(self, "_closed", False):
            self._closed = True
            self._maybe_print(force=True)


def _error_text(trial) -> str:
    """The end of the trial's error trace (Tune writes it to ``trial.error_file``)."""
    text = ""
    try:
        with open(trial.error_file, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except Exception:  # noqa: BLE001 - no local error file (e.g. remote storage)
        try:
            text = str(trial.get_error() or "")
        except Exception:  # noqa: BLE001
            text = ""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    text = " | ".join(lines[-3:])
    return text[-500:] or "trial failed (see the Ray Tune trial log)"
