"""`raysweep fit --json` fields exactly; `raysweep report` end to end on a synthetic study."""

import json

import pandas as pd
import pytest

from raysweep.cli import main
from raysweep.fit.report import make_report
from raysweep.fit.synthetic import synthetic_table

CONTRACT = {"law", "n_points", "params", "capacity", "rho", "ci", "fit_error", "holdout_error"}


@pytest.fixture(scope="module")
def table():
    return synthetic_table(families=("int", "noise"), roles=("w", "a", "wa", "cross"),
                           sizes=(1e7, 4e7, 1.6e8), tokens_per_param=(50, 200), noise=0.005,
                           seed=4, dense_seeds=2)


def test_fit_cli_json_fields_exact(table, tmp_path, capsys):
    path = tmp_path / "results.parquet"
    table.to_parquet(path)
    out = tmp_path / "fit.json"
    rc = main(["fit", str(path), "--law", "unified", "--bootstrap", "4",
               "--holdout", "n_params > 1e8", "--json", str(out)])
    assert rc == 0
    got = json.loads(out.read_text())
    # the contract's fields, then the extensions (docs/fit.md, "Intervals")
    assert set(got) == CONTRACT | {"fixed", "free", "ranges", "bootstrap", "prediction"}
    assert got["law"] == "unified"
    assert got["fixed"] == {"noise.L": got["fixed"]["noise.L"]}  # noise1-4: <= 4 bits
    assert "int.L" in got["free"] and "noise.L" not in got["ci"]
    assert set(got["params"]) == {"A", "alpha", "B", "beta", "E"}
    assert set(got["capacity"]) == {"int", "noise"}
    assert set(got["capacity"]["int"]) == {"L", "F", "C"}
    assert set(got["fit_error"]) == {"rmse_log", "rmse"}
    # with a bootstrap: how many held-out runs are inside their 95% prediction interval
    assert set(got["holdout_error"]) == {"rmse_log", "rmse", "n", "in_pi95", "pi95_coverage"}
    assert 0 <= got["holdout_error"]["in_pi95"] <= got["holdout_error"]["n"]
    assert got["holdout_error"]["n"] == int((table["n_params"] > 1e8).sum())
    assert set(got["rho"]) == set(table["format"])  # held-out formats included
    assert all(len(v) == 2 for v in got["ci"].values()) and "alpha" in got["ci"]
    assert "status" in capsys.readouterr().out


def test_fit_cli_bad_input_exits_2(table, tmp_path, capsys):
    path = tmp_path / "results.csv"
    table.drop(columns=["loss"]).to_csv(path, index=False)
    assert main(["fit", str(path), "--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raysweep: error:") and "'loss'" in err and "\n" not in err
    assert not (tmp_path / "x.json").exists()
    table.to_csv(path, index=False)
    assert main(["fit", str(path), "--law", "nope"]) == 2
    assert main(["fit", str(tmp_path / "missing.csv")]) == 2


def test_report_end_to_end(table, tmp_path):
    study = tmp_path / "demo"
    study.mkdir()
    table.to_csv(study / "results.csv", index=False)
    (study / "study.yaml").write_text("name: demo-study\n")
    md = make_report(study, bootstrap=4)
    assert md == study / "report.md"
    text = md.read_text()
    assert "demo-study" in text
    for fmt in table["format"].unique():
        assert fmt.replace("|", "\\|") in text, fmt
    for name in ("loss_vs_n", "rho_vs_gmse", "composability", "pareto", "residuals"):
        png = study / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    html = (study / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "plots/" not in html
    fit = json.loads((study / "fit.json").read_text())
    assert CONTRACT <= set(fit) and fit["law"] == "unified"
    assert fit["decoupled"]["law"] == "decoupled"
    comp = fit["composability"]
    assert comp["n_combinations"] == len(comp["entries"]) > 0
    assert 0 <= comp["mean_abs_error"] <= comp["max_abs_error"] < 0.1
    assert {"chinchilla", "unified-logistic", "kumar"} <= set(fit["laws"])
    single = fit["single_run_rho"]
    assert len(single) == int((table["format"] != "bf16|bf16").sum())
    assert all(0 < r["rho"] < 1.2 for r in single) and "## Single-run capacity" in text
    # The paper's published tanh law beside the fits: int4 GMSE 0.011543 -> 0.8196,
    # W+A multiplies, dense is 1.
    paper = {lab: f["rho_paper"] for lab, f in fit["formats"].items()}
    assert paper["int4|bf16"] == pytest.approx(0.81963, abs=1e-4)
    assert paper["int4|int4"] == pytest.approx(0.81963 ** 2, abs=1e-4)
    assert paper["bf16|bf16"] == 1.0 and "rho (paper law)" in text
    assert "Ordering: the formats from the highest paper-law rho down" in text
    # Cross-family: noise refitted on int's curve. The table's noise curve differs from
    # int's (synthetic truth (1.0, 0.45, 1.2) vs (1.0, 0.41, 1.39)), and the shared fit
    # is nested in the separate one, so it cannot fit better.
    cross = fit["cross_family"]
    assert cross["share"] == {"noise": "int"} and "## Cross-family" in text
    assert cross["n_params"] == cross["n_params_separate"] - 3
    assert cross["rmse_log"] >= cross["rmse_log_separate"] - 1e-6
    noise_fmts = {f for f in table["format"].unique() if "noise" in f}
    assert set(cross["formats"]) == noise_fmts
    assert all(0 < r["rho_shared_curve"] <= 1.05 for r in cross["formats"].values())
    # the study's own formats predicted from its own fit at its largest (N, D)
    pt = fit["predict_table"]
    assert pt["n_params"] == table["n_params"].max() and pt["tokens"] == table["tokens"].max()
    assert set(pt["formats"]) == set(table["format"]) and pt["ranking"][0] == "bf16|bf16"
    r = pt["formats"]["int4|int4"]
    assert r["loss_pi95"][0] < r["loss"] < r["loss_pi95"][1]
    assert r["rho"] == pytest.approx(fit["rho"]["int4|int4"])
    assert "## Predicted at the study's largest (N, D)" in text
    assert "noise.L: fixed at 1" in text and fit["fixed"] and fit["ranges"]["gmse"]
    assert not list(study.glob(".*.tmp")) and not list((study / "plots").glob(".*"))


def test_report_cli_on_dense_only_table(tmp_path):
    study = tmp_path / "dense"
    study.mkdir()
    synthetic_table(families=(), sizes=(1e7, 4e7, 1.6e8), tokens_per_param=(50, 200),
                    seeds=2).to_parquet(study / "results.parquet")
    assert main(["report", str(study), "--bootstrap", "0"]) == 0
    fit = json.loads((study / "fit.json").read_text())
    assert "no combined representations" in fit["composability"]["note"]
    assert fit["cross_family"] is None
    assert (study / "plots" / "loss_vs_n.png").exists()
    assert pd.read_parquet(study / "results.parquet").shape[0] == 12


def test_fit_cli_share_family(table, tmp_path, capsys):
    path = tmp_path / "results.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "fit.json"
    assert main(["fit", str(path), "--share-family", "noise=int", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert set(got["capacity"]) == {"int"} and "noise2|noise2" in got["rho"]
    assert main(["fit", str(path), "--share-family", "noise"]) == 2
    assert "FAMILY=FAMILY" in capsys.readouterr().err
