"""An interrupted `raysweep run` (SIGKILL, SIGINT or SIGTERM of the driver) resumes, every row once.

Each case runs the CLI in its own process group (its own local Ray), interrupts
it once a few trials have landed in the registry, re-runs it to completion and
checks the results table: every trial of the study exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from raysweep.sweep.registry import Registry
from raysweep.sweep.study import load_study
from raysweep.sweep.trials import expand

STUDY = {"version": 1, "name": "intr", "backend": "simulated", "sizes": ["2x32", "2x48"],
         "tokens_per_param": [10, 20, 40], "seeds": [0, 1],
         "representations": [{"name": "dense"}, {"name": "w4a4", "weights": "int4",
                                                 "activations": "int4"}],
         "simulated": {"sleep_s": 0.4}}  # 24 trials, about 5 s on 2 workers


def _cmd(study, out):
    return [sys.executable, "-m", "raysweep", "run", str(study), "--out", str(out), "--no-report"]


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # our own process group: leftover Ray processes
    except ProcessLookupError:
        pass


def _start(tmp_path):
    """The CLI on the study in its own process group: (study, out, registry, process)."""
    study = tmp_path / "intr.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd(study, out), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return study, out, Registry(out / "intr"), proc


def _wait_for_records(proc, reg, n: int) -> None:
    deadline = time.monotonic() + 90
    while len(reg.records()) < n:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, f"{n} trials did not land in 90 s"
        time.sleep(0.1)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM],
                         ids=["sigkill", "sigint", "sigterm"])
def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path, sig):
    study, out, reg, proc = _start(tmp_path)
    try:
        _wait_for_records(proc, reg, 4)
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
    finally:
        _kill_group(proc)
    n_first = len(reg.records())
    assert n_first < 24, "the run finished before it was interrupted"
    if sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or a kill: clean stop, exit 130
        err = proc.stderr.read().decode()
        assert proc.returncode == 130, err[-2000:]
        assert "run the same command again to resume" in err and "Traceback" not in err

    res = subprocess.run(_cmd(study, out), capture_output=True, timeout=120, start_new_session=True)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    ids = {t["run_id"] for t in expand(load_study(study))}
    for name in ("results.parquet", "results.csv"):
        df = pd.read_parquet(out / "intr" / name) if name.endswith("parquet") \
            else pd.read_csv(out / "intr" / name)
        assert len(df) == 24 and df["run_id"].is_unique and set(df["run_id"]) == ids
    ok = [r["run_id"] for r in reg.records() if r["status"] == "ok"]
    assert sorted(ok) == sorted(ids)  # the second run trained only what was missing


def _session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (field 6 of /proc/PID/stat), zombies excluded."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(d))
    return out


@pytest.mark.timeout(180)
def test_no_process_outlives_a_killed_driver_by_a_minute(tmp_path):
    """SIGKILL the driver alone (not its group): Ray's processes must follow it."""
    _, _, reg, proc = _start(tmp_path)
    try:
        _wait_for_records(proc, reg, 2)
        assert len(_session_members(proc.pid)) > 1  # Ray's processes are up
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        t0 = time.monotonic()
        while _session_members(proc.pid) and time.monotonic() - t0 < 60:
            time.sleep(0.5)
        left = _session_members(proc.pid)
        assert not left, [open(f"/proc/{p}/cmdline", "rb").read()[:80] for p in left]
    finally:
        _kill_group(proc)
