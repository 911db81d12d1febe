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
import uuid
from pathlib import Path

from raysweep.errors import RaysweepError, StudyError
from raysweep.results import DONE, read_table, run_flops, write_table
from raysweep.sweep import reaper
from raysweep.sweep.cost import device_hours, trial_gpu
from raysweep.sweep.registry import Registry, StudyLock, reconcile
from raysweep.sweep.study import Study
from raysweep.sweep.trials import expand, trial_flops, trial_tokens
from raysweep.train.wsd import branch_checkpoint

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
            "flops": trial_flops(t), "role": t.get("role", "run"),
            "gpu": trial_gpu(study.resources.gpu, t["n_params"]),
            "device_hours": device_hours(t["n_params"], trial_tokens(t), t["weights"],
                                         t["activations"], study.resources.gpu,
                                         study.resources.cpu),
            "done": t["run_id"] in done,
        })
    return rows


def plan_summary(study: Study, rows: list[dict]) -> dict:
    """Totals of the plan; a WSD study also prices its runs trained separately.

    ``flops_separate``: the same (format, N, D, seed) runs each trained from
    scratch (``6 N D``, no trunks); ``wsd_saving``: ``1 - total / separate``.
    """
    gpu = any(r["gpu"] > 0 for r in rows)
    wsd = {}
    if any(r["role"] != "run" for r in rows):
        separate = sum(run_flops(r["n_params"], r["tokens"]) for r in rows
                       if r["role"] != "trunk")
        total = sum(r["flops"] for r in rows)
        wsd = {"flops_separate": separate, "wsd_saving": 1.0 - total / separate,
               "n_trunks": sum(r["role"] == "trunk" for r in rows)}
    return {
        **wsd,
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

        WSD branches wait: a branch is handed out (ahead of the list: it is short
        and completes a row) once its trunk's checkpoint at its branch point
        exists, so it runs beside the rest of its trunk; until then ``suggest``
        answers None ("nothing now") rather than FINISHED. Only the first waiting
        branch of each started trunk is looked at (a trunk writes its branch
        points in step order). A trunk that fails, or ends without a branch's
        checkpoint (on a cluster: storage the driver does not see), drops the
        branches it leaves waiting: ``on_drop(run_id, why)`` records each.
        """

        def __init__(self, configs: list[dict], on_drop=None):
            super().__init__(metric="loss", mode="min")
            self.configs = [c for c in configs if c.get("role") != "branch"]
            self.next = 0
            self.waiting: dict[str, list[dict]] = {}  # trunk id -> its branches by step
            for c in configs:
                if c.get("role") == "branch":
                    self.waiting.setdefault(c["trunk"], []).append(c)
            for branches in self.waiting.values():
                branches.sort(key=lambda c: c["branch_step"])
            queued = {c["run_id"] for c in self.configs}
            # trunks this run does not train (done before) have their checkpoints already
            self.started = {t for t in self.waiting if t not in queued}
            self.by_trial: dict[str, dict] = {}
            self.on_drop = on_drop

        def suggest(self, trial_id: str):
            cfg = self._ready_branch()
            if cfg is None and self.next < len(self.configs):
                cfg = self.configs[self.next]
                self.next += 1
                if cfg.get("role") == "trunk":
                    self.started.add(cfg["run_id"])
            if cfg is None:
                return None if self.waiting else Searcher.FINISHED
            self.by_trial[trial_id] = cfg
            return cfg

        def _ready_branch(self) -> dict | None:
            for trunk in self.started & self.waiting.keys():
                if branch_ready(self.waiting[trunk][0]):
                    return self._pop(trunk)
            return None

        def _pop(self, trunk: str) -> dict:
            branches = self.waiting[trunk]
            cfg = branches.pop(0)
            if not branches:
                del self.waiting[trunk]
            return cfg

        def on_trial_complete(self, trial_id, result=None, error=False):
            cfg = self.by_trial.pop(trial_id, None)
            if not cfg or cfg.get("role") != "trunk" or cfg["run_id"] not in self.waiting:
                return
            for b in list(self.waiting.pop(cfg["run_id"])):
                if not error and branch_ready(b):  # a trunk's checkpoints are all there
                    self.waiting.setdefault(cfg["run_id"], []).append(b)
                elif self.on_drop is not None:
                    why = ("its trunk failed" if error else
                           f"its trunk ended without the branch-point checkpoint "
                           f"{branch_checkpoint(b['training']['trunk_dir'], b['branch_step'])}"
                           " (on a cluster: is the study directory on storage every node "
                           "shares?)")
                    self.on_drop(b["run_id"], f"WSD branch not started: {why}")

        def save(self, checkpoint_path: str) -> None:  # the registry holds the state
            pass

        def restore(self, checkpoint_path: str) -> None:
            pass

    return PoolSearcher


def branch_ready(cfg: dict) -> bool:
    """Whether a WSD branch can start: its trunk's checkpoint at its branch point exists."""
    return cfg["branch_step"] == 0 or os.path.exists(
        branch_checkpoint(cfg["training"]["trunk_dir"], cfg["branch_step"]))


def _searcher(study: Study, pool: list[dict], pending: list[dict], out_dir: Path,
              on_drop=None):
    if study.strategy == "active":
        from raysweep.active.searcher import make_searcher

        return make_searcher(study, pool, str(out_dir))
    return _pool_searcher_cls()(pending, on_drop)  # in the order given (_tune: biggest first)


def init_ray(address: str | None = None, dashboard: bool = False, num_cpus: int | None = None,
             num_gpus: int | None = None):
    """Start a local Ray (or join ``address``); returns True if this call started it.

    Locally Ray gets every CPU of the machine (one 1-thread trial per core is the
    fastest layout on CPU, docs/cpu-scale.md) and detects GPUs itself; ``num_gpus``
    overrides (tests fake a GPU with it). ``raysweep run`` first moves itself into
    a network namespace of its own (:func:`isolate_network`), so the local Ray's
    services can only listen on loopback; the dashboard, when asked for, binds
    127.0.0.1.
    """
    for k, v in TUNE_ENV.items():
        os.environ.setdefault(k, v)
    import ray

    if ray.is_initialized():
        return False
    if dashboard:
        check_dashboard_extra()
    kw = {"log_to_driver": False, "include_dashboard": bool(dashboard),
          "configure_logging": True, "logging_level": "ERROR"}
    if dashboard:
        kw["dashboard_host"] = LOOPBACK
    if address:
        ray.init(address=address, **kw)
    else:
        if num_gpus is not None:
            kw["num_gpus"] = num_gpus
        # "local": always a new Ray of our own, never one found on the machine (another
        # user's `ray start`, a stale RAY_ADDRESS) that a local trial would land on
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, **kw)
        global _REAPER
        _REAPER = _REAPER or reaper.start()  # ends this Ray's processes if we are killed
    if dashboard:
        ctx = ray.get_runtime_context()
        url = getattr(ray, "_private", None) and ray._private.worker.get_dashboard_url()
        print(f"raysweep: Ray dashboard at http://{url or '127.0.0.1:8265'} "
              f"(node {ctx.get_node_id()[:8]})", file=sys.stderr)
    return True


