"""Every law: analytic Jacobian vs finite differences, and known parameters recovered."""

import math

import numpy as np
import pytest

from raysweep.errors import FitError
from raysweep.fit import fit_table, make_design
from raysweep.fit.laws import make_law
from raysweep.fit.optimize import check_gradient
from raysweep.fit.synthetic import synthetic_table

BASE = [math.log(400.0), math.log(2000.0), math.log(1.8), 0.30, 0.35]
SIZES = (1e7, 4e7, 1.6e8, 6.4e8)
TPP = (40, 100, 250)


def _table(law, seeds=1):
    kw = dict(sizes=SIZES, tokens_per_param=TPP, seeds=seeds, dense_seeds=3 * seeds)
    if law == "frantar":
        return synthetic_table(families=("sparse",), roles=("w",), **kw)
    if law == "chinchilla":
        return synthetic_table(families=(), **kw)
    return synthetic_table(families=("int", "noise"), roles=("w", "a", "wa"), **kw)


def _truth(law, design):
    model = make_law(law, design)
    cap = {
        "chinchilla": [],
        "unified": [0.0, 0.41, 1.39, math.log(0.95), 0.45, 1.2],
        "unified-logistic": [math.log(5.0), 0.8, math.log(4.0), 0.9],
        "unified-logistic2": [math.log(2.5), 0.65, math.log(2.0), 0.75],
        "kumar": [0.8, 1.1],
    }
    if law == "frantar":
        theta = [math.log(300.0), -1.0, math.log(100.0), 0.3, math.log(2000.0) / 0.35, 0.35,
                 math.log(1.8)]
    elif law == "decoupled":
        rng = np.random.default_rng(1)
        theta = BASE + list(np.log(rng.uniform(0.2, 0.95, len(model.cap_names))))
    else:
        theta = BASE + cap[law]
    assert len(theta) == len(model.names)
    return model, np.array(theta)


def _with_truth(law, noise=0.0, seed=0):
    df = _table(law, seeds=2 if noise else 1)
    design = make_design(df)
    model, theta = _truth(law, design)
    pred = np.exp(model.predict(theta, design, jac=False)[0])
    rng = np.random.default_rng(seed)
    df["loss"] = pred * np.exp(rng.normal(0, noise, len(pred))) if noise else pred
    return df, model, theta


LAW_NAMES = ["chinchilla", "decoupled", "unified", "unified-logistic", "unified-logistic2",
             "kumar", "frantar"]


@pytest.mark.parametrize("law", LAW_NAMES)
def test_jacobian_matches_finite_differences(law):
    df, model, theta = _with_truth(law)
    design = make_design(df)
    rng = np.random.default_rng(0)
    for _ in range(3):
        t = theta + rng.normal(0, 0.05, len(theta))
        assert check_gradient(model, design, t) < 1e-4


@pytest.mark.parametrize("law", LAW_NAMES)
def test_recovers_known_parameters_noise_free(law):
    df, model, theta = _with_truth(law)
    # the truth has noise.L = 0.95: free (by default noise's L, 4 levels up to 4 bits, is 1)
    res = fit_table(df, law=law, capacity_L="free")
    want = model.params(theta)
    for k, v in want.items():
        assert res.params[k] == pytest.approx(v, rel=2e-3), k
    for fam, ps in model.capacity(theta).items():
        for k, v in ps.items():
            assert res.capacity[fam][k] == pytest.approx(v, rel=5e-3), (fam, k)
    assert res.fit_error["rmse_log"] < 1e-5
    assert np.allclose(res.predict(df), df["loss"], rtol=1e-4)


@pytest.mark.parametrize("law", ["chinchilla", "unified", "decoupled", "frantar"])
def test_recovers_known_parameters_with_noise(law):
    df, model, theta = _with_truth(law, noise=0.005, seed=3)
    res = fit_table(df, law=law, capacity_L="free")
    want = model.params(theta)
    exps = [k for k in ("alpha", "beta", "b_N", "b_D") if k in want]
    for k in exps:
        assert res.params[k] == pytest.approx(want[k], rel=0.12), k
    assert res.params["E"] == pytest.approx(want["E"], rel=0.1)
    design = make_design(df)
    true_rho = model.rho(theta, design)
    got_rho = res.model.rho(np.array(res.theta), design)
    assert np.max(np.abs(true_rho - got_rho)) < 0.04
    assert 0.002 < res.fit_error["rmse_log"] < 0.008


def test_unified_rho_is_product_over_roles():
    df, model, theta = _with_truth("unified")
    res = fit_table(df, law="unified", capacity_L="free")
    for spec in ("int2", "int4", "noise2"):
        w, a = res.rho[f"{spec}|bf16"], res.rho[f"bf16|{spec}"]
        assert res.rho[f"{spec}|{spec}"] == pytest.approx(w * a, rel=1e-9)
    assert res.rho["bf16|bf16"] == 1.0
    int4 = 1.0 * math.tanh(0.41 * -math.log(0.011543) / math.log(4)) ** 1.39
    assert res.rho["int4|bf16"] == pytest.approx(int4, rel=1e-3)


def test_capacity_L_fixed_by_default_unless_four_levels_up_to_six_bits():
    # int: int2, int3, int4, int8 (6.7 effective bits) -> L free; noise1..4 (<= 4 bits) -> 1
    df, model, theta = _with_truth("unified")
    theta_1 = theta.copy()
    theta_1[5 + 3] = 0.0  # noise.logL = 0: the truth the default can represent
    df["loss"] = np.exp(model.predict(theta_1, make_design(df), jac=False)[0])
    res = fit_table(df, law="unified", bootstrap=3, workers=1)
    assert set(res.fixed) == {"noise.L"} and "fixed at 1" in res.fixed["noise.L"]
    assert set(res.free) == {"int.L"} and "free" in res.free["int.L"]
    assert res.capacity["noise"]["L"] == 1.0 and "noise.L" not in res.ci
    assert "noise.L" not in res.flags and "int.L" in res.ci
    assert res.capacity["noise"]["F"] == pytest.approx(0.45, rel=5e-3)
    assert res.to_json()["fixed"] == res.fixed
    # without int8 int has 3 levels: its L is fixed too; "free" frees every family
    small = df[~df["format"].str.contains("int8")]
    assert set(fit_table(small, law="unified").fixed) == {"int.L", "noise.L"}
    assert fit_table(small, law="unified", capacity_L="free").fixed == {}
    with pytest.raises(FitError, match="capacity_L"):
        fit_table(small, law="unified", capacity_L="sometimes")
