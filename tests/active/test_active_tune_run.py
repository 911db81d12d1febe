"""The ActiveSearcher inside a real (small) Ray Tune run with a simulated trainable."""

import sys
import types

import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402
from ray.tune.stopper import Stopper  # noqa: E402

from raysweep.active.searcher import make_searcher  # noqa: E402

RHO = {"dense": 1.0, "w4": 0.8, "w2": 0.4}
POOL = [{"run_id": f"{f}-{n:g}-{r}", "format": f, "weights": "bf16" if f == "dense" else "int4",
         "activations": "bf16", "n_params": n, "tokens": r * n, "seed": 0}
        for f in RHO for n in (1e6, 2e6, 4e6) for r in (10, 20)]
CRASH = "w4-1e+06-20"  # raises inside the trainable


def trainable(cfg):
    """Simulated run: two intermediate evals, then the final result row (status ok)."""
    if cfg["run_id"] == CRASH:
        raise RuntimeError("simulated crash")
    final = 400 * (cfg["n_params"] * RHO[cfg["format"]]) ** -0.34 \
        + 1800 * cfg["tokens"] ** -0.37 + 1.8
    for step in (1, 2):
        tune.report({"val_loss": final + 1.0 / step, "step": step,
                     "tokens": cfg["tokens"] * step / 3})
    tune.report({"loss": final, "step": 3, "tokens": cfg["tokens"], "status": "ok"})


class StopW2Early(Stopper):
    """Stands in for ASHA: ends every w2 run after its first intermediate result."""

    def __call__(self, trial_id, result):
        return result["config"]["format"] == "w2" and result["step"] == 1

    def stop_all(self):
        return False


@pytest.fixture(scope="module")
def ray_local():
    # Workers cannot import this test file (tests/ is no package): ship it by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.timeout(180)
def test_searcher_in_a_tune_run(ray_local, tmp_path):
    study = types.SimpleNamespace(name="tune", search={
        "strategy": "active", "budget_fraction": 0.35, "batch": 2, "ensemble": 6})
    searcher = make_searcher(study, POOL, tmp_path)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="t", verbose=0,
                                  stop=StopW2Early()),
    )
    results = tuner.fit()
    told = searcher.told
    assert searcher.last_reason == "budget" and not searcher.live
    assert len(results) == len(told) >= 5
    by_run = {}
    for t in searcher.study.trials:
        by_run.setdefault(t.user_attrs["run_id"], []).append(t.state.name)
    assert by_run[CRASH] == ["FAIL"]  # failed once, never re-proposed
    w2 = [s for r, s in by_run.items() if r.startswith("w2")]
    assert w2 and all(s == ["PRUNED"] for s in w2)  # early-stopped: not an observation
    complete = [t for t in searcher.study.trials if t.state.name == "COMPLETE"]
    assert complete and all(t.user_attrs["run_id"][:2] in ("de", "w4") for t in complete)
    spent = sum(6 * r["n_params"] * r["tokens"] for r in POOL
                if r["run_id"] in by_run)
    assert spent <= 0.35 * sum(6 * r["n_params"] * r["tokens"] for r in POOL)


@pytest.mark.timeout(180)
def test_active_study_through_the_sweep(ray_local, tmp_path):
    """search: {strategy: active} through raysweep.sweep.run.run_study (simulated backend)."""
    import optuna

    from raysweep.sweep.run import run_study
    from raysweep.sweep.study import parse_study
    from raysweep.sweep.trials import expand

    study = parse_study({
        "version": 1, "name": "act", "backend": "simulated", "sizes": ["2x64", "3x96", "4x128"],
        "tokens_per_param": [10, 20],
        "representations": [{"name": "dense"}, {"name": "w4", "weights": "int4"},
                            {"name": "w2", "weights": "int2"}],
        "search": {"strategy": "active", "budget_fraction": 0.3, "batch": 2, "ensemble": 6}})
    pool = expand(study)
    first = run_study(study, tmp_path)
    url = f"sqlite:///{tmp_path / 'act' / 'active.db'}"
    trials = optuna.load_study(study_name="raysweep-active-act", storage=url).trials
    states = {t.state.name for t in trials}
    assert states == {"COMPLETE"} and first["finished"] == len(trials) < len(pool)
    cost = {r["run_id"]: 6 * r["n_params"] * r["tokens"] for r in pool}
    spent = sum(cost[t.user_attrs["run_id"]] for t in trials)
    assert spent <= 0.3 * sum(cost.values())
    from raysweep.sweep.run import status_summary

    status = status_summary(study, tmp_path)  # what `raysweep status` prints
    assert status["active_left_flops"] == pytest.approx(
        max(status["active_budget_flops"] - status["active_spent_flops"], 0.0))
    assert status["active_targets"] or "no fit yet" in status["active_targets_note"]
    for v in status["active_targets"].values():
        assert v["lo"] <= v["loss"] <= v["hi"]
    # Resume: the budget is already spent, so the second run proposes nothing new.
    second = run_study(study, tmp_path)
    again = optuna.load_study(study_name="raysweep-active-act", storage=url).trials
    assert len(again) == len(trials) and second["finished"] == 0
