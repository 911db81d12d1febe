"""``raysweep plan | run | status``: the sweep's command handlers.

Each handler turns parsed arguments into calls of :mod:`raysweep.sweep.run`
and prints the result; the library code holds no argparse and prints no tables.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from raysweep.errors import RaysweepError, StudyError
from raysweep.sweep.run import (
    has_pending,
    init_ray,
    plan_rows,
    plan_summary,
    run_study,
    status_summary,
)
from raysweep.sweep.study import load_study


def cmd_plan(args) -> int:
    study = load_study(args.study)
    summary = plan_summary(study, plan_rows(study, getattr(args, "out", None)))
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    unit = "GPU-hours" if summary["device"] == "gpu" else "CPU-core-hours"
    print(f"study {study.name}: {summary['n_trials']} trials ({summary['n_done']} done), "
          f"backend {study.backend}, search {study.strategy}")
    hdr = f"{'run_id':16}  {'format':22} {'size':>6} {'N':>11} {'tokens':>13} {'seed':>4} " \
          f"{'FLOPs':>9} {'hours':>8}  done"
    print(hdr)
    for r in summary["trials"]:
        print(f"{r['run_id']:16}  {r['format'][:22]:22} {r['size']:>6} {r['n_params']:>11,} "
              f"{r['tokens']:>13,} {r['seed']:>4} {r['flops']:>9.2e} {r['device_hours']:>8.3f}  "
              f"{'yes' if r['done'] else ''}")
    print(f"total: {summary['total_flops']:.3e} FLOPs (6ND), about "
          f"{summary['device_hours']:.2f} {unit} "
          f"({summary['remaining_device_hours']:.2f} remaining); "
          "throughput model: docs/sweep.md")
    return 0


def cmd_run(args) -> int:
    studies = [load_study(p) for p in args.studies]  # all validated before anything starts
    names = [s.name for s in studies]
    if len(set(names)) != len(names):
        raise StudyError(f"run: two studies share the name {names}; allowed: distinct names")
    # a re-run of finished studies needs no Ray (starting one costs ~10 s)
    started = init_ray(args.address, args.dashboard) if any(
        has_pending(s, args.out) for s in studies) else False
    failed = 0
    try:
        for study in studies:
            s = run_study(study, args.out, args.max_concurrent, local=args.address is None)
            failed += s.get("failed", 0)
            if s.get("interrupted"):
                left = s["n_trials"] - s["already_done"] - s["finished"] - s["failed"]
                print(f"[{study.name}] interrupted with {left} trials not run; run the same "
                      "command again to resume", file=sys.stderr)
                return 130
            if not getattr(args, "no_report", False):
                _report(Path(s["dir"]))
            print(f"[{study.name}] results in {s['dir']}", file=sys.stderr)
    finally:
        if started:
            import ray

            ray.shutdown()
    return 1 if failed else 0


def _report(sdir: Path) -> None:
    """The fit and report; a failure is a warning (the finished sweep is never lost)."""
    try:
        from raysweep.fit.report import make_report

        make_report(str(sdir), bootstrap=50)
        print(f"[{sdir.name}] report: {sdir / 'report.md'}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - anything the fit/report raises
        msg = " ".join(str(exc).split())[:300]
        warnings.warn(f"report for {sdir} failed ({type(exc).__name__}: {msg}); the results "
                      f"are safe; retry with `raysweep report {sdir}`", stacklevel=1)


def cmd_status(args) -> int:
    target = Path(args.study)
    out = args.out
    if target.is_dir():  # an output directory: read its resolved study
        if not (target / "study.yaml").exists():
            raise RaysweepError(f"status: {target} has no study.yaml; allowed: a study YAML "
                                "or a study output directory")
        study, out = load_study(target / "study.yaml"), str(target.resolve().parent)
    else:
        study = load_study(target)
    s = status_summary(study, out)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"study {s['study']} ({s['dir']}): {s['done']}/{s['n_trials']} done "
          f"({s['diverged']} diverged), {s['failed']} failed, {s['pending']} pending; "
          f"{s['rows_in_table'] if s['rows_in_table'] is not None else 0} rows in the table; "
          f"{s['wall_hours']:.3f} trial-hours")
    if "active_budget_flops" in s:
        print(f"  active search: {s['active_spent_flops']:.3g} of its "
              f"{s['active_budget_flops']:.3g}-FLOP budget spent "
              f"({100 * s['active_spent_flops'] / s['active_budget_flops']:.0f}%; the pending "
              "candidates are not all meant to run)")
    for fmt, f in s["by_format"].items():
        print(f"  {fmt:28} {f['done']:>4}/{f['total']:<4} done  {f['failed']} failed")
    return 0
