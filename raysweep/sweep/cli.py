"""``raysweep plan | run | status``: the sweep's command handlers.

Each handler turns parsed arguments into calls of :mod:`raysweep.sweep.run`
and prints the result; the library code holds no argparse and prints no tables.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import warnings
from pathlib import Path

from raysweep.errors import RaysweepError, StudyError
from raysweep.sweep.registry import StudyLock
from raysweep.sweep.run import (
    check_dashboard_extra,
    has_pending,
    init_ray,
    isolate_network,
    local_resource_problem,
    plan_rows,
    plan_summary,
    run_study,
    status_summary,
    study_dir,
)
from raysweep.sweep.study import load_study


def cmd_plan(args) -> int:
    study = load_study(args.study)
    summary = plan_summary(study, plan_rows(study, getattr(args, "out", None)))
    # the verdict `raysweep run` (without --address) gives on this machine, before any work
    summary["local_problem"] = local_resource_problem(study)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    unit = "GPU-hours" if summary["device"] == "gpu" else "CPU-core-hours"
    print(f"study {study.name}: {summary['n_trials']} trials ({summary['n_done']} done), "
          f"backend {study.backend}, search {study.strategy}")
    wsd = "wsd_saving" in summary
    hdr = f"{'run_id':16}  {'format':22} {'size':>6} {'N':>11} {'tokens':>13} {'seed':>4} " \
          f"{'FLOPs':>9} {'hours':>8}  {'role    ' if wsd else ''}done"
    print(hdr)
    for r in summary["trials"]:
        role = f"{r['role']:8}" if wsd else ""
        print(f"{r['run_id']:16}  {r['format'][:22]:22} {r['size']:>6} {r['n_params']:>11,} "
              f"{r['tokens']:>13,} {r['seed']:>4} {r['flops']:>9.2e} {r['device_hours']:>8.3f}  "
              f"{role}{'yes' if r['done'] else ''}")
    print(f"total: {summary['total_flops']:.3e} FLOPs (6ND), about "
          f"{summary['device_hours']:.2f} {unit} "
          f"({summary['remaining_device_hours']:.2f} remaining); "
          "throughput model: docs/sweep.md")
    if wsd:  # FLOPs are what each trial trains itself: a branch its cooldown only
        print(f"warmup-stable-decay: {summary['n_trunks']} trunks and their branches cost "
              f"{summary['total_flops']:.3e} FLOPs; the same runs trained separately "
              f"{summary['flops_separate']:.3e}: {100 * summary['wsd_saving']:.1f}% saved")
    if summary["local_problem"]:
        print(f"not runnable on this machine without --address: {summary['local_problem']}")
    return 0


def _check_out(out: str) -> None:
    if Path(out).exists() and not Path(out).is_dir():
        raise RaysweepError(f"--out: got {out!r}: is a file; allowed: a directory (results go "
                            "to OUT/<study name>/)")


def cmd_run(args) -> int:
    """Validate every study, lock their directories, start Ray, run them one by one."""
    if args.address is None:
        _isolate(args.dashboard)  # first: it needs this process still single-threaded
    if args.dashboard:
        check_dashboard_extra()
    _check_out(args.out)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise RaysweepError(f"--max-concurrent: got {args.max_concurrent}: out of range; "
                            "allowed: an integer >= 1 (or leave it out: as many as fit)")
    studies = [load_study(p) for p in args.studies]  # all validated before anything starts
    names = [s.name for s in studies]
    if len(set(names)) != len(names):
        raise StudyError(f"run: two studies share the name {names}; allowed: distinct names")
    if args.address is None:  # a trial larger than this machine would wait for ever
        for study in studies:
            problem = local_resource_problem(study)
            if problem:
                raise StudyError(problem)
    with contextlib.ExitStack() as locks:
        for study in studies:  # a second `raysweep run` on a study directory stops here
            locks.enter_context(StudyLock(study_dir(args.out, study)))
        return _run_all(studies, args)


def _isolate(dashboard: bool) -> None:
    """A local Ray in a network namespace of its own: reachable on loopback only."""
    ray = sys.modules.get("ray")
    if os.environ.get("RAYSWEEP_NO_NETNS") == "1" or (ray and ray.is_initialized()):
        return  # asked not to, or a Ray this process already joined (it lives outside)
    if dashboard:  # the browser must reach the dashboard on the host's 127.0.0.1
        print("raysweep: --dashboard: the local Ray is not network-isolated (its services "
              "listen on every interface; Ray's token auth guards them unless RAY_AUTH_MODE="
              "disabled)", file=sys.stderr)
        return
    why = isolate_network()
    if why is None:  # Ray's C++ core then warns at every start that it found no network
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
    else:
        print(f"raysweep: warning: could not isolate the local Ray from the network ({why}); "
              "its services listen on every interface", file=sys.stderr)


@contextlib.contextmanager
def _sigterm_as_sigint():
    """SIGTERM stops a run the way Ctrl-C does (exit 130, the resume hint), not mid-write.

    Installed after ``ray.init``, which sets a SIGTERM handler of its own (a stack dump,
    then exit 1).
    """
    def handler(signum, frame):
        signal.raise_signal(signal.SIGINT)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _run_all(studies, args) -> int:
    # a re-run of finished studies needs no Ray (starting one costs ~10 s)
    started = init_ray(args.address, args.dashboard) if any(
        has_pending(s, args.out) for s in studies) else False
    with _sigterm_as_sigint():
        return _run_studies(studies, args, started)


def _run_studies(studies, args, started: bool) -> int:
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
        print(f"  {s['active_left_flops']:.3g} FLOPs left; predicted at the targets "
              f"(95% interval): " + (", ".join(
                  f"{k} {v['loss']:.4g} [{v['lo']:.4g}, {v['hi']:.4g}]"
                  for k, v in s["active_targets"].items()) or s.get("active_targets_note", "")))
    for fmt, f in s["by_format"].items():
        print(f"  {fmt:28} {f['done']:>4}/{f['total']:<4} done  {f['failed']} failed")
    return 0
