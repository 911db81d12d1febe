"""``raysweep plan | run | status``: a study's trials on Ray Tune, idempotently.

``run`` in Ray Tune's plainest form: a function trainable
(:func:`raysweep.sweep.runners.trainable`) wrapped in ``tune.with_resources``, a
``Tuner`` whose ``Searcher`` hands out the study's pending trials
(:class:`PoolSearcher` for the grid: biggest first, which shortens the
makespan; ``raysweep.active.searcher.make_searcher`` for ``search.strategy: active``),
``reuse_actors=True`` (small trials are ~4x faster), retries through
``FailureConfig(max_failures=study.retries)``, and an absolute
``storage_path`` under ``OUT/<study>/ray/``.

Idempotence: the registry (:mod:`raysweep.sweep.registry`) records every finished
trial by run id (a hash of its resolved config). A run first reads it and hands
Tune only the trials that are not done; a trial that failed is tried again.
Ray Tune's own experiment restore is not used: the registry is simpler, works
when the driver was killed with SIGKILL, and survives a changed study (new
trials are added, finished ones kept).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from raysweep.errors import StudyError
from raysweep.results import DONE, run_flops, write_table
from raysweep.sweep.cost import device_hours, trial_gpu
from raysweep.sweep.registry import Registry
from raysweep.sweep.study import Study
from raysweep.sweep.trials import expand

# Tune settings that cut per-trial overhead (measured in bench/sweep.py, docs/benchmarks.md):
# no per-trial JSON/CSV/TensorBoard loggers, rare experiment-state snapshots (the registry
# is our source of truth), the classic (silent at verbose=0) output engine.
TUNE_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # Tune lets a custom Searcher have only ONE trial pending placement at a time (it may
    # want feedback first): with PoolSearcher that ran trials one by one on 2 CPUs.
    "TUNE_MAX_PENDING_TRIALS_PG": "16",
    "TUNE_GLOBAL_CHECKPOINT_S": "600",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "1e9",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def study_dir(out: str | Path, study: Study) -> Path:
    return Path(out).resolve() / study.name


# ---------------------------------------------------------------- plan


def plan_rows(study: Study, out: str | Path | None = None) -> list[dict]:
    """The trial table: labels, FLOPs, estimated device-hours, GPU share, done or not."""
    done = Registry(study_dir(out, study)).done_rows() if out else {}
    rows = []
    for t in expand(study):
        rows.append({
            "run_id": t["run_id"], "format": t["format"], "weights": t["weights"],
            "activations": t["activations"], "size": t["size"], "n_params": t["n_params"],
            "tokens": t["tokens"], "tokens_per_param": t["tokens_per_param"], "seed": t["seed"],
            "flops": run_flops(t["n_params"], t["tokens"]),
            "gpu": trial_gpu(study.resources.gpu, t["n_params"]),
            "device_hours": device_hours(t["n_params"], t["tokens"], t["weights"],
                                         t["activations"], study.resources.gpu,
                                         study.resources.cpu),
            "done": t["run_id"] in done,
        })
    return rows


def plan_summary(study: Study, rows: list[dict]) -> dict:
    gpu = any(r["gpu"] > 0 for r in rows)
    return {
        "study": study.name, "backend": study.backend, "strategy": study.strategy,
        "n_trials": len(rows), "n_done": sum(r["done"] for r in rows),
        "total_flops": sum(r["flops"] for r in rows),
        "device_hours": sum(r["device_hours"] for r in rows),
        "device": "gpu" if gpu else "cpu",
        "remaining_device_hours": sum(r["device_hours"] for r in rows if not r["done"]),
        "trials": rows,
    }


# ---------------------------------------------------------------- run


def _pool_searcher_cls():
    from ray.tune.search import Searcher

    class PoolSearcher(Searcher):
        """Hands out a fixed list of trial configs, in order, then says FINISHED.

        A failed trial is not re-proposed within the run (Tune's FailureConfig
        already retried it); the registry marks it and the next run retries it.
        """

        def __init__(self, configs: list[dict]):
            super().__init__(metric="loss", mode="min")
            self.configs, self.next = list(configs), 0

        def suggest(self, trial_id: str):
            if self.next >= len(self.configs):
                return Searcher.FINISHED
            self.next += 1
            return self.configs[self.next - 1]

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

        def save(self, checkpoint_path: str) -> None:  # the registry holds the state
            pass

        def restore(self, checkpoint_path: str) -> None:
            pass

    return PoolSearcher


def _searcher(study: Study, pool: list[dict], pending: list[dict], out_dir: Path):
    if study.strategy == "active":
        from raysweep.active.searcher import make_searcher

        return make_searcher(study, pool, str(out_dir))
    # biggest first (LPT scheduling): the long trials do not end up alone at the end
    ordered = sorted(pending, key=lambda t: -t["n_params"] * t["tokens"])
    return _pool_searcher_cls()(ordered)


def init_ray(address: str | None = None, dashboard: bool = False, num_cpus: int | None = None,
             num_gpus: int | None = None):
    """Start a local Ray (or join ``address``); returns True if this call started it.

    Locally Ray gets every CPU of the machine (one 1-thread trial per core is the
    fastest layout on CPU, cpu-scale.md) and detects GPUs itself; ``num_gpus``
    overrides (tests fake a GPU with it).
    """
    for k, v in TUNE_ENV.items():
        os.environ.setdefault(k, v)
    import ray

    if ray.is_initialized():
        return False
    kw = {"log_to_driver": False, "include_dashboard": bool(dashboard),
          "configure_logging": True, "logging_level": "ERROR"}
    if dashboard:
        kw["dashboard_host"] = "127.0.0.1"
    if address:
        ray.init(address=address, **kw)
    else:
        if num_gpus is not None:
            kw["num_gpus"] = num_gpus
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kw)
    if dashboard:
        ctx = ray.get_runtime_context()
        url = getattr(ray, "_private", None) and ray._private.worker.get_dashboard_url()
        print(f"raysweep: Ray dashboard at http://{url or '127.0.0.1:8265'} "
              f"(node {ctx.get_node_id()[:8]})", file=sys.stderr)
    return True


def run_study(study: Study, out: str | Path = "runs", max_concurrent: int | None = None,
              local: bool = True, progress_every_s: float = 5.0, stream=None) -> dict:
    """Run the study's pending trials on the current Ray session; returns a summary dict."""
    for k, v in TUNE_ENV.items():
        os.environ.setdefault(k, v)
    import ray
    from ray import tune

    from raysweep.sweep.progress import SweepCallback
    from raysweep.sweep.runners import trainable

    sdir = study_dir(out, study)
    sdir.mkdir(parents=True, exist_ok=True)
    _save_study(study, sdir)
    registry = Registry(sdir)
    done = registry.done_rows()
    write_table(sdir, list(done.values()))  # catch up after a killed driver
    pool = expand(study)
    for t in pool:
        if study.backend == "train":
            t["checkpoint_dir"] = str(sdir / "checkpoints" / t["run_id"])
        t["threads"] = max(1, int(study.resources.cpu))
        if study.backend == "train" and study.data not in ("stdlib", "synthetic"):
            # Tune runs each trial in its own directory: a corpus dir relative to where
            # `raysweep run` was started must reach train() absolute (the run id, hashed
            # at expansion, keeps the path as the study wrote it)
            t["data"] = str(Path(study.data).expanduser().resolve())
    pending = [t for t in pool if t["run_id"] not in done]
    summary = {"study": study.name, "dir": str(sdir), "n_trials": len(pool),
               "already_done": len(pool) - len(pending)}
    if not pending:
        print(f"[{study.name}] all {len(pool)} trials already done", file=stream or sys.stderr)
        return {**summary, "finished": 0, "failed": 0}
    gpu = max(trial_gpu(study.resources.gpu, t["n_params"]) for t in pending)
    have = ray.cluster_resources().get("GPU", 0)
    if local and gpu > 0 and have < gpu:  # such a trial would wait forever
        raise StudyError(f"{study.path}: resources.gpu: got {gpu} GPU per trial but this Ray "
                         f"has {have:g}; allowed: gpu <= {have:g} here (0 on a CPU machine), "
                         "or run with --address on a GPU cluster")

    def resources(cfg):
        return {"cpu": study.resources.cpu,
                "gpu": trial_gpu(study.resources.gpu, cfg["n_params"])}

    fn = trainable
    if study.strategy == "active" and done:
        fn = tune.with_parameters(trainable, done_rows=done)
    flops = {t["run_id"]: run_flops(t["n_params"], t["tokens"]) for t in pending}
    share = gpu if gpu > 0 else study.resources.cpu
    budget, spent0 = None, 0.0
    if study.strategy == "active":  # progress against the FLOP budget, not the whole pool
        from raysweep.active.options import parse_options

        budget = parse_options(dict(study.search), pool).budget_flops
        spent0 = sum(run_flops(t["n_params"], t["tokens"]) for t in pool if t["run_id"] in done)
    cb = SweepCallback(study.name, sdir, len(pool), len(done), flops, share,
                       every_s=progress_every_s, stream=stream, budget_flops=budget,
                       spent0=spent0)
    tuner = tune.Tuner(
        tune.with_resources(fn, resources),
        tune_config=tune.TuneConfig(
            search_alg=_searcher(study, pool, pending, sdir),
            num_samples=len(pool) if study.strategy == "active" else len(pending),
            max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
            storage_path=str(sdir / "ray"), verbose=0, callbacks=[cb],
            failure_config=tune.FailureConfig(max_failures=study.retries),
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=0)),
    )
    t0 = time.monotonic()
    # Tune logs every failed attempt with its traceback; the callback prints one line per
    # final failure and the registry keeps the error, so keep the display readable.
    tune_log = logging.getLogger("ray.tune")
    level = tune_log.level
    tune_log.setLevel(logging.CRITICAL)
    try:
        tuner.fit()
    finally:
        tune_log.setLevel(level)
        cb.close()
    # Ctrl-C: Tune stops the experiment gracefully and fit() returns; trials the grid
    # never finished mean the run was interrupted (the active strategy stops by itself)
    interrupted = study.strategy == "grid" and cb.finished + cb.failed < len(pending)
    return {**summary, "finished": cb.finished, "failed": cb.failed,
            "interrupted": interrupted, "wall_s": time.monotonic() - t0}