LOOPBACK = "127.0.0.1"
_REAPER = None  # the watchdog of the local Ray this process started (raysweep.sweep.reaper)
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000


def isolate_network() -> str | None:
    """Move this process into a new network namespace holding only loopback (Linux).

    Why: Ray 2.60's C++ services (GCS, raylet, core workers) bind every
    interface, whatever ``_node_ip_address`` says (Ray rewrites 127.0.0.1 to the
    machine's address, and its gRPC listener is ``0.0.0.0``). Inside a namespace
    whose only interface is ``lo``, "every interface" is loopback, so a local
    sweep is unreachable from the network; children (the Ray it starts) inherit
    the namespace. Root gets a network namespace alone; other users a user
    namespace too (unprivileged, which needs this process still single-threaded,
    as it is when ``raysweep run`` starts). Returns None when isolated, else why
    not (the caller warns and the run goes on, as before).
    """
    import ctypes
    import fcntl
    import socket
    import struct

    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux-only (this is {sys.platform})"
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNET if uid == 0 else CLONE_NEWUSER | CLONE_NEWNET
    if libc.unshare(flags) != 0:
        return f"unshare failed: {os.strerror(ctypes.get_errno())}"
    try:  # from here on we are inside: without a working loopback nothing can run
        if uid != 0:  # keep our own uid and gid inside the user namespace
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                               ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as fh:
                    fh.write(text)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # bring lo up
            ifr = struct.pack("16sH14s", b"lo", 0, b"")
            up = struct.unpack("16sH14s", fcntl.ioctl(s, 0x8913, ifr))[1] | 0x1  # IFF_UP
            fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", up, b""))
    except OSError as exc:
        raise RaysweepError(f"network isolation: loopback setup failed ({exc}); allowed: "
                            "set RAYSWEEP_NO_NETNS=1 to run without it") from None
    return None


