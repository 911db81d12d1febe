"""Registry and tables without Ray: torn lines, first finished record wins, atomic tables."""

from __future__ import annotations

import json

import pandas as pd
import yaml

from raysweep.results import COLUMNS, write_table
from raysweep.sweep.registry import Registry, TableWriter
from raysweep.sweep.runners import capacity, run_trial, simulated_loss
from raysweep.sweep.study import parse_study
from raysweep.sweep.trials import expand


def test_torn_last_line_is_skipped_and_repaired(tmp_path):
    reg = Registry(tmp_path)
    reg.append("a", "ok", {"run_id": "a", "loss": 1.0})
    with open(reg.path, "a") as fh:
        fh.write('{"run_id": "b", "status": "o')  # the driver died mid-write
    assert [r["run_id"] for r in reg.records()] == ["a"]
    reg.append("c", "ok", {"run_id": "c", "loss": 2.0})
    assert [r["run_id"] for r in reg.records()] == ["a", "c"]
    assert set(reg.done_rows()) == {"a", "c"}


def test_first_finished_record_wins_and_failures_are_superseded(tmp_path):
    reg = Registry(tmp_path)
    reg.append("a", "failed", error="boom")
    assert reg.state()["a"]["status"] == "failed" and reg.done_rows() == {}
    reg.append("a", "ok", {"run_id": "a", "loss": 1.0})
    reg.append("a", "ok", {"run_id": "a", "loss": 9.0})  # a duplicate report
    reg.append("a", "failed", error="late")
    assert reg.done_rows()["a"]["loss"] == 1.0


def test_tables_have_contract_columns_and_no_temp_files(tmp_path):
    write_table(tmp_path, [{"run_id": "a", "loss": 1.0, "extra": 3}])
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert list(df.columns) == list(COLUMNS) + ["extra"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.parquet"]
    tw = TableWriter(tmp_path, {}, min_interval_s=3600)
    assert tw.add("x", {"run_id": "x", "loss": 2.0}) and not tw.add("x", {"run_id": "x"})
    tw.flush()
    assert list(pd.read_csv(tmp_path / "results.csv")["run_id"]) == ["x"]


def test_simulated_backend_follows_the_law_without_ray():
    s = parse_study({"version": 1, "name": "sim", "backend": "simulated", "sizes": ["2x32"],
                     "tokens": [10_000, 1_000_000],
                     "representations": [{"name": "dense"},
                                         {"name": "w2a2", "weights": "int2",
                                          "activations": "int2"}],
                     "simulated": {"noise": 0.0}})
    rows = {(r["format"], r["tokens"]): r for r in map(run_trial, expand(s))}
    assert rows[("dense", 1_000_000)]["loss"] < rows[("dense", 10_000)]["loss"]
    assert rows[("w2a2", 10_000)]["loss"] > rows[("dense", 10_000)]["loss"]
    assert capacity("bf16") == 1.0 and 0 < capacity("int2") < capacity("int4") < 1
    # composition: the parts' capacities multiply
    assert abs(capacity("sparse50+int4") - capacity("sparse50") * capacity("int4")) < 1e-12
    noisy = parse_study({**yaml.safe_load(yaml.safe_dump(s.to_dict())),
                         "simulated": {"noise": 0.05}})
    t = expand(noisy)[0]
    assert simulated_loss(t) == simulated_loss(t)  # seeded by run id


def test_invalid_second_study_means_nothing_runs_or_is_written(tmp_path):
    from raysweep.cli import main

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump({"version": 1, "name": "g", "backend": "simulated",
                                    "sizes": ["2x32"], "tokens": [1000],
                                    "representations": [{"name": "dense"}]}))
    bad.write_text(json.dumps({"version": 1, "name": "b", "sizes": ["2x32"]}))
    out = tmp_path / "out"
    assert main(["run", str(good), str(bad), "--out", str(out)]) == 2
    assert not out.exists()


def test_whole_table_replay_pool_is_the_tables_rows(tmp_path):
    src = parse_study({"version": 1, "name": "src", "backend": "simulated",
                       "sizes": ["2x32", "2x48"], "tokens_per_param": [10, 20],
                       "representations": [{"name": "dense"},
                                           {"name": "w4", "weights": "int4"}]})
    rows = [run_trial(t) for t in expand(src)]
    write_table(tmp_path, rows + rows[:1])  # a duplicated row is replayed once
    st = tmp_path / "rep.yaml"
    st.write_text(yaml.safe_dump({"version": 1, "name": "rep", "backend": "replay",
                                  "replay": {"table": "results.csv"}}))
    from raysweep.sweep.study import load_study

    rep = load_study(st)
    pool = expand(rep)
    assert len(pool) == len(rows) == 8
    assert {t["format"] for t in pool} == {"dense", "w4"}
    got = {(r["format"], r["n_params"], r["tokens"]): r["loss"] for r in map(run_trial, pool)}
    want = {(r["format"], r["n_params"], r["tokens"]): r["loss"] for r in rows}
    assert got == want
    assert pool[0]["n_layers"] == 2 and pool[0]["size"] in ("2x32", "2x48")
    saved = tmp_path / "saved.yaml"  # the resolved study round-trips
    saved.write_text(yaml.safe_dump(rep.to_dict()))
    assert [t["run_id"] for t in expand(load_study(saved))] == [t["run_id"] for t in pool]


def test_published_files_have_plain_open_modes(tmp_path):
    """Atomic writes go through mkstemp (0600); the published files must not stay private."""
    import os

    from raysweep.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        write_table(tmp_path, [{"run_id": "a", "loss": 1.0}])
        atomic_write_text(tmp_path / "study.yaml", "name: x\n")
    finally:
        os.umask(old)
    for name in ("results.csv", "results.parquet", "study.yaml"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
