"""raysweep run on one shared local Ray session: table, registry, resume, failures, replay."""

from __future__ import annotations

import json
import sys
import types
import warnings

import pandas as pd
import pytest
import yaml

from raysweep.errors import StudyError
from raysweep.results import COLUMNS
from raysweep.sweep.registry import Registry
from raysweep.sweep.runners import simulated_loss
from raysweep.sweep.study import parse_study
from raysweep.sweep.trials import expand


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from raysweep.sweep.run import init_ray

    init_ray(num_cpus=2, num_gpus=1)  # a fake GPU: a GPU request that cannot fit waits forever
    yield ray
    ray.shutdown()


def make(name, **over):
    raw = {"version": 1, "name": name, "backend": "simulated", "sizes": ["2x32", "2x48"],
           "tokens_per_param": [10, 20], "seeds": [0],
           "representations": [{"name": "dense"},
                               {"name": "w4a4", "weights": "int4", "activations": "int4"},
                               {"name": "w2", "weights": "int2"}],
           "retries": 0}
    raw.update(over)
    return parse_study(raw, f"<{name}>")


def run(study, out):
    from raysweep.sweep.run import run_study

    return run_study(study, out, progress_every_s=0.0, stream=sys.stderr)


def table(out, name):
    return pd.read_parquet(out / name / "results.parquet")


def test_run_writes_table_registry_and_study(ray_session, tmp_path):
    s = make("basic")
    res = run(s, tmp_path)
    assert res["finished"] == 12 and res["failed"] == 0
    df = table(tmp_path, "basic")
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert len(df) == 12 and df["run_id"].is_unique and (df["status"] == "ok").all()
    csv = pd.read_csv(tmp_path / "basic" / "results.csv")
    assert sorted(csv["run_id"]) == sorted(df["run_id"])
    by_id = {t["run_id"]: t for t in expand(s)}
    for row in df.to_dict("records"):  # the simulated law, seeded by run id
        assert row["loss"] == pytest.approx(simulated_loss(by_id[row["run_id"]]))
        assert row["flops"] == 6 * row["n_params"] * row["tokens"]
    assert (df.loc[df.format == "w4a4", "gmse_weights"] > 0).all()
    saved = yaml.safe_load((tmp_path / "basic" / "study.yaml").read_text())
    assert saved["name"] == "basic" and saved["version"] == 1
    assert len(Registry(tmp_path / "basic").records()) == 12
    assert (tmp_path / "basic" / "ray").is_dir()


def test_rerun_trains_only_missing_trials(ray_session, tmp_path):
    run(make("inc"), tmp_path)
    first = table(tmp_path, "inc")
    again = run(make("inc"), tmp_path)
    assert again["finished"] == 0 and again["already_done"] == 12
    more = run(make("inc", seeds=[0, 1]), tmp_path)  # adds 12 new trials
    assert more["finished"] == 12 and more["already_done"] == 12
    df = table(tmp_path, "inc")
    assert len(df) == 24 and df["run_id"].is_unique
    kept = df.set_index("run_id").loc[first["run_id"], "loss"].to_numpy()
    assert (kept == first["loss"].to_numpy()).all()


SMALL = {"sizes": ["2x32"], "tokens_per_param": [10, 20],
         "representations": [{"name": "dense"}, {"name": "w4", "weights": "int4"}]}


def test_failed_trials_are_recorded_then_retried(ray_session, tmp_path):
    # each raised failure costs Tune an actor restart (~2 s): keep these studies small
    res = run(make("fail", simulated={"fail_prob": 1.0}, **SMALL), tmp_path)
    assert res["failed"] == 4 and res["finished"] == 0
    state = Registry(tmp_path / "fail").state()
    assert len(state) == 4 and all(r["status"] == "failed" for r in state.values())
    assert all("simulated failure" in r["error"] for r in state.values())
    from raysweep.sweep.run import status_summary

    st = status_summary(make("fail", **SMALL), tmp_path)
    assert st["failed"] == 4 and st["done"] == 0
    res = run(make("fail", **SMALL), tmp_path)  # same run ids: fail_prob is not hashed
    assert res["finished"] == 4
    st = status_summary(make("fail", **SMALL), tmp_path)
    assert st["done"] == 4 and st["failed"] == 0 and st["pending"] == 0
    assert len(table(tmp_path, "fail")) == 4


def test_retries_absorb_transient_failures(ray_session, tmp_path):
    res = run(make("flaky", simulated={"fail_prob": 0.3}, retries=30, **SMALL), tmp_path)
    assert res["finished"] == 4 and res["failed"] == 0
    assert len(table(tmp_path, "flaky")) == 4


def test_replay_backend_answers_from_a_table(ray_session, tmp_path):
    run(make("src"), tmp_path)
    src = tmp_path / "src" / "results.csv"
    s = make("rep", backend="replay", replay={"table": str(src)}, seeds=[0, 1])
    res = run(s, tmp_path)
    assert res["finished"] == 12 and res["failed"] == 12  # seed 1 is not in the table
    df = table(tmp_path, "rep")
    ref = pd.read_csv(src).set_index(["weights", "activations", "n_params", "tokens"])
    for row in df.to_dict("records"):
        key = (row["weights"], row["activations"], row["n_params"], row["tokens"])
        assert row["loss"] == pytest.approx(ref.loc[key, "loss"])
    errs = [r["error"] for r in Registry(tmp_path / "rep").state().values()
            if r["status"] == "failed"]
    assert len(errs) == 12 and all("no row" in e for e in errs)


