"""Benchmark: N simulated trials through the whole sweep pipeline on Ray Tune.

    python bench/sweep.py --trials 1000 [--cpus 2] [--sleep 0] [--out DIR]

Builds a simulated study of N trials (10 representations x N/10 token counts,
one size), runs it with :func:`raysweep.sweep.run.run_study` on a fresh local Ray
(Tuner, PoolSearcher, with_resources, reuse_actors, the registry and table
writer, the progress callback), then checks the registry and results table for
lost and duplicated rows, and times the same trials in a plain sequential loop
(:func:`raysweep.sweep.runners.run_trial`) for the overhead ratio. Prints one JSON
object on its last line:

    {"trials", "wall_s", "trials_per_s", "lost", "duplicated", "peak_rss_mb",
     "sequential_wall_s", "overhead_ms_per_trial", "wall_vs_sequential", "ray_init_s",
     "tune_storage_mb", "study_dir_mb", ...}

``overhead_ms_per_trial`` = (wall_s - sequential_wall_s / cpus) / trials: what
Tune adds per trial above a perfect parallel run of the same work.

``wall_s`` is the Tuner's run (Ray already started); ``ray_init_s`` is the
start-up on top. ``peak_rss_mb`` is the driver's peak resident memory during the
sweep (``peak_rss_with_checks_mb`` adds this script's own checks after it);
``tune_storage_mb`` what Ray Tune left under ``OUT/<study>/ray/`` after the run,
``study_dir_mb`` the whole study directory (registry, tables, study.yaml).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPS = [{"name": "dense", "weights": "bf16", "activations": "bf16"},
        {"grid": {"name": "w{b}a{b}", "weights": "int{b}", "activations": "int{b}",
                  "b": [2, 3, 4, 8]}},
        {"grid": {"name": "w{b}", "weights": "int{b}", "b": [2, 4]}},
        {"name": "s50", "weights": "sparse50", "activations": "bf16"},
        {"name": "n2", "weights": "noise2", "activations": "noise2"},
        {"name": "s50w4", "weights": "sparse50+int4", "activations": "bf16"}]


def make_study(n: int, sleep_s: float):
    from raysweep.sweep.study import parse_study

    k = max(1, math.ceil(n / 10))
    raw = {"version": 1, "name": "bench", "backend": "simulated", "sizes": ["d32"],
           "tokens": [100_000 + 1000 * i for i in range(k)], "seeds": [0],
           "representations": REPS, "simulated": {"sleep_s": sleep_s},
           "resources": {"cpu": 1}}
    return parse_study(raw, "<bench>")


def _du_mb(path: Path) -> float:
    """Bytes under ``path`` (files only), in MB; 0 if it does not exist."""
    if not path.exists():
        return 0.0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--sleep", type=float, default=0.0, help="simulated seconds per trial")
    ap.add_argument("--out", default=None, help="output dir (default: a temp dir)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from raysweep.results import read_table
    from raysweep.sweep.registry import Registry
    from raysweep.sweep.run import init_ray, run_study
    from raysweep.sweep.runners import run_trial
    from raysweep.sweep.trials import expand

    study = make_study(args.trials, args.sleep)
    pool = expand(study)
    out = args.out or tempfile.mkdtemp(prefix="raysweep-bench-")
    t0 = time.perf_counter()
    init_ray(num_cpus=args.cpus)
    t_init = time.perf_counter() - t0
    t1 = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        summary = run_study(study, out, progress_every_s=1e9, stream=devnull)
    wall = time.perf_counter() - t1
    rss_run = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # before the checks
    ray.shutdown()

    sdir = Path(out) / study.name
    tune_mb = _du_mb(sdir / "ray")
    dir_mb = _du_mb(sdir)
    df = read_table(sdir / "results.parquet")
    ids = {t["run_id"] for t in pool}
    lost = len(ids - set(df["run_id"]))
    duplicated = int(df["run_id"].duplicated().sum()) + len(set(df["run_id"]) - ids)
    reg_ok = [r["run_id"] for r in Registry(sdir).records() if r["status"] == "ok"]
    reg_dup = len(reg_ok) - len(set(reg_ok))

    t2 = time.perf_counter()
    for cfg in pool:
        run_trial(cfg)
    seq = time.perf_counter() - t2
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    res = {"trials": len(pool), "wall_s": round(wall, 2),
           "trials_per_s": round(len(pool) / wall, 2), "lost": lost, "duplicated": duplicated,
           "registry_duplicates": reg_dup, "peak_rss_mb": round(rss_run, 1),
           "peak_rss_with_checks_mb": round(rss, 1),
           "sequential_wall_s": round(seq, 3),
           # Tune's cost per trial above the ideal parallel time of the same work
           "overhead_ms_per_trial": round((wall - seq / args.cpus) / len(pool) * 1000, 2),
           "wall_vs_sequential": round(wall / max(seq, 1e-9), 2),
           "ray_init_s": round(t_init, 2), "cpus": args.cpus, "sleep_s": args.sleep,
           "failed": summary.get("failed", 0), "tune_storage_mb": round(tune_mb, 2),
           "study_dir_mb": round(dir_mb, 2)}
    print(json.dumps(res))
    sys.exit(0 if lost == 0 and duplicated == 0 else 1)


if __name__ == "__main__":
    main()
