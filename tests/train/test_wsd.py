"""Warmup-stable-decay: the schedule's shape, its config, trunks that checkpoint at their
branch points, branches bit-exact with WSD runs from scratch, resume of both, the rows'
WSD columns and the FLOPs of a trunk family against separate runs."""

from __future__ import annotations

import math
import os

import pytest

from raysweep.errors import RaysweepError
from raysweep.results import COLUMNS, rows_frame, run_id
from raysweep.train.config import resolve_config
from raysweep.train.loop import Plan, TrainConfig, lr_at, train
from raysweep.train.wsd import (
    branch_checkpoint,
    branch_step,
    cooldown_steps,
    decay_factor,
    wsd_configs,
    wsd_lr,
)

TPS = 8 * 64  # tokens per step of BASE
BASE = {"size": "2x32", "data": "synthetic", "seq_len": 64, "eval_every": 5}
DS = [20 * TPS, 40 * TPS]  # 20 and 40 steps; cooldown 0.25: branch points 15 and 30


class Killed(Exception):
    pass


def _kill_at(step):
    def report(r):
        if r["step"] == step and not r.get("done"):
            raise Killed

    return report


def _family(tmp_path, base=BASE, ds=DS, **kw):
    kw.setdefault("cooldown", 0.25)
    kw.setdefault("decay", "linear")
    return wsd_configs(dict(base), ds, trunk_dir=str(tmp_path / "trunk"), **kw)


# ------------------------------------------------------------------ the schedule


@pytest.mark.parametrize("decay", ["linear", "sqrt", "cosine"])
def test_wsd_lr_warms_up_holds_then_decays_to_zero(decay):
    warmup, start, steps, peak = 10, 80, 100, 2.0
    lrs = [wsd_lr(s, peak, warmup, start, steps, decay) for s in range(steps)]
    assert lrs[:warmup] == pytest.approx([peak * (s + 1) / warmup for s in range(warmup)])
    assert all(lr == peak for lr in lrs[warmup:start])  # the stable phase: exactly the peak
    cool = lrs[start:]
    assert all(a > b for a, b in zip(cool, cool[1:]))  # strictly decreasing
    assert 0 < cool[-1] < 0.1 * peak and cool[0] < peak
    u = [(s - start + 1) / (steps - start + 1) for s in range(start, steps)]
    assert cool == pytest.approx([peak * decay_factor(x, decay) for x in u])


def test_decay_kinds_differ_as_defined():
    assert decay_factor(0.25, "linear") == 0.75
    assert decay_factor(0.25, "sqrt") == 0.5
    assert decay_factor(0.5, "cosine") == pytest.approx(0.5)
    assert decay_factor(0.0, "sqrt") == 1.0 and decay_factor(1.0, "linear") == 0.0
    with pytest.raises(RaysweepError, match="'schedule.decay'.*linear, sqrt, cosine"):
        decay_factor(0.5, "exp")


def test_branch_point_is_the_cooldowns_start():
    assert cooldown_steps(100, 0.2) == 20 and branch_step(100, 0.2) == 80
    assert branch_step(40, 0.25) == 30 and branch_step(20, 0.25) == 15
    assert cooldown_steps(10, 0.25) == 3  # 2.5 rounds half up, not to even
    assert branch_step(7, 0.0) == 7


def test_plan_wsd_and_cosine():
    cos = Plan.of(TrainConfig.resolve({**BASE, "tokens": 40 * TPS}), 1000)
    assert cos.decay_start is None and cos.role == "run" and cos.warmup == 4
    assert [cos.lr(s, 1.0) for s in range(40)] == [lr_at(s, 40, 1.0, 4) for s in range(40)]
    wsd = Plan.of(TrainConfig.resolve({**BASE, "tokens": 40 * TPS,
                                       "schedule": {"kind": "wsd", "cooldown": 0.25}}), 1000)
    assert (wsd.steps, wsd.decay_start, wsd.warmup, wsd.decay) == (40, 30, 4, "sqrt")
    assert wsd.lr(29, 1.0) == 1.0 and wsd.lr(30, 1.0) < 1.0
    trunk = Plan.of(TrainConfig.resolve({
        **BASE, "tokens": 40 * TPS, "branches": [20 * TPS], "checkpoint_dir": "x",
        "schedule": {"kind": "wsd", "cooldown": 0.25, "warmup_tokens": 2 * TPS}}), 1000)
    assert (trunk.role, trunk.steps, trunk.branch_points, trunk.warmup) == ("trunk", 30,
                                                                            (15, 30), 2)
    assert all(trunk.lr(s, 1.0) == 1.0 for s in range(2, 30))  # never decays


# ------------------------------------------------------------------ the config


