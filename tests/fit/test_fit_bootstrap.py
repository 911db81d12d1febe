"""Bootstrap: full refits on cluster resamples, deterministic for any number of workers;
bias and shape diagnostics; prediction intervals."""

import numpy as np
import pandas as pd
import pytest

from raysweep.errors import FitError
from raysweep.fit import fit_table
from raysweep.fit.core import _bimodality, _quantile_skew, cluster_ids, resample_clusters
from raysweep.fit.synthetic import synthetic_table


def _int_table(seed=2, noise=0.01):
    return synthetic_table(families=("int",), roles=("w",), sizes=(1e7, 4e7, 1.6e8),
                           tokens_per_param=(50, 200), noise=noise, seed=seed, dense_seeds=2)


def test_two_workers_match_one_worker():
    df = _int_table()
    one = fit_table(df, law="unified", bootstrap=4, seed=1, workers=1)
    two = fit_table(df, law="unified", bootstrap=4, seed=1, workers=2)
    assert np.allclose(np.array(one.samples), np.array(two.samples), rtol=1e-9)
    assert one.ci == two.ci and set(one.params) <= set(one.ci)


def test_replicates_are_full_refits_of_cluster_resamples():
    df = _int_table()
    res = fit_table(df, law="unified", bootstrap=2, seed=3, workers=1)
    # the replicate is the point fit of the resampled table: the same staged multistart
    idx = resample_clusters(cluster_ids(df), 2, 3, tuple(df["format"]))[0]
    refit = fit_table(df.iloc[idx], law="unified")
    assert np.allclose(res.samples[0], refit.theta, rtol=1e-7, atol=1e-9)
    assert res.bootstrap["clusters"] == 6 and res.bootstrap["cluster_by"] == "(n_params, tokens)"


def test_clusters_are_configurations_or_trunks():
    df = _int_table()
    ids = cluster_ids(df)
    assert len(set(ids)) == 6  # 3 sizes x 2 token counts
    for idx in resample_clusters(ids, 5, 0):
        drawn = pd.Series(ids[idx]).value_counts()
        sizes = pd.Series(ids).value_counts()
        # every drawn cluster comes whole: its count is a multiple of its size
        assert all(drawn[c] % sizes[c] == 0 for c in drawn.index)
        assert len(idx) == sum(drawn)
    assert len(set(cluster_ids(df.assign(trunk_id="")))) == 6  # plain runs: their (N, D)
    df = df.assign(trunk_id=[f"t{int(n)}" for n in df["n_params"]])  # one trunk per size
    ids = cluster_ids(df)
    assert len(set(ids)) == 3
    res = fit_table(df, law="unified", bootstrap=2, workers=1)
    assert res.bootstrap["cluster_by"] == "trunk_id" and res.bootstrap["clusters"] == 3


def test_resample_keeps_every_label():
    labels = ("a", "a", "b", "c")
    ids = np.array(["x", "x", "y", "z"])  # b only in y, c only in z
    for idx in resample_clusters(ids, 10, 0, labels):
        assert {labels[i] for i in idx} == {"a", "b", "c"}


def test_shape_diagnostics():
    rng = np.random.default_rng(0)
    normal = rng.normal(size=400)
    skewed = rng.lognormal(sigma=1.0, size=400)
    bimodal = np.r_[rng.normal(-3, 0.5, 200), rng.normal(3, 0.5, 200)]
    assert abs(_quantile_skew(normal)) < 0.2 < 0.5 < _quantile_skew(skewed)
    assert _bimodality(normal) < 0.45 and _bimodality(bimodal) > 0.8


def test_bias_and_flags_reported():
    res = fit_table(_int_table(noise=0.02), law="unified", bootstrap=12, seed=0, workers=2)
    b = res.bootstrap
    assert set(b["bias"]) >= {"A", "alpha", "int.F", "rho[int4|bf16]"}
    assert b["replicates"] == 12 and b["method"] == "full staged refit"
    mean_alpha = np.mean([s[3] for s in res.samples])
    assert b["bias"]["alpha"] == pytest.approx(mean_alpha - res.params["alpha"], abs=1e-12)
    assert set(b["skewed"]) <= set(b["bias"]) and set(b["multimodal"]) <= set(b["bias"])


def test_prediction_interval_contains_noise_and_needs_bootstrap():
    df = _int_table(noise=0.02)
    with pytest.raises(FitError, match="bootstrap"):
        fit_table(df, law="unified").predict_interval(df.head(2))
    res = fit_table(df, law="unified", bootstrap=10, seed=0, workers=2)
    pi = res.predict_interval(df)
    assert np.all(pi["lo"] < pi["loss"]) and np.all(pi["loss"] < pi["hi"])
    # the interval holds the run-to-run noise: at least +-1.5 sigma of the 2% noise
    assert np.all(np.log(pi["hi"] / pi["lo"]) > 2 * 1.5 * 0.02)
    inside = np.mean((pi["lo"] <= df["loss"]) & (df["loss"] <= pi["hi"]))
    assert inside > 0.85
