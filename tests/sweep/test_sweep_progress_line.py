"""The progress line: a trial whose final row arrived is done, not also running."""

import io
import json
from types import SimpleNamespace

from raysweep.progress import SweepCallback


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