def test_cosine_configs_resolve_and_hash_as_before():
    plain = resolve_config({"size": "d32"})
    assert "schedule" not in plain and "branches" not in plain
    assert run_id(plain) == "50a5dd6adf29b37b"  # the id before WSD existed
    assert resolve_config({"size": "d32", "schedule": {"kind": "cosine"}}) == plain
    assert resolve_config({"size": "d32", "schedule": {"warmup": "0.2"}})["warmup_frac"] == 0.2


def test_wsd_config_resolves_with_defaults_and_yaml_strings():
    c = resolve_config({"size": "d32", "schedule": {"kind": "wsd"}})
    assert c["schedule"] == {"kind": "wsd", "cooldown": 0.2, "decay": "sqrt"}
    c = resolve_config({"size": "d32", "schedule": {"kind": "wsd", "cooldown": "0.3",
                                                     "warmup_tokens": "1e4", "decay": "cosine"}})
    assert c["schedule"] == {"kind": "wsd", "cooldown": 0.3, "decay": "cosine",
                             "warmup_tokens": 10_000}
    assert run_id(c) != run_id(resolve_config({"size": "d32"}))
    assert resolve_config({"size": "d32", "tokens": 100, "branches": ["50", 20, 50],
                           "checkpoint_dir": "x",
                           "schedule": {"kind": "wsd"}})["branches"] == (20, 50)


WSD = {"kind": "wsd"}


@pytest.mark.parametrize("extra,match", [
    ({"schedule": "wsd"}, "'schedule'.*not a mapping.*allowed"),
    ({"schedule": {"kind": "onecycle"}}, "'schedule.kind'.*allowed: cosine, wsd"),
    ({"schedule": {"kind": "wsd", "cool": 0.2}}, "'schedule.cool'.*allowed keys.*cooldown"),
    ({"schedule": {"kind": "wsd", "cooldown": 1.0}}, "'schedule.cooldown'.*\\[0, 1\\)"),
    ({"schedule": {"kind": "wsd", "cooldown": -0.1}}, "'schedule.cooldown'"),
    ({"schedule": {"kind": "wsd", "cooldown": "much"}}, "'schedule.cooldown'"),
    ({"schedule": {"kind": "wsd", "warmup": 1.5}}, "'schedule.warmup'.*\\[0, 1\\)"),
    ({"schedule": {"kind": "wsd", "warmup": 0.5, "cooldown": 0.5}},
     "'schedule.cooldown'.*warm-up.*< 1"),
    ({"schedule": {"kind": "wsd", "decay": "exp"}}, "'schedule.decay'.*linear, sqrt, cosine"),
    ({"schedule": {"kind": "wsd", "warmup_tokens": -1}}, "'schedule.warmup_tokens'.*>= 0"),
    ({"schedule": {"kind": "wsd", "warmup_tokens": 10, "warmup": 0.1}},
     "'schedule.warmup_tokens'.*not both"),
    ({"schedule": {"kind": "cosine", "cooldown": 0.2}}, "'schedule.cooldown'.*kind wsd"),
    ({"schedule": {"warmup": 0.2}, "warmup_frac": 0.3}, "'schedule.warmup'.*warmup_frac"),
    ({"branches": [10], "checkpoint_dir": "x"}, "'branches'.*kind wsd"),
    ({"branches": [0], "schedule": WSD, "checkpoint_dir": "x"}, "'branches'.*token count"),
    ({"branches": 10, "schedule": WSD, "checkpoint_dir": "x"}, "'branches'.*not a list"),
    ({"branches": [10**6], "tokens": 1000, "schedule": WSD, "checkpoint_dir": "x"},
     "'branches'.*more than the trunk"),
    ({"branches": [10], "trunk_dir": "t", "schedule": WSD, "checkpoint_dir": "x"},
     "'branches'.*not both"),
    ({"trunk_dir": "t"}, "'trunk_dir'.*kind wsd"),
    ({"trunk_id": "abc"}, "'trunk_id'.*kind wsd"),
    ({"branches": [10], "trunk_id": "abc", "schedule": WSD}, "'branches'.*not both"),
])
def test_bad_wsd_config_names_key_and_allowed(extra, match):
    with pytest.raises(RaysweepError, match=match):
        resolve_config({"size": "d32", **extra})


def test_a_trunk_without_checkpoint_dir_fails_before_training():
    with pytest.raises(RaysweepError, match="'branches'.*needs checkpoint_dir"):
        train({**BASE, "tokens": DS[1], "branches": [DS[0]], "schedule": WSD})


def test_a_warmup_past_the_branch_point_is_an_error():
    cfg = {**BASE, "tokens": 20 * TPS, "schedule": {"kind": "wsd", "cooldown": 0.5,
                                                    "warmup_tokens": 15 * TPS}}
    with pytest.raises(RaysweepError, match="'schedule.warmup_tokens'.*outlasts"):
        train(cfg)


