"""``raysweep predict``: zero-shot loss from GMSE (raysweep.fit.predict)."""

import json
import math
import subprocess
import sys

import pytest
from raysweep.formats import parse

from raysweep.errors import RaysweepError
from raysweep.fit.laws import EPOCH_CHINCHILLA, PAPER_CAPACITY, unified_loss
from raysweep.fit.predict import format_prediction, predict


def _paper_rho(spec):
    g = parse(spec).gmse().value
    return math.tanh(PAPER_CAPACITY["F"] * math.log(g) / math.log(0.25)) ** PAPER_CAPACITY["C"]


def test_int4_known_answer_both_roles():
    out = predict(["int4"])
    r = out["formats"]["int4"]
    rho1 = _paper_rho("int4")
    assert r["rho"] == pytest.approx(rho1 ** 2, rel=1e-12)
    assert r["rho_weights"] == pytest.approx(rho1) and r["rho_activations"] == pytest.approx(rho1)
    assert out["n_params"] == 1e8 and out["tokens"] == 2e9
    assert r["loss"] == pytest.approx(unified_loss(1e8, 2e9, rho1 ** 2, EPOCH_CHINCHILLA))
    assert r["excess_loss"] == pytest.approx(r["loss"] - unified_loss(1e8, 2e9, 1.0))
    assert r["bits_per_element"] == 4.0 and r["family"] == "int" and r["method"] == "exact"
    assert out["law"]["name"] == "paper" and r["flags"] == []


def test_role_weights_only():
    r = predict(["int4"], role="weights", n=2e8, d=1e9)["formats"]["int4"]
    assert r["rho"] == pytest.approx(_paper_rho("int4")) and r["rho_activations"] == 1.0
    assert r["loss"] == pytest.approx(unified_loss(2e8, 1e9, _paper_rho("int4")))


def test_composite_is_product_of_parts():
    r = predict(["int4+sparse50"], role="weights")["formats"]["int4+sparse50"]
    assert r["rho"] == pytest.approx(_paper_rho("int4") * _paper_rho("sparse50"))
    assert any(f.startswith("paper_curve_family") for f in r["flags"])  # sparse: not scalar


def test_ranking_at_equal_n():
    out = predict(["int4", "int2", "fp8", "bf16"])
    assert out["ranking"] == ["bf16", "fp8", "int4", "int2"]
    assert [out["formats"][s]["rank"] for s in out["ranking"]] == [1, 2, 3, 4]
    assert out["formats"]["bf16"]["excess_loss"] == 0.0
    # every format is on the (loss, bits) front here: each cheaper one is worse
    assert set(out["pareto"]) == {"bf16", "fp8", "int4", "int2"}


def test_budget_bits_4bit_beats_bf16():
    out = predict(["int4", "fp4", "fp8", "bf16"], budget_bits=1.6e9)
    f = out["formats"]
    assert f["int4"]["n_params"] == pytest.approx(4e8) and f["bf16"]["n_params"] == 1e8
    assert out["tokens"] == pytest.approx(2e9) and out["n_params"] is None
    assert f["int4"]["loss"] < f["bf16"]["loss"]
    assert out["ranking"][-1] == "bf16" and out["ranking"][0] == "int4"
    assert not f["fp4"]["pareto"] and not f["bf16"]["pareto"] and f["int4"]["pareto"]
    assert out["budget"]["dense_bf16_loss"] == pytest.approx(f["bf16"]["loss"])


def test_budget_flops():
    out = predict(["int4", "bf16"], budget_flops=1.2e20)
    assert out["n_params"] == pytest.approx(1e9) and out["tokens"] == pytest.approx(2e10)
    out = predict(["int4"], budget_flops=6e18, n=1e8)
    assert out["tokens"] == pytest.approx(1e10)