def check_dashboard_extra() -> None:
    """``--dashboard`` needs Ray's dashboard packages (the ``[dashboard]`` extra)."""
    import importlib.util

    if importlib.util.find_spec("aiohttp") is None or \
            importlib.util.find_spec("ray.dashboard") is None:
        raise RaysweepError("--dashboard: Ray's dashboard is not installed; allowed: install "
                            "the extra with `pip install -e '.[dashboard]'` (or "
                            "`pip install 'ray[default]'`), or run without --dashboard")


def local_resource_problem(study: Study, cpus: float | None = None,
                           gpus: float | None = None) -> str | None:
    """Why the study's trials could never be placed on this machine (None: they can).

    A trial asking for more CPUs or GPUs than a local Ray has waits for ever, so
    ``raysweep run`` without ``--address`` refuses it before Ray starts; ``plan``
    reports the same verdict. ``cpus`` / ``gpus`` default to this machine's.
    """
    cpus = float(os.cpu_count() or 1) if cpus is None else cpus
    gpus = float(machine_gpus()) if gpus is None else gpus
    pool = expand(study)
    need_gpu = max((trial_gpu(study.resources.gpu, t["n_params"]) for t in pool), default=0)
    if study.resources.cpu > cpus:
        return (f"{study.path}: resources.cpu: got {study.resources.cpu:g} CPUs per trial but "
                f"this machine has {cpus:g}; allowed: cpu <= {cpus:g} here, or run with "
                "--address on a cluster")
    if need_gpu > gpus:
        return (f"{study.path}: resources.gpu: got {need_gpu:g} GPU per trial but this "
                f"machine has {gpus:g}; allowed: gpu <= {gpus:g} here (0 on a CPU machine), "
                "or run with --address on a GPU cluster")
    if study.backend == "train" and study.data not in ("stdlib", "synthetic"):
        d = Path(study.data).expanduser()
        if not all((d / f).is_file() for f in ("train.bin", "val.bin", "meta.json")):
            return (f"{study.path}: data: got {study.data!r}: no corpus there (train.bin, "
                    "val.bin, meta.json); allowed: stdlib, synthetic, or a directory made by "
                    "`raysweep data prepare` (paths relative to where raysweep runs)")
    return None


def machine_gpus() -> int:
    """NVIDIA GPUs this process may use, without importing torch or starting Ray."""
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if vis is not None:
        return len([d for d in vis.split(",") if d.strip() and d.strip() != "-1"])
    return len([p for p in Path("/dev").glob("nvidia[0-9]*")])


def run_study(study: Study, out: str | Path = "runs", max_concurrent: int | None = None,
              local: bool = True, progress_every_s: float = 5.0, stream=None) -> dict:
    """Run the study's pending trials on the current Ray session; returns a summary dict.

    Phases: take the study directory's lock; check that the trials can be placed
    (before anything is written); record the resolved study and reconcile the
    registry with the table; hand Tune the pending trials; sum up.
    """
    sdir = study_dir(out, study)
    with StudyLock(sdir):
        _check_placeable(study, local)
        pool, done = _prepare_dir(study, sdir)
        pending = _pending(pool, done)
        summary = {"study": study.name, "dir": str(sdir), "n_trials": len(pool),
                   "already_done": len(pool) - len(pending)}
        if not pending:
            print(f"[{study.name}] all {len(pool)} trials already done",
                  file=stream or sys.stderr)
            return {**summary, "finished": 0, "failed": 0}
        cb = _callback(study, sdir, pool, pending, done, progress_every_s, stream)
        try:
            return {**summary, **_tune(study, sdir, pool, pending, done, cb, max_concurrent)}
        finally:
            prune_trunks(sdir, pool, Registry(sdir).done_rows())


def _pending(pool: list[dict], done: dict) -> list[dict]:
    """The trials to run: those not done, and a done WSD trunk whose checkpoints are gone
    while a branch of it is still to run (its checkpoints are deleted with its last branch)."""
    need = {t["trunk"] for t in pool if t.get("role") == "branch" and t["run_id"] not in done
            and not branch_ready(t)}
    return [t for t in pool if t["run_id"] not in done or t["run_id"] in need]


def prune_trunks(sdir: Path, pool: list[dict], done: dict) -> None:
    """Delete the checkpoint directory of every WSD trunk whose branches are all done."""
    import shutil

    open_trunks = {t["trunk"] for t in pool if t.get("role") == "branch"
                   and t["run_id"] not in done}
    for t in pool:
        if t.get("role") == "trunk" and t["run_id"] not in open_trunks:
            shutil.rmtree(t["checkpoint_dir"], ignore_errors=True)