# ------------------------------------------------------------------ trunk and branches


# eval_every 5: both syncs at the branch points 15 and 30; 4: neither does, but the trunk
# syncs at its last step (30), so its branch-point checkpoint must hold the unsynced state
@pytest.mark.parametrize("eval_every", [5, 4], ids=["sync-at-branch-point", "no-sync-there"])
def test_branches_equal_wsd_runs_from_scratch_bit_exact(tmp_path, eval_every):
    fam = _family(tmp_path, base={**BASE, "eval_every": eval_every})
    trunk_dir = tmp_path / "trunk"
    assert [b.branch_step for b in fam.branches] == [15, 30]
    with pytest.raises(RaysweepError, match="'trunk_dir'.*no trunk checkpoint.*step 15"):
        train(fam.branches[0].config)  # scheduled before its trunk got there
    lost = {k: v for k, v in fam.branches[0].config.items() if k != "trunk_dir"}
    with pytest.raises(RaysweepError, match="'trunk_dir': missing"):
        train(lost)
    trunk = train(fam.trunk.config)
    assert trunk["status"] == "ok" and trunk["steps"] == 30 and trunk["role"] == "trunk"
    kept = sorted(p.name for p in trunk_dir.iterdir())
    assert kept == [os.path.basename(branch_checkpoint(str(trunk_dir), s)) for s in (15, 30)] \
        + ["state.pt"]  # branch points kept beside the resume checkpoint
    import torch

    assert torch.load(branch_checkpoint(str(trunk_dir), 15), weights_only=False)["step"] == 15
    for branch, scratch in zip(fam.branches, fam.separate):
        b_reports, s_reports = [], []
        b, s = train(branch.config, b_reports.append), train(scratch.config, s_reports.append)
        assert b["status"] == s["status"] == "ok"
        # every report of the branch (from the branch point on) is its twin's
        same = [r for r in s_reports if r["step"] >= branch.branch_step]
        assert [r["step"] for r in b_reports] == [r["step"] for r in same]
        for rb, rs in zip(b_reports, same):
            assert (rb["train_loss"], rb["val_loss"]) == (rs["train_loss"], rs["val_loss"])
        assert b["loss"] == s["loss"] and b["train_loss"] == s["train_loss"]
        assert b["tokens"] == s["tokens"] == branch.tokens and b["flops"] == s["flops"]
    assert fam.trunk.config["checkpoint_dir"] == str(trunk_dir)


def test_a_branch_is_not_a_cosine_run_and_its_trunk_must_match(tmp_path):
    fam = _family(tmp_path)
    train(fam.trunk.config)
    branch = train(fam.branches[0].config)
    cosine = train({**BASE, "tokens": DS[0]})
    assert branch["loss"] != cosine["loss"]
    with pytest.raises(RaysweepError, match="'trunk_dir'.*different config.*keys differ: lr"):
        train({**fam.branches[0].config, "lr": 1e-3})
    with pytest.raises(RaysweepError, match="'trunk_dir'.*keys differ: schedule"):
        cfg = dict(fam.branches[0].config)
        cfg["schedule"] = {**cfg["schedule"], "warmup_tokens": 3 * TPS}
        train(cfg)
    # a warm-up given as a fraction is a fraction of each run's own steps: the trunk
    # (40 steps) warmed up over 4, a branch of 20 steps would over 2
    sched = {"kind": "wsd", "cooldown": 0.25}
    own = str(tmp_path / "own")
    train({**BASE, "tokens": DS[1], "branches": [DS[0]], "schedule": sched,
           "checkpoint_dir": own})
    with pytest.raises(RaysweepError, match="'schedule.warmup_tokens'.*4 steps.*over 2"):
        train({**BASE, "tokens": DS[0], "schedule": sched, "trunk_dir": own})


def test_a_garbled_trunk_checkpoint_is_a_clear_error_and_left_in_place(tmp_path):
    fam = _family(tmp_path)
    path = branch_checkpoint(str(tmp_path / "trunk"), 15)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 truncated")
    with pytest.raises(RaysweepError, match="'trunk_dir': trunk checkpoint .* could not be "
                                            "loaded"):
        train(fam.branches[0].config)
    assert os.path.exists(path)  # the trunk's file: not moved aside by a branch


