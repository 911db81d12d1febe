"""The benchmark's yardstick: FLOPs a design knowing the true law needs to match the grid."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "active.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_active", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_oracle_fraction_is_bounded_and_far_above_ten_percent(bench):
    law = bench.LAWS["chinchilla_unified"]
    pool = bench.make_pool(law)
    total = sum(6 * r["n_params"] * r["tokens"] for r in pool)
    init_cost = sum(6 * pool[i]["n_params"] * pool[i]["tokens"]
                    for i in bench.ActiveDesign(pool, 1.0).init) / total
    frac = bench.oracle_fraction_to_match(law, 0.01, pool)
    assert init_cost < frac <= 1.0
    # The full grid trains all six target points (43% of its FLOPs): even with
    # the truth known, matching its target error needs most of the grid.
    assert frac > 0.5



def test_oracle_fraction_with_targets_held_out_of_the_pool(bench):
    """Even when no strategy (nor the full grid) may train the target points, matching
    the full grid's extrapolation still takes most of its FLOPs."""
    law = bench.LAWS["chinchilla_unified"]
    n_max, d_max = max(bench.SIZES), max(bench.SIZES) * max(bench.TPP)
    pool = [r for r in bench.make_pool(law) if (r["n_params"], r["tokens"]) != (n_max, d_max)]
    assert len(pool) == len(bench.make_pool(law)) - len(law["rho"])
    frac = bench.oracle_fraction_to_match(law, 0.01, pool, target=[(n_max, d_max)])
    assert 0.5 < frac <= 1.0


def test_replay_holdout_scores_each_format_against_its_own_held_out_run(bench, tmp_path):
    """Noise-free table whose first row is a target run: with the target runs held out
    the full grid still extrapolates to them almost exactly, which it cannot if the
    truth were matched to the wrong formats (labels are ordered by first appearance,
    and leaving the first row out reorders them)."""
    import pandas as pd

    law = bench.LAWS["steep_low_rho"]
    pool = bench.make_pool(law)
    n_max, d_max = max(bench.SIZES), max(bench.SIZES) * max(bench.TPP)
    first = next(i for i, r in enumerate(pool) if r["format"] == "w2"
                 and (r["n_params"], r["tokens"]) == (n_max, d_max))
    rows = [pool[first]] + pool[:first] + pool[first + 1:]
    df = pd.DataFrame(rows).assign(
        loss=[bench.true_loss(law, r["format"], r["n_params"], r["tokens"]) for r in rows],
        status="ok")
    path = tmp_path / "table.csv"
    df.to_csv(path, index=False)
    case = bench.replay_case(str(path), 1, holdout=True)
    assert case["case"].endswith("/holdout")
    assert case["full_grid"] < 2e-3, case["full_grid"]


def test_posterior_parameters_reproduce_its_predictions_and_covariances(bench):
    """The member and central parameters the posterior now carries give back its
    predictions, and the tried covariances of the benchmark are symmetric PSD."""
    law = bench.LAWS["chinchilla_unified"]
    pool = bench.make_pool(law)
    design = bench.ActiveDesign(pool, 1.0, ensemble=6)
    obs = {i: bench.true_loss(law, pool[i]["format"], pool[i]["n_params"], pool[i]["tokens"])
           for i in design.init}
    post, cov = design.covariance(obs)
    rows = np.arange(len(design.pool.n))
    sur = design.surrogate
    assert np.allclose(np.exp(sur.predict_log(post.theta, rows)), post.central)
    for theta, member in zip(post.thetas, post.members, strict=True):
        assert np.allclose(np.exp(sur.predict_log(theta, rows)), member)
    assert np.allclose(cov, np.cov(post.members, rowvar=False))
    for cls in (bench.LaplaceDesign, bench.MixedDesign):
        _, c = cls(pool, 1.0, ensemble=6).covariance(obs)
        assert c.shape == cov.shape and np.allclose(c, c.T)
        assert np.linalg.eigvalsh(c).min() > -1e-9 * np.abs(c).max()