def test_fractional_gpus_pack_and_impossible_gpu_fails_fast(ray_session, tmp_path):
    s = make("gpu", resources={"cpu": 0.5, "gpu": "auto"})
    assert run(s, tmp_path)["finished"] == 12
    with pytest.raises(StudyError, match="resources.gpu"):
        run(make("gpu2", resources={"cpu": 1, "gpu": 2}), tmp_path)


def test_cli_run_status_and_report_failure_is_a_warning(ray_session, tmp_path, monkeypatch,
                                                         capsys):
    from raysweep.cli import main

    p = tmp_path / "cli.yaml"
    p.write_text(yaml.safe_dump({"version": 1, "name": "cli", "backend": "simulated",
                                 "sizes": ["2x32"], "tokens": [1000, 2000],
                                 "representations": [{"name": "dense"}]}))
    fake = types.ModuleType("raysweep.fit.report")

    def boom(study_dir, bootstrap=0):
        raise RuntimeError("fit exploded")

    fake.make_report = boom
    monkeypatch.setitem(sys.modules, "raysweep.fit.report", fake)
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert main(["run", str(p), "--out", str(out)]) == 0
    assert any("fit exploded" in str(x.message) for x in w)
    assert len(pd.read_csv(out / "cli" / "results.csv")) == 2
    capsys.readouterr()
    assert main(["status", str(p), "--out", str(out), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["done"] == 2 and st["pending"] == 0 and st["rows_in_table"] == 2
    assert main(["status", str(out / "cli"), "--json"]) == 0  # from the output dir
    assert json.loads(capsys.readouterr().out)["done"] == 2
    assert main(["plan", str(p), "--out", str(out), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["n_trials"] == plan["n_done"] == 2 and plan["remaining_device_hours"] == 0


def test_train_backend_trial_reports_row_and_drops_checkpoint(ray_session, tmp_path):
    s = parse_study({"version": 1, "name": "tr", "backend": "train", "data": "synthetic",
                     "sizes": ["2x32"], "tokens": [20000],
                     "representations": [{"name": "dense"}], "retries": 0}, "<tr>")
    res = run(s, tmp_path)
    assert res["finished"] == 1, Registry(tmp_path / "tr").records()
    row = table(tmp_path, "tr").iloc[0]
    assert row["status"] == "ok" and row["n_params"] == 23_712 and row["tokens"] == 20000
    assert row["sweep_backend"] == "train" and 0 < row["loss"] < 10
    assert not (tmp_path / "tr" / "checkpoints" / row["run_id"]).exists()


@pytest.mark.timeout(120)  # the searcher is another module's: a hang must not stall CI
def test_active_strategy_plugs_in_its_searcher(ray_session, tmp_path):
    import raysweep.active.options  # noqa: F401  (a broken import must fail, not skip)
    s = make("act", sizes=["2x32", "2x48", "2x80"],
             search={"strategy": "active", "budget_fraction": 0.3, "batch": 2})
    import io

    from raysweep.sweep.run import run_study, status_summary

    progress = io.StringIO()
    first = run_study(s, tmp_path, progress_every_s=0.0, stream=progress)
    n_pool = len(expand(s))
    assert 0 < first["finished"] < n_pool and first["failed"] == 0
    # progress counts against the FLOP budget, not the whole pool
    assert f"done of {n_pool} candidates (active)" in progress.getvalue()
    assert "% of the FLOP budget" in progress.getvalue()
    st = status_summary(s, tmp_path)
    total = sum(6.0 * t["n_params"] * t["tokens"] for t in expand(s))
    assert st["active_budget_flops"] == pytest.approx(0.3 * total)
    assert 0 < st["active_spent_flops"] <= st["active_budget_flops"]
    again = run(s, tmp_path)  # resume: done rows are answered from the registry
    df = table(tmp_path, "act")
    assert df["run_id"].is_unique and len(df) == first["finished"] + again["finished"]


def test_renamed_representation_rows_stay_in_the_registry_not_the_table(ray_session, tmp_path,
                                                                        capsys):
    run(make("ren"), tmp_path)
    reps = [{"name": "dense"}, {"name": "w4a4", "weights": "int4", "activations": "int4"},
            {"name": "int2-w", "weights": "int2"}]  # w2 renamed: the label is in the run id
    res = run(make("ren", representations=reps), tmp_path)
    assert res["already_done"] == 8 and res["finished"] == 4
    assert "4 finished runs in the registry are not trials of this study" in \
        capsys.readouterr().err
    df = table(tmp_path, "ren")
    assert len(df) == 12 and set(df["format"]) == {"dense", "w4a4", "int2-w"}
    assert len(Registry(tmp_path / "ren").done_rows()) == 16  # nothing lost


def test_tune_storage_is_pruned_and_large_grids_run_in_chunks(ray_session, tmp_path,
                                                              monkeypatch):
    monkeypatch.setenv("RAYSWEEP_TUNER_CHUNK", "5")  # 12 trials: three Tuners
    res = run(make("chunks"), tmp_path)
    assert res["finished"] == 12 and not res["interrupted"]
    df = table(tmp_path, "chunks")
    assert len(df) == 12 and df["run_id"].is_unique
    ray_dir = tmp_path / "chunks" / "ray"
    assert not ray_dir.exists() or not any(ray_dir.iterdir())  # nothing resumes from it