def _check_placeable(study: Study, local: bool) -> None:
    """A local trial asking for more than this Ray has would wait for ever: refuse it."""
    import ray

    if not local or not ray.is_initialized():
        return
    have = ray.cluster_resources()
    problem = local_resource_problem(study, have.get("CPU", 0.0), have.get("GPU", 0.0))
    if problem:
        raise StudyError(problem.replace("this machine", "this Ray"))


def _prepare_dir(study: Study, sdir: Path) -> tuple[list[dict], dict]:
    """study.yaml, the registry reconciled with the table, the table; the pool and done rows."""
    sdir.mkdir(parents=True, exist_ok=True)
    registry = Registry(sdir)
    reconcile(sdir, registry)  # a table's rows the registry lacks are imported, never lost
    _save_study(study, sdir)
    pool = expand(study)
    done_all = registry.done_rows()
    ids = {t["run_id"] for t in pool}
    done = {k: r for k, r in done_all.items() if k in ids}
    if len(done) < len(done_all):
        print(f"[{study.name}] {len(done_all) - len(done)} finished runs in the registry are "
              "not trials of this study (renamed or removed): kept in registry.jsonl, left "
              "out of the table and the fit", file=sys.stderr)
    write_table(sdir, list(done.values()))  # catch up after a killed driver
    for t in pool:
        _locate(study, sdir, t)
    return pool, done


def _locate(study: Study, sdir: Path, t: dict) -> None:
    """Where a trial runs: its checkpoint directory, threads, an absolute corpus path."""
    if study.backend == "train":
        t["checkpoint_dir"] = str(sdir / "checkpoints" / t["run_id"])
    if t.get("role") == "trunk":  # its branch points, kept until its branches are done
        t["checkpoint_dir"] = str(sdir / "trunks" / t["run_id"])
    elif t.get("role") == "branch":
        t["training"]["trunk_dir"] = str(sdir / "trunks" / t["trunk"])
    t["threads"] = max(1, int(study.resources.cpu))
    if study.backend == "train" and study.data not in ("stdlib", "synthetic"):
        # Tune runs each trial in its own directory: a corpus dir relative to where
        # `raysweep run` was started must reach train() absolute (the run id, hashed
        # at expansion, keeps the path as the study wrote it)
        t["data"] = str(Path(study.data).expanduser().resolve())


def _callback(study, sdir, pool, pending, done, every_s, stream):
    from raysweep.sweep.progress import SweepCallback

    flops = {t["run_id"]: trial_flops(t) for t in pending}
    gpu = max(trial_gpu(study.resources.gpu, t["n_params"]) for t in pending)
    budget, spent0 = None, 0.0
    if study.strategy == "active":  # progress against the FLOP budget, not the whole pool
        budget = study.active.budget_flops
        spent0 = sum(trial_flops(t) for t in pool if t["run_id"] in done)
    return SweepCallback(study.name, sdir, len(pool), len(done), flops,
                         gpu if gpu > 0 else study.resources.cpu, every_s=every_s,
                         stream=stream, budget_flops=budget, spent0=spent0,
                         rows={k: r for k, r in done.items() if k not in flops},  # a re-run trunk
                         strip_results=study.strategy == "grid")


def _tuner(study, sdir, pool, pending, done, cb, max_concurrent):
    from ray import tune

    from raysweep.sweep.runners import trainable

    def resources(cfg):
        return {"cpu": study.resources.cpu,
                "gpu": trial_gpu(study.resources.gpu, cfg["n_params"])}

    fn = trainable
    if study.strategy == "active" and done:
        fn = tune.with_parameters(trainable, done_rows=done)
    return tune.Tuner(
        tune.with_resources(fn, resources),
        tune_config=tune.TuneConfig(
            search_alg=_searcher(study, pool, pending, sdir, on_drop=cb.fail),
            num_samples=len(pool) if study.strategy == "active" else len(pending),
            max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            storage_path=str(sdir / "ray"), verbose=0, callbacks=[cb],
            failure_config=tune.FailureConfig(max_failures=study.retries),
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=0)),
    )


# Trials per Tuner: Tune keeps every trial of an experiment in the driver's memory and in
# its experiment snapshot (~14 kB each, ~36 kB of driver memory measured), so a large grid
# runs as a sequence of Tuners (each costs ~5 s of start-up: 1,000 trials is the balance).
TUNER_CHUNK = 1000


