"""Bootstrap intervals: coverage near the nominal rate; the two-process path agrees."""

import numpy as np

from raysweep.fit import fit_table
from raysweep.fit.synthetic import TRUTH, synthetic_table


def _dense(seed, noise=0.01):
    return synthetic_table(families=(), sizes=(1e7, 3e7, 1e8, 3e8),
                           tokens_per_param=(20, 50, 100, 200), seeds=2, noise=noise, seed=seed)


def test_percentile_intervals_cover_truth_near_nominal_rate():
    hits, widths = [], []
    for s in range(14):
        res = fit_table(_dense(s), law="chinchilla", bootstrap=30, seed=s, workers=1)
        hits += [res.ci[k][0] <= v <= res.ci[k][1] for k, v in TRUTH.items()]
        widths.append((res.ci["alpha"][1] - res.ci["alpha"][0]) / TRUTH["alpha"])
    coverage = np.mean(hits)
    # nominal 95%; 70 correlated checks: accept 0.8..1, and the intervals must be informative
    assert 0.8 <= coverage <= 1.0, coverage
    assert np.median(widths) < 0.6


def test_two_workers_match_one_worker():
    df = _dense(0)
    one = fit_table(df, law="chinchilla", bootstrap=6, seed=1, workers=1)
    two = fit_table(df, law="chinchilla", bootstrap=6, seed=1, workers=2)
    assert np.allclose(np.array(one.samples), np.array(two.samples), rtol=1e-6)
    assert set(one.ci) == set(one.params)


def test_unified_bootstrap_gives_capacity_and_rho_intervals():
    df = synthetic_table(families=("int",), roles=("w", "a"), sizes=(1e7, 4e7, 1.6e8),
                         tokens_per_param=(50, 200), noise=0.01, seed=2, dense_seeds=2)
    res = fit_table(df, law="unified", bootstrap=8, seed=0, workers=1)
    assert {"int.L", "int.F", "int.C", "rho[int4|bf16]"} <= set(res.ci)
    lo, hi = res.ci["rho[int2|bf16]"]
    assert lo <= res.rho["int2|bf16"] <= hi
