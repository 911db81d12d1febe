"""Warmup-stable-decay studies in the sweep: expansion, pricing, scheduling, resume.

A WSD study (``training: {schedule: {kind: wsd}}``) expands each (format, N,
seed) into a trunk trial and one branch trial per D; a branch starts once its
trunk's branch-point checkpoint exists; the table holds the branches only.
"""

from __future__ import annotations

import json
import math
import sys

import pandas as pd
import pytest

from raysweep.errors import StudyError
from raysweep.results import run_flops
from raysweep.sweep.registry import Registry
from raysweep.sweep.study import parse_study
from raysweep.sweep.trials import expand, trial_flops
from raysweep.train.wsd import branch_checkpoint

TOKENS = [325000, 650000, 1300000]


def make(name, backend="simulated", **over):
    raw = {"version": 1, "name": name, "backend": backend, "sizes": ["2x32", "2x48"],
           "tokens": TOKENS, "seeds": [0, 1], "retries": 0,
           "training": {"schedule": {"kind": "wsd", "cooldown": 0.2}},
           "representations": [{"name": "dense"},
                               {"name": "w4a4", "weights": "int4", "activations": "int4"}]}
    raw.update(over)
    return parse_study(raw, f"<{name}>")


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from raysweep.sweep.run import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def run(study, out):
    from raysweep.sweep.run import run_study

    return run_study(study, out, progress_every_s=0.0, stream=sys.stderr)


# ----------------------------------------------------------------- expansion and plan


def test_each_format_size_seed_is_one_trunk_and_a_branch_per_d():
    trials = expand(make("x"))
    trunks = [t for t in trials if t["role"] == "trunk"]
    branches = [t for t in trials if t["role"] == "branch"]
    assert len(trunks) == 2 * 2 * 2 and len(branches) == 3 * len(trunks)
    for tr in trunks:
        mine = sorted((b for b in branches if b["trunk"] == tr["run_id"]),
                      key=lambda b: b["tokens"])
        assert [b["tokens"] for b in mine] == TOKENS
        assert {(b["format"], b["size"], b["seed"]) for b in mine} == \
            {(tr["format"], tr["size"], tr["seed"])}
        # the trunk trains to the last branch point; each branch only its cooldown
        assert tr["branch_points"] == [b["branch_step"] for b in mine]
        assert tr["train_tokens"] < max(TOKENS)
        assert all(b["train_tokens"] < 0.25 * b["tokens"] for b in mine)
        assert tr["training"]["branches"] == TOKENS[:-1]
        assert all(b["training"]["trunk_id"] for b in mine)
    assert len({t["run_id"] for t in trials}) == len(trials)


def test_a_branch_is_not_the_cosine_run_of_its_d():
    cosine = make("x", training={})
    ids = {t["run_id"] for t in expand(cosine)}
    assert not ids & {t["run_id"] for t in expand(make("x"))}
    assert all("role" not in t for t in expand(cosine))


def test_plan_prices_both_ways():
    from raysweep.sweep.run import plan_rows, plan_summary

    s = make("x")
    summary = plan_summary(s, plan_rows(s))
    rows = summary["trials"]
    assert summary["n_trunks"] == 8
    separate = sum(run_flops(r["n_params"], r["tokens"]) for r in rows if r["role"] == "branch")
    assert summary["flops_separate"] == pytest.approx(separate)
    assert summary["total_flops"] == pytest.approx(sum(trial_flops(t) for t in expand(s)))
    # 20% cooldowns over D = 1, 2, 4 units: 0.8 * 4 + 0.2 * 7 = 4.6 of 7 units
    assert summary["wsd_saving"] == pytest.approx(1 - 4.6 / 7, abs=0.01)


