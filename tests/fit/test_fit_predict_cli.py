"""`raysweep fit --predict` and `raysweep predict --law FIT.json` with prediction intervals;
fit.json records the fitted ranges and the fixed parameters."""

import json

import pytest

from raysweep.cli import main
from raysweep.fit.cli import parse_predict
from raysweep.fit.synthetic import synthetic_table


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("pred") / "results.csv"
    synthetic_table(families=("int",), roles=("w", "a"), sizes=(1e7, 4e7, 1.6e8),
                    tokens_per_param=(50, 200), noise=0.01, seed=5,
                    dense_seeds=2).to_csv(path, index=False)
    return path


def test_parse_predict_forms(tmp_path):
    q = parse_predict(["format=int4|int4,n=1e8,d=2e9", "weights=int3,n=3e8,d=6e9"])
    assert list(q["weights"]) == ["int4", "int3"] and list(q["activations"]) == ["int4", "bf16"]
    assert list(q["format"]) == ["int4|int4", "int3|bf16"]
    assert list(q["n_params"]) == [1e8, 3e8] and list(q["tokens"]) == [2e9, 6e9]
    csv = tmp_path / "q.csv"
    csv.write_text("format,n_params,tokens\nint2|bf16,1e8,2e9\n")
    assert list(parse_predict([str(csv)])["weights"]) == ["int2"]


@pytest.mark.parametrize("item, words", [
    ("format=int4|int4,n=1e8,q=2", ["unknown field 'q'", "allowed fields"]),
    ("format=int4|int4,n=1e8", ["field 'd' is missing"]),
    ("format=int4,n=1e8,d=2e9", ["must be 'W|A'"]),
    ("format=int4|int4,n=-5,d=2e9", ["n", "-5"]),
    ("format=int4|int4 n=1e8", ["not FIELD=VALUE"]),
])
def test_predict_flag_errors_exit_2(table_path, capsys, item, words):
    assert main(["fit", str(table_path), "--predict", item]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and all(w in err for w in words), err


def test_fit_predict_and_zero_shot_predict_from_the_fit(table_path, tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert main(["fit", str(table_path), "--bootstrap", "8", "--holdout", "n_params > 1e8",
                 "--predict", "format=int4|int4,n=1e8,d=2e9", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "95% prediction interval" in text and "held-out runs inside" in text
    fit = json.loads(out.read_text())
    p = fit["predictions"][0]
    assert p["pi95"][0] < p["loss"] < p["pi95"][1]
    assert fit["ranges"]["n_params"] == [pytest.approx(1e7), pytest.approx(4e7)]
    assert set(fit["ranges"]["gmse"]) == {"int"}
    assert "int.L" in fit["free"] and fit["fixed"] == {}
    he = fit["holdout_error"]
    assert he["n"] > 0 and 0 <= he["in_pi95"] <= he["n"]
    assert len(fit["prediction"]["replicates"]) == 8
    # the zero-shot command with this fit: intervals, and no "range unknown" notes
    assert main(["predict", "int4", "--law", str(out), "--n", "1e8", "--d", "2e9",
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    r = got["formats"]["int4"]
    assert r["loss_pi95"][0] < r["loss"] < r["loss_pi95"][1]
    assert not any("range_unknown" in f for f in got["flags"])
    assert any(f.startswith("n_params_extrapolation") for f in r["flags"])  # 1e8 > 4e7
    # the same rows from Python agree with the CLI's fit --predict
    assert r["loss"] == pytest.approx(p["loss"], rel=1e-6)
