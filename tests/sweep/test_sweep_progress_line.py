"""The progress line: a trial whose final row arrived is done, not also running."""

import io
import json
from types import SimpleNamespace

from raysweep.sweep.progress import SweepCallback


def _trial(tid, rid):
    return SimpleNamespace(trial_id=tid, config={"run_id": rid})


def test_finished_trial_is_not_counted_as_running(tmp_path):
    out = io.StringIO()
    cb = SweepCallback("demo", tmp_path, n_total=3, n_done=0,
                       flops_by_id={"r1": 1.0, "r2": 1.0, "r3": 2.0}, share=1.0, every_s=1e9,
                       stream=out)
    a, b, c = _trial("t1", "r1"), _trial("t2", "r2"), _trial("t3", "r3")
    for t in (a, b, c):
        cb.on_trial_start(0, [], t)
    assert "0/3 done, 3 running, 0 failed" in cb.line()
    row = {"run_id": "r1", "status": "ok", "loss": 2.0, "tokens": 100, "wall_s": 1.0}
    cb.on_trial_result(0, [], a, {"row_json": json.dumps(row)})
    # Tune has not called on_trial_complete yet: the line must still add up to 3
    assert "1/3 done, 2 running, 0 failed" in cb.line()
    cb.on_trial_result(0, [], b, {"failed_json": json.dumps({"run_id": "r2",
                                                             "error": "boom"})})
    assert "1/3 done, 1 running, 1 failed" in cb.line()
    cb.on_trial_complete(0, [], a)
    cb.on_trial_complete(0, [], b)
    assert "1/3 done, 1 running, 1 failed" in cb.line()
    cb.close()
    assert "r2 failed: boom" in out.getvalue()


def test_active_search_line_counts_against_the_flop_budget(tmp_path):
    """An active search runs part of its pool: the line shows the share of the FLOP
    budget spent (done + failed + running, as the search counts it), not done/pool,
    and the ETA covers the rest of the budget at this session's FLOPs/s."""
    cb = SweepCallback("demo", tmp_path, n_total=100, n_done=2,
                       flops_by_id={"r1": 10.0, "r2": 10.0, "r3": 20.0}, share=1.0,
                       every_s=1e9, stream=io.StringIO(), budget_flops=100.0, spent0=20.0)
    a, b, c = _trial("t1", "r1"), _trial("t2", "r2"), _trial("t3", "r3")
    for t in (a, b, c):
        cb.on_trial_start(0, [], t)
    assert "2 done of 100 candidates (active), 3 running, 0 failed | 60% of the FLOP budget" \
        in cb.line() and "ETA ?" in cb.line()
    cb.t0 -= 10.0  # 10 s elapsed
    cb.on_trial_result(0, [], a, {"row_json": json.dumps(
        {"run_id": "r1", "status": "ok", "loss": 2.0, "tokens": 1, "wall_s": 1.0})})
    cb.on_trial_result(0, [], b, {"failed_json": json.dumps({"run_id": "r2", "error": "x"})})
    line = cb.line()
    # spent: 20 before + 10 done + 10 failed + 20 running = 60; left 40 + 20 in flight
    # at 10 FLOPs per 10 s -> about 60 s
    assert "3 done of 100 candidates (active), 1 running, 1 failed | 60% of the FLOP budget" \
        in line
    assert "ETA <= 1m0" in line or "ETA <= 59s" in line
    cb.on_trial_result(0, [], c, {"row_json": json.dumps(
        {"run_id": "r3", "status": "ok", "loss": 2.0, "tokens": 1, "wall_s": 1.0})})
    cb.budget_flops = 60.0
    assert "100% of the FLOP budget" in cb.line() and "ETA 0s" in cb.line()
    cb.close()
