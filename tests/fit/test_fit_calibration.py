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


def test_expanded_percentile_level_widens_for_few_clusters():
    """Hesterberg's expanded percentile interval: z = sqrt(G/(G-1)) t_{G-1}; the level
    falls back to the nominal one as the number of clusters G grows."""
    from scipy.stats import norm, t

    from raysweep.fit.core import expanded_level

    z = np.sqrt(12 / 11) * t.ppf(0.975, 11)
    assert expanded_level(0.95, 12) == 1 - 2 * norm.sf(z)
    levels = [expanded_level(0.95, g) for g in (3, 5, 12, 20, 50, 1000)]
    assert all(a > b for a, b in zip(levels, levels[1:]))  # fewer clusters: wider
    assert 0.977 < levels[2] < 0.979 and 0.95 < levels[-1] < 0.9505
    assert expanded_level(0.95, 2) == 0.95  # no t quantile with one degree of freedom


def test_fit_reports_the_interval_method_and_uses_the_widened_percentiles():
    from raysweep.fit import fit_table
    from raysweep.fit.synthetic import synthetic_table

    df = synthetic_table(families=("int",), roles=("w",), noise=0.01, seed=3)
    res = fit_table(df, bootstrap=12, seed=1)
    b = res.bootstrap
    assert b["interval"] == "expanded percentile" and b["clusters"] == 12
    assert b["percentile_level"] > 0.97
    assert any("12 bootstrap replicates" in n and "200+" in n for n in res.notes)
    alpha = np.array([res.model.params(np.array(s))["alpha"] for s in res.samples])
    from raysweep.fit.core import expanded_level

    lo_q = 50 * (1 - expanded_level(0.95, 12))
    assert res.ci["alpha"][0] == np.percentile(alpha, lo_q)
    assert res.ci["alpha"][0] <= np.percentile(alpha, 2.5)