def test_killed_trunk_resumes_bit_exact(tmp_path):
    whole = _family(tmp_path / "a")
    full = train(whole.trunk.config)
    fam = _family(tmp_path / "b")
    with pytest.raises(Killed):
        train(fam.trunk.config, _kill_at(20))  # after the step-15 branch point
    trunk_dir = tmp_path / "b" / "trunk"
    assert os.path.exists(branch_checkpoint(str(trunk_dir), 15))
    assert not os.path.exists(branch_checkpoint(str(trunk_dir), 30))
    seen = []
    resumed = train(fam.trunk.config, seen.append)
    assert seen[0]["step"] == 25  # from its step-20 state.pt, not from scratch
    assert resumed["loss"] == full["loss"] and resumed["train_loss"] == full["train_loss"]
    for a, b in zip(whole.branches, fam.branches):
        assert train(a.config)["loss"] == train(b.config)["loss"]


def test_killed_branch_resumes_bit_exact_from_its_own_checkpoint(tmp_path):
    fam = _family(tmp_path)
    train(fam.trunk.config)
    leg = fam.branches[1]  # D = 40 steps, branch point 30
    whole = train(leg.config)
    cfg = {**leg.config, "checkpoint_dir": str(tmp_path / "branch")}
    with pytest.raises(Killed):
        train(cfg, _kill_at(35))
    assert os.path.exists(tmp_path / "branch" / "state.pt")
    seen = []
    resumed = train(cfg, seen.append)
    assert seen[0]["step"] == 40 and seen[0]["done"]  # from step 35, inside the cooldown
    assert resumed["loss"] == whole["loss"] and resumed["train_loss"] == whole["train_loss"]
    assert resumed["trunk_id"] == fam.trunk.run_id and resumed["role"] == "branch"


# ------------------------------------------------------------------ rows and FLOPs


def test_rows_carry_the_wsd_columns(tmp_path):
    fam = _family(tmp_path)
    plain = train({**BASE, "tokens": DS[0]})
    trunk = train(fam.trunk.config)
    branch = train(fam.branches[0].config)
    scratch = train(fam.separate[0].config)
    new = ("trunk_id", "branch_step", "cooldown", "schedule", "role")
    assert COLUMNS[-5:] == new
    assert [plain[k] for k in new] == ["", None, None, "cosine", "run"]
    assert [trunk[k] for k in new] == [fam.trunk.run_id, None, 0.25, "wsd", "trunk"]
    assert [branch[k] for k in new] == [fam.trunk.run_id, 15, 0.25, "wsd", "branch"]
    assert [scratch[k] for k in new] == ["", None, 0.25, "wsd", "run"]
    # the trunk's id is the hash of its resolved config (checkpoint_dir left out)
    assert fam.trunk.run_id == run_id(resolve_config(fam.trunk.config))
    assert fam.branches[0].run_id == run_id(resolve_config(
        {**fam.branches[0].config, "trunk_dir": "/elsewhere"}))
    # FLOPs: a branch reports the run of its D, and what it trained itself
    assert branch["flops"] == scratch["flops"] == fam.separate[0].flops
    assert branch["flops_own"] == fam.branches[0].flops == 6.0 * branch["n_params"] * 5 * TPS
    assert trunk["flops"] == trunk["flops_own"] == fam.trunk.flops
    df = rows_frame([plain, trunk, branch])
    assert list(df.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert list(df["role"]) == ["run", "trunk", "branch"]


def test_flops_of_a_trunk_family_against_separate_runs():
    # D = 5, 10, 20 "units" (50, 100, 200 steps), 20% cooldowns: 16 + 0.2 x 35 = 23 of 35
    base = {"size": "2x32", "seq_len": 64}
    fam = wsd_configs(base, [200 * TPS, 50 * TPS, 100 * TPS], cooldown=0.2)
    n = fam.n_params
    assert [b.tokens for b in fam.branches] == [50 * TPS, 100 * TPS, 200 * TPS]
    assert [b.branch_step for b in fam.branches] == [40, 80, 160]
    assert fam.trunk.flops == 6.0 * n * 160 * TPS and fam.trunk.steps == 160
    assert [b.flops for b in fam.branches] == [6.0 * n * s * TPS for s in (10, 20, 40)]
    assert fam.flops_separate == 6.0 * n * 350 * TPS
    assert fam.flops == 6.0 * n * 230 * TPS
    assert fam.saving == pytest.approx(1 - 23 / 35)
    assert fam.trunk.config["branches"] == [50 * TPS, 100 * TPS]
    warm = {leg.config["schedule"]["warmup_tokens"] for leg in (fam.trunk, *fam.branches)}
    assert warm == {5 * TPS}  # 10% of the shortest D, the same in every leg
    assert len({fam.trunk.run_id, *(b.run_id for b in fam.branches),
                *(s.run_id for s in fam.separate)}) == 7
    with pytest.raises(RaysweepError, match="'tokens' is set by wsd_configs"):
        wsd_configs({**base, "tokens": 5}, [10])
    assert math.isfinite(fam.saving)