def _fit_json(tmp_path, **extra):
    fit = {"law": "unified", "n_points": 10,
           "params": {"A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.36, "E": 1.7},
           "capacity": {"int": {"L": 0.95, "F": 0.5, "C": 1.2}},
           "rho": {}, "ci": {}, "fit_error": {}, "holdout_error": {}, **extra}
    p = tmp_path / "fit.json"
    p.write_text(json.dumps(fit))
    return p


def test_fit_json_law_and_unknown_family(tmp_path):
    path = _fit_json(tmp_path)
    out = predict(["int4", "fp4"], law=str(path), role="weights")
    g = parse("int4").gmse().value
    rho = 0.95 * math.tanh(0.5 * math.log(g) / math.log(0.25)) ** 1.2
    r = out["formats"]["int4"]
    assert r["rho"] == pytest.approx(rho)
    assert r["loss"] == pytest.approx(unified_loss(1e8, 2e9, rho, out["law"]["params"]))
    assert r["flags"] == []
    fp4 = out["formats"]["fp4"]
    assert fp4["rho"] == pytest.approx(_paper_rho("fp4"))
    assert any(f.startswith("unknown_family") and "'fp'" in f for f in fp4["flags"])
    assert out["law"]["name"] == "fit" and out["law"]["source"] == str(path)
    assert any(f.startswith("gmse_range_unknown") for f in out["flags"])
    assert any(f.startswith("n_params_range_unknown") for f in out["flags"])
    assert "unknown_family" in format_prediction(out)


def test_fit_json_ranges(tmp_path):
    fmts = {"int4|int4": {"parts": [{"role": "weights", "spec": "int4", "family": "int",
                                     "gmse": parse("int4").gmse().value}]},
            "int8|int8": {"parts": [{"role": "weights", "spec": "int8", "family": "int",
                                     "gmse": parse("int8").gmse().value}]}}
    path = _fit_json(tmp_path, formats=fmts, ranges={"n_params": [1e7, 5e7],
                                                     "tokens": [1e8, 1e10]})
    out = predict(["int4", "int2"], law=path)
    assert not any("gmse" in f for f in out["formats"]["int4"]["flags"])
    assert any(f.startswith("gmse_extrapolation") for f in out["formats"]["int2"]["flags"])
    assert any(f.startswith("n_params_extrapolation") for f in out["formats"]["int4"]["flags"])
    assert not any(f.startswith("tokens_") for f in out["formats"]["int4"]["flags"])
    assert out["flags"] == []


@pytest.mark.parametrize("kwargs", [
    dict(specs=["int9"]),
    dict(specs=["int4"], n="abc"),
    dict(specs=["int4"], n=-1),
    dict(specs=["int4"], role="both!"),
    dict(specs=["int4"], law="/nonexistent/fit.json"),
    dict(specs=["int4"], budget_bits=1e9, n=1e8),
    dict(specs=["int4"], budget_bits=1e9, budget_flops=1e20),
])
def test_bad_input_raises(kwargs):
    with pytest.raises(RaysweepError):
        predict(**kwargs)


def test_malformed_fit_json(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(RaysweepError, match="not a readable JSON"):
        predict(["int4"], law=p)
    p.write_text(json.dumps({"params": {"A": 1.0}}))
    with pytest.raises(RaysweepError, match="missing law parameters"):
        predict(["int4"], law=p)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "raysweep", "predict", *args],
                          capture_output=True, text=True)


def test_cli_json():
    r = _run("int4", "fp4", "fp8", "int2", "bf16", "--json", "--n", "1e8")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out["formats"]) == {"int4", "fp4", "fp8", "int2", "bf16"}
    assert out["ranking"][0] == "bf16" and out["ranking"][-1] == "int2"
    for key in ("gmse", "stderr", "bits_per_element", "family", "rho", "loss", "excess_loss",
                "rank", "pareto", "flags"):
        assert key in out["formats"]["int4"]
    r = _run("int4", "bf16", "--budget-bits", "1.6e9")
    assert r.returncode == 0 and "int4" in r.stdout and "law: paper" in r.stdout


@pytest.mark.parametrize("args", [
    ("int9",),
    ("int4", "--n", "lots"),
    ("int4", "--law", "missing-fit.json"),
    ("int4", "--budget-bits", "1e9", "--budget-flops", "1e20"),
    ("int4", "--role", "gradients"),
])
def test_cli_errors_one_line_exit_2(args):
    r = _run(*args)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "error:" in r.stderr
    assert r.stdout == ""


def test_fit_json_exact_gmse_ranges_and_prediction_interval(tmp_path):
    reps = [{"params": {"A": 400.0 * f, "alpha": 0.34, "B": 2000.0, "beta": 0.36, "E": 1.7},
             "capacity": {"int": {"L": 1.0, "F": 0.5 * f, "C": 1.2}}}
            for f in (0.95, 1.0, 1.05, 0.98, 1.02)]
    path = _fit_json(tmp_path, ranges={"n_params": [1e7, 2e8], "tokens": [1e8, 1e10],
                                       "gmse": {"int": [1e-3, 0.05]}},
                     prediction={"replicates": reps, "residuals_log": [-0.01, 0.0, 0.01]})
    out = predict(["int4", "int2"], law=path, n=1e8, d=2e9, role="weights")
    assert out["flags"] == []  # every range recorded
    assert not any("gmse" in f for f in out["formats"]["int4"]["flags"])
    assert any(f.startswith("gmse_extrapolation") for f in out["formats"]["int2"]["flags"])
    r = out["formats"]["int4"]
    lo, hi = r["loss_pi95"]
    assert lo < r["loss"] < hi
    # the spread: the replicates' laws and the +-1% residuals
    losses = [unified_loss(1e8, 2e9, 0.95 ** 0 * math.tanh(c["capacity"]["int"]["F"] *
                                                            math.log(parse("int4").gmse().value)
                                                            / math.log(0.25)) ** 1.2,
                           c["params"]) for c in reps]
    assert lo == pytest.approx(min(losses) * math.exp(-0.01), rel=2e-3)
    assert hi == pytest.approx(max(losses) * math.exp(0.01), rel=2e-3)
    assert "95% PI" in format_prediction(out)
    assert predict(["int4"])["formats"]["int4"]["loss_pi95"] is None  # paper law: none


def test_fit_json_malformed_prediction_section(tmp_path):
    path = _fit_json(tmp_path, prediction={"replicates": [], "residuals_log": [0.0]})
    with pytest.raises(RaysweepError, match="prediction"):
        predict(["int4"], law=path)


def test_fitted_range_ends_are_inside(tmp_path):
    # ranges written from exp(ln N) differ from N in the last bits: the ends are inside
    path = _fit_json(tmp_path, ranges={"n_params": [1e7, 1.0000000000000002e8],
                                       "tokens": [1.3e6 * (1 - 1e-15), 2e9 * (1 - 1e-15)],
                                       "gmse": {"int": [1e-3, 0.05]}})
    out = predict(["int4"], law=path, n=1e8, d=2e9)
    assert not any("extrapolation" in f for f in out["formats"]["int4"]["flags"])