def _tune(study, sdir, pool, pending, done, cb, max_concurrent) -> dict:
    """Run the pending trials (grid: in chunks, biggest first); prune Tune's storage."""
    t0 = time.monotonic()
    if study.strategy == "active":
        chunks = [pending]  # one searcher decides, one Tuner
    else:  # biggest first (LPT scheduling): the long trials do not end up alone at the end
        size = int(os.environ.get("RAYSWEEP_TUNER_CHUNK") or TUNER_CHUNK)
        chunks = _chunks(pending, size)
    interrupted = False
    try:
        for chunk in chunks:
            before = cb.finished + cb.failed
            _fit(_tuner(study, sdir, pool, chunk, done, cb, max_concurrent))
            # Ctrl-C: Tune stops the experiment gracefully and fit() returns; trials the
            # grid never finished mean the run was interrupted (active stops by itself)
            interrupted = study.strategy == "grid" and cb.finished + cb.failed - before < \
                len(chunk)
            if interrupted:
                break
            _release_memory()  # the finished Tuner's trials: give the pages back
    finally:
        cb.close()
        prune_tune_storage(sdir)
    return {"finished": cb.finished, "failed": cb.failed, "interrupted": interrupted,
            "wall_s": time.monotonic() - t0}


def _chunks(pending: list[dict], size: int) -> list[list[dict]]:
    """The grid's pending trials in Tuners of about ``size`` trials, biggest unit first.

    A unit is one trial, or a WSD trunk with its pending branches (they share a
    Tuner: a branch waits for its trunk's checkpoint); units are ordered by
    their FLOPs, largest first, and never split across Tuners.
    """
    units: dict[str, list[dict]] = {}
    for t in pending:
        units.setdefault(t.get("trunk") or t["run_id"], []).append(t)
    ordered = sorted(units.values(), key=lambda u: -sum(trial_flops(t) for t in u))
    chunks: list[list[dict]] = [[]]
    for unit in ordered:
        if chunks[-1] and len(chunks[-1]) + len(unit) > size:
            chunks.append([])
        chunks[-1].extend(sorted(unit, key=lambda t: t.get("role") == "branch"))
    return chunks


def _release_memory() -> None:
    """Collect the last Tuner's objects and return freed heap pages to the OS (glibc)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused, only not returned
        pass


def _fit(tuner) -> None:
    """Run one Tuner with Tune's per-attempt tracebacks silenced (the registry keeps errors)."""
    tune_log = logging.getLogger("ray.tune")
    level = tune_log.level
    tune_log.setLevel(logging.CRITICAL)
    try:
        tuner.fit()
    finally:
        tune_log.setLevel(level)


def prune_tune_storage(sdir: Path) -> None:
    """Delete Ray Tune's experiment directories under ``OUT/<study>/ray/``.

    Nothing resumes from them: the registry is the record of what finished, the
    active search's state is its Optuna database, and checkpoints of unfinished
    train trials live in ``OUT/<study>/checkpoints/``. Left alone they grow by a
    directory per trial and a snapshot of every trial per run (27 MB for 2,000
    simulated trials, measured).
    """
    import shutil

    root = sdir / "ray"
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and d.name.startswith("run-"):
                shutil.rmtree(d, ignore_errors=True)


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
        spent += trial_flops(t) if st != "pending" else 0.0
        f = by_format.setdefault(t["format"], {"total": 0, "done": 0, "failed": 0})
        f["total"] += 1
        f["done"] += st in DONE
        f["failed"] += st == "failed"
        if rec and rec.get("row"):
            hours += float(rec["row"].get("wall_s") or 0.0) / 3600.0
    table = next((sdir / n for n in ("results.parquet", "results.csv")
                  if (sdir / n).exists()), None)
    n_table = len(read_table(table)) if table is not None else None  # rows, not csv lines
    active = {}
    if study.strategy == "active":  # it runs part of the pool: progress is the FLOP budget
        from raysweep.active.status import active_status  # the fit: only for active studies

        active = {"active_budget_flops": study.active.budget_flops,
                  "active_spent_flops": spent,
                  **active_status(study.active, pool, state, spent)}
    return {
        **active,
        "study": study.name, "dir": str(sdir), "n_trials": len(pool),
        "done": counts["ok"] + counts["diverged"], "diverged": counts["diverged"],
        "failed": counts["failed"], "pending": counts["pending"],
        "extra_in_registry": len(set(state) - ids), "rows_in_table": n_table,
        "wall_hours": hours, "by_format": by_format,
    }