def _save_study(study: Study, sdir: Path) -> None:
    import yaml

    from raysweep.atomic import atomic_write_text

    atomic_write_text(sdir / "study.yaml", yaml.safe_dump(study.to_dict(), sort_keys=False))


def has_pending(study: Study, out: str | Path) -> bool:
    """Whether any trial of the study's pool is missing from its registry."""
    sdir = study_dir(out, study)
    done = Registry(sdir).done_rows() if sdir.exists() else {}
    return any(t["run_id"] not in done for t in expand(study))


# ---------------------------------------------------------------- status


def status_summary(study: Study, out: str | Path) -> dict:
    """Progress from the registry and the table alone (no Ray)."""
    sdir = study_dir(out, study)
    state = Registry(sdir).state()
    pool = expand(study)
    ids = {t["run_id"] for t in pool}
    counts = {"ok": 0, "diverged": 0, "failed": 0, "pending": 0}
    by_format: dict[str, dict] = {}
    hours = spent = 0.0
    for t in pool:
        rec = state.get(t["run_id"])
        st = rec["status"] if rec else "pending"
        st = st if st in counts else "failed"
        counts[st] += 1
        spent += run_flops(t["n_params"], t["tokens"]) if st != "pending" else 0.0
        f = by_format.setdefault(t["format"], {"total": 0, "done": 0, "failed": 0})
        f["total"] += 1
        f["done"] += st in DONE
        f["failed"] += st == "failed"
        if rec and rec.get("row"):
            hours += float(rec["row"].get("wall_s") or 0.0) / 3600.0
    table = sdir / "results.csv"
    n_table = None
    if table.exists():
        with open(table, encoding="utf-8") as fh:
            n_table = max(0, sum(1 for _ in fh) - 1)
    active = {}
    if study.strategy == "active":  # it runs part of the pool: progress is the FLOP budget
        from raysweep.active.options import parse_options

        active = {"active_budget_flops": parse_options(dict(study.search), pool).budget_flops,
                  "active_spent_flops": spent}
    return {
        **active,
        "study": study.name, "dir": str(sdir), "n_trials": len(pool),
        "done": counts["ok"] + counts["diverged"], "diverged": counts["diverged"],
        "failed": counts["failed"], "pending": counts["pending"],
        "extra_in_registry": len(set(state) - ids), "rows_in_table": n_table,
        "wall_hours": hours, "by_format": by_format,
    }
