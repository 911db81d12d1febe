"""Registry and tables without Ray: torn lines, first finished record wins, atomic tables."""

from __future__ import annotations

import json

import pandas as pd
import yaml

from raysweep.backends import COLUMNS, capacity, run_trial, simulated_loss
from raysweep.registry import Registry, TableWriter, write_table
from raysweep.study import expand, parse_study


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
