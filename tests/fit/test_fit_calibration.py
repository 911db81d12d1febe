"""Calibration (small version of bench/fit.py's coverage table): on tables drawn from a
known unified law, the 95% bootstrap intervals hold the truth and the 95% prediction
intervals hold fresh runs at about the nominal rate."""

import numpy as np

from raysweep.fit.synthetic import calibration, true_values


def test_true_values_of_the_paper_law():
    t = true_values(("int",), labels=["int4|bf16", "int4|int4", "bf16|bf16"])
    assert t["int.L"] == 1.0 and t["int.F"] == 0.41 and t["int.C"] == 1.39
    assert t["rho[int4|int4]"] == t["rho[int4|bf16]"] ** 2 and "rho[bf16|bf16]" not in t


def test_intervals_cover_the_truth_near_the_nominal_rate():
    c = calibration(grid="4x3", noise=0.01, datasets=5, bootstrap=15, families=("int",),
                    roles=("w",), seed=7)
    cov = c["coverage"]
    assert {"A", "alpha", "B", "beta", "E", "int.F", "int.C", "rho[int2|bf16]"} <= set(cov)
    assert "int.L" in cov and c["fixed"] == []  # int2..int8: 4 levels, one above 6 bits
    # 5 datasets x 13 names (correlated): the pooled rate, nominal 0.95
    pooled = np.mean(list(cov.values()))
    assert pooled >= 0.8, cov
    # 5 x 72 fresh runs in their 95% prediction intervals
    assert c["heldout_runs"] == 5 * 72
    assert 0.88 <= c["pi_coverage"] <= 0.995, c["pi_coverage"]