def test_plan_cli_prints_the_saving(capsys, tmp_path):
    import yaml

    from raysweep.cli import main

    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump({
        "version": 1, "name": "w", "backend": "simulated", "sizes": ["2x32"], "tokens": TOKENS,
        "training": {"schedule": {"kind": "wsd", "cooldown": "0.2", "decay": "linear"}},
        "representations": [{"name": "dense"}]}))
    assert main(["plan", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["wsd_saving"] == pytest.approx(1 - 4.6 / 7, abs=0.01)
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 trunks and their branches" in out
    assert f"{100 * summary['wsd_saving']:.1f}% saved" in out


@pytest.mark.parametrize("over, key", [
    ({"search": {"strategy": "active", "budget_flops": 1e12}}, "search.strategy"),
    ({"training": {"schedule": {"kind": "wsd", "warmup_tokens": 1000}}},
     "training.schedule.warmup_tokens"),
    ({"training": {"schedule": {"kind": "wsd", "cooldown": 1.5}}}, "training.schedule"),
    ({"training": {"trunk_id": "abc"}}, "training"),
])
def test_bad_wsd_studies_name_the_key(over, key):
    with pytest.raises(StudyError) as exc:
        make("bad", **over)
    assert key in str(exc.value)


def test_replay_cannot_be_wsd(tmp_path):
    table = tmp_path / "t.csv"
    pd.DataFrame([{"weights": "bf16", "activations": "bf16", "n_params": 23712,
                   "tokens": 325000, "seed": 0, "loss": 3.0}]).to_csv(table, index=False)
    with pytest.raises(StudyError, match="backend"):
        make("bad", backend="replay", replay={"table": str(table)})


def test_chunks_keep_a_trunk_with_its_branches():
    from raysweep.sweep.run import _chunks

    trials = expand(make("x"))
    chunks = _chunks(trials, 5)
    where = {t["run_id"]: i for i, c in enumerate(chunks) for t in c}
    for t in trials:
        if t["role"] == "branch":
            assert where[t["run_id"]] == where[t["trunk"]]
    for c in chunks:  # the trunk comes before its branches
        seen = set()
        for t in c:
            assert t["role"] == "trunk" or t["trunk"] in seen
            seen.add(t["run_id"])
    assert sum(len(c) for c in chunks) == len(trials)


# ----------------------------------------------------------------- the searcher


def _located(tmp_path):
    from raysweep.sweep.run import _locate

    s = make("x", sizes=["2x32"], seeds=[0], representations=[{"name": "dense"}])
    trials = expand(s)
    for t in trials:
        _locate(s, tmp_path, t)
    return trials


def test_branches_wait_for_their_checkpoint(tmp_path):
    from ray.tune.search import Searcher

    from raysweep.sweep.run import _pool_searcher_cls

    trials = _located(tmp_path)
    trunk = next(t for t in trials if t["role"] == "trunk")
    branches = sorted((t for t in trials if t["role"] == "branch"),
                      key=lambda t: t["branch_step"])
    s = _pool_searcher_cls()(trials)
    assert s.suggest("t0")["run_id"] == trunk["run_id"]
    assert s.suggest("t1") is None  # nothing ready, something waiting: not FINISHED
    d = trunk["checkpoint_dir"]
    assert d == branches[0]["training"]["trunk_dir"]
    import os

    os.makedirs(d)
    open(branch_checkpoint(d, branches[0]["branch_step"]), "w").close()
    assert s.suggest("t2")["run_id"] == branches[0]["run_id"]
    assert s.suggest("t3") is None
    for b in branches[1:]:
        open(branch_checkpoint(d, b["branch_step"]), "w").close()
    assert {s.suggest("t4")["run_id"], s.suggest("t5")["run_id"]} == \
        {b["run_id"] for b in branches[1:]}
    assert s.suggest("t6") == Searcher.FINISHED


@pytest.mark.parametrize("error", [True, False])
def test_a_trunk_that_fails_or_leaves_no_checkpoint_drops_its_branches(tmp_path, error):
    from raysweep.sweep.run import _pool_searcher_cls

    trials = _located(tmp_path)
    dropped = []
    s = _pool_searcher_cls()(trials, on_drop=lambda rid, why: dropped.append((rid, why)))
    s.suggest("t0")
    s.on_trial_complete("t0", error=error)
    assert {rid for rid, _ in dropped} == {t["run_id"] for t in trials if t["role"] == "branch"}
    assert all(("trunk failed" in why) == error for _, why in dropped)
    assert all(error or "shares" in why for _, why in dropped)
    assert s.suggest("t1") == s.FINISHED


# ----------------------------------------------------------------- end to end


def test_simulated_wsd_study_runs_resumes_and_prunes(ray_session, tmp_path):
    s = make("e2e")
    res = run(s, tmp_path)
    trials = expand(s)
    assert res["finished"] == len(trials) and res["failed"] == 0
    df = pd.read_parquet(tmp_path / "e2e" / "results.parquet")
    assert len(df) == 24 and (df["role"] == "branch").all()  # trunks stay in the registry
    trunk_ids = {t["run_id"] for t in trials if t["role"] == "trunk"}
    assert set(df["trunk_id"]) == trunk_ids
    assert set(df["branch_step"]) == {t["branch_step"] for t in trials if "branch_step" in t}
    assert (df["cooldown"] == 0.2).all() and (df["schedule"] == "wsd").all()
    done = Registry(tmp_path / "e2e").done_rows()
    assert trunk_ids <= set(done)
    assert not any((tmp_path / "e2e" / "trunks").iterdir())  # every branch done: pruned
    again = run(s, tmp_path)
    assert again["finished"] == 0 and again["already_done"] == len(trials)


def test_a_lost_branch_reruns_alone_and_a_trunk_only_when_needed(ray_session, tmp_path):
    s = make("lost", sizes=["2x32"], seeds=[0], representations=[{"name": "dense"}])
    run(s, tmp_path)
    sdir = tmp_path / "lost"
    lines = (sdir / "registry.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    branch = next(r for r in recs if r["row"]["role"] == "branch")
    # forget one branch: its trunk's checkpoints were pruned, so the trunk runs again
    (sdir / "registry.jsonl").write_text(
        "".join(x + "\n" for x, r in zip(lines, recs) if r["run_id"] != branch["run_id"]))
    (sdir / "results.csv").unlink()
    (sdir / "results.parquet").unlink()
    res = run(s, tmp_path)
    assert res["finished"] == 2 and res["failed"] == 0
    df = pd.read_parquet(sdir / "results.parquet")
    assert len(df) == 3 and df["run_id"].is_unique
    lost_loss = branch["row"]["loss"]
    assert math.isclose(df.set_index("run_id").loc[branch["run_id"], "loss"], lost_loss)


def test_trained_branches_equal_wsd_runs_from_scratch(ray_session, tmp_path):
    """Through the sweep (trunk checkpoints under OUT/<study>/trunks/), each branch's
    final loss is bit for bit that of a WSD run of its D trained alone."""
    from raysweep.sweep.trials import train_config
    from raysweep.train.loop import train

    s = make("trained", backend="train", data="synthetic", sizes=["2x16"], seeds=[0],
             tokens=[20000, 40000], representations=[{"name": "dense"}],
             training={"schedule": {"kind": "wsd", "cooldown": 0.2}, "batch_size": 4,
                       "seq_len": 32})
    res = run(s, tmp_path)
    assert res["finished"] == 3 and res["failed"] == 0
    df = pd.read_parquet(tmp_path / "trained" / "results.parquet").set_index("run_id")
    assert len(df) == 2
    for t in expand(s):
        if t["role"] != "branch":
            continue
        alone = train_config(t)
        alone["training"] = None
        alone = {k: v for k, v in alone.items() if k not in ("trunk_id", "training")}
        row = train(alone)
        assert row["role"] == "run"
        assert row["loss"] == df.loc[t["run_id"], "loss"]
    assert not any((tmp_path / "trained" / "trunks").iterdir())


@pytest.mark.timeout(240)
def test_killed_wsd_run_resumes_every_branch_once(tmp_path):
    """SIGKILL of the driver mid-study, then the same command: every branch row once,
    no trial recorded twice, every trunk's checkpoints pruned at the end."""
    import os
    import signal
    import subprocess
    import time

    import yaml

    from raysweep.sweep.study import load_study

    raw = {"version": 1, "name": "kill", "backend": "simulated", "sizes": ["2x32", "2x48"],
           "tokens": TOKENS, "seeds": [0, 1], "simulated": {"sleep_s": 0.4},
           "training": {"schedule": {"kind": "wsd"}},
           "representations": [{"name": "dense"}]}
    study = tmp_path / "kill.yaml"
    study.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "raysweep", "run", str(study), "--out", str(out), "--no-report"]
    reg = Registry(out / "kill")
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(reg.records()) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "3 trials did not land in 120 s"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    trials = expand(load_study(study))
    assert len(reg.records()) < len(trials), "the run finished before it was killed"
    res = subprocess.run(cmd, capture_output=True, timeout=180, start_new_session=True)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    df = pd.read_parquet(out / "kill" / "results.parquet")
    branches = {t["run_id"] for t in trials if t["role"] == "branch"}
    assert len(df) == len(branches) and set(df["run_id"]) == branches
    ok = [r["run_id"] for r in reg.records() if r["status"] == "ok"]
    assert sorted(ok) == sorted(t["run_id"] for t in trials)  # each trial once
    assert not any((out / "kill" / "trunks").iterdir())
