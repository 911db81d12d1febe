"""The Optuna sampler on a SQLite study: resume keeps history, failures and early stops."""

import types

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from raysweep.active.options import parse_options
from raysweep.active.sampler import INTERRUPTED, ActiveSampler, ask, open_study, tell_result
from raysweep.active.searcher import make_searcher

RHO = {"dense": 1.0, "w4": 0.8, "w2": 0.4}


def make_pool():
    return [{"run_id": f"{f}-{n:g}-{r}", "format": f,
             "weights": "bf16" if f == "dense" else "int4", "activations": "bf16",
             "n_params": n, "tokens": r * n, "seed": 0}
            for f in RHO for n in (1e6, 2e6, 4e6, 8e6) for r in (10, 20)]


def loss(row):
    return 400 * (row["n_params"] * RHO[row["format"]]) ** -0.34 \
        + 1800 * row["tokens"] ** -0.37 + 1.8


def opts(**kw):
    return parse_options({"strategy": "active", "budget_fraction": 0.5, "ensemble": 6, **kw},
                         make_pool())


def test_sampler_contract_and_informative_first_picks(tmp_path):
    pool = make_pool()
    study, sampler = open_study("s", pool, opts(), f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    assert sampler.infer_relative_search_space(study, None) == {"candidate": sampler.distribution}
    picks = []
    for _ in range(6):
        trial, i = ask(study, sampler)
        picks.append(i)
        study.tell(trial, loss(pool[i]))
    assert set(sampler.design.init) <= set(picks)  # initial design first
    observed, pending, failed = sampler.history(study)
    assert sorted(observed) == sorted(picks) and not pending and not failed


def test_resume_from_sqlite_keeps_history(tmp_path):
    pool = make_pool()
    url = f"sqlite:///{tmp_path / 'active.db'}"
    study, sampler = open_study("s", pool, opts(), url)
    done = []
    for _ in range(5):
        trial, i = ask(study, sampler)
        study.tell(trial, loss(pool[i]))
        done.append(i)
    stale, stale_i = ask(study, sampler)  # left RUNNING: the process "dies" here
    del study, sampler

    study2, sampler2 = open_study("s", pool, opts(), url)
    assert study2.user_attrs[INTERRUPTED] == [stale.number]
    assert study2.trials[stale.number].state == TrialState.FAIL
    observed, pending, failed = sampler2.history(study2)
    assert sorted(observed) == sorted(done) and pending == [] and failed == {}
    assert observed[done[0]] == pytest.approx(loss(pool[done[0]]))
    nxt = sampler2.peek(study2).picks[0]
    assert nxt not in done and nxt == stale_i  # the interrupted run is still worth running


def test_failed_and_early_stopped_runs(tmp_path):
    pool = make_pool()
    study, sampler = open_study("s", pool, opts(), f"sqlite:///{tmp_path / 'a.db'}")
    t1, i1 = ask(study, sampler)
    assert tell_result(study, t1.number, None, error=True) == "FAIL"
    t2, i2 = ask(study, sampler)
    # ASHA-style stop: Tune marks the last (intermediate) result done=True
    assert tell_result(study, t2.number, {"loss": 3.0, "done": True}, False) == "PRUNED"
    t3, i3 = ask(study, sampler)
    assert tell_result(study, t3.number, {"loss": 3.0, "done": True, "status": "diverged"},
                       False) == "FAIL"
    t4, i4 = ask(study, sampler)
    early = {"loss": 3.0, "done": True, "status": "ok", "tokens": pool[i4]["tokens"] / 2}
    assert tell_result(study, t4.number, early, False, pool[i4]["tokens"]) == "PRUNED"
    t5, i5 = ask(study, sampler)
    row = {"loss": 3.5, "done": True, "status": "ok", "tokens": pool[i5]["tokens"]}
    assert tell_result(study, t5.number, row, False, pool[i5]["tokens"]) == "COMPLETE"
    assert len({i1, i2, i3, i4, i5}) == 5
    observed, _, failed = sampler.history(study)
    assert observed == {i5: 3.5} and failed == {i1: 1, i2: 1, i3: 1, i4: 1}
    for _ in range(10):  # neither the sampler nor its random fallback proposes them again
        trial, i = ask(study, sampler)
        assert i not in (i1, i2, i3, i4)
        fb = sampler.sample_independent(study, trial, "candidate", sampler.distribution)
        assert fb not in (i1, i2, i3, i4)
        study.tell(trial, loss(pool[i]))


def test_results_of_the_sweep_trainable(tmp_path):
    """raysweep.sweep.runners.trainable reports the final row as row_json (Tune adds done)."""
    import json

    pool = make_pool()
    study, sampler = open_study("s", pool, opts(), f"sqlite:///{tmp_path / 'a.db'}")
    cases = [
        ({"loss": 3.2, "row_json": json.dumps({"loss": 3.2, "status": "ok"}), "done": True},
         "COMPLETE"),
        ({"loss": 9.0, "row_json": json.dumps({"loss": 9.0, "status": "diverged"}),
          "done": True}, "FAIL"),
        ({"failed_json": json.dumps({"error": "miss"}), "done": True}, "FAIL"),
        ({"val_loss": 3.4, "tokens": 1e5, "step": 10, "done": True}, "PRUNED"),
    ]
    for result, state in cases:
        trial, i = ask(study, sampler)
        row = json.loads(result.get("row_json", "{}"))
        if row:
            result["row_json"] = json.dumps({**row, "tokens": pool[i]["tokens"]})
        assert tell_result(study, trial.number, result, False, pool[i]["tokens"]) == state


def test_history_follows_run_ids_when_the_pool_is_reordered(tmp_path):
    pool = make_pool()
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study, sampler = open_study("s", pool, opts(), url)
    trial, i = ask(study, sampler)
    study.tell(trial, loss(pool[i]))
    rev = pool[::-1]
    sampler2 = ActiveSampler(rev, 1e30, ensemble=6)
    observed, _, _ = sampler2.history(study)
    assert list(observed) == [len(pool) - 1 - i]


def test_make_searcher_uses_sqlite_in_out_dir(tmp_path):
    pool = make_pool()
    study = types.SimpleNamespace(name="demo", search={"strategy": "active", "ensemble": 4})
    s = make_searcher(study, pool, tmp_path / "out")
    assert (tmp_path / "out" / "active.db").is_file()
    cfg = s.suggest("t0")
    assert cfg in pool and cfg is not pool[pool.index(cfg)]
    s.on_trial_complete("t0", {"loss": float(np.float64(loss(cfg))), "status": "ok"})
    assert s.told == {"t0": "COMPLETE"}


def test_target_rho_through_the_sampler(tmp_path):
    """``search.target: rho`` reaches the design the sampler asks: the capacities are
    its targets, and it goes on proposing distinct runs after the initial design."""
    pool = make_pool()
    study, sampler = open_study("s", pool, opts(target="rho"), f"sqlite:///{tmp_path / 'r.db'}")
    assert sampler.design.target_rho and sampler.design.rho_labels == ("w4", "w2")
    picks = []
    for _ in range(len(sampler.design.init) + 2):
        trial, i = ask(study, sampler)
        picks.append(i)
        study.tell(trial, loss(pool[i]))
    assert len(set(picks)) == len(picks) and set(sampler.design.init) <= set(picks)
    observed = sampler.history(study)[0]
    rho = sampler.design.predict_targets(observed)
    assert set(rho) == {"rho[w4]", "rho[w2]"} and rho["rho[w2]"] < rho["rho[w4]"]
