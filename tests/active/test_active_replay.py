"""The headline of issue 16 as a regression test: on Epoch's Chinchilla table (pool: the
runs under 1e21 FLOPs; targets: the runs at or above, held out), the default design at
10% of the pool's FLOPs extrapolates to the targets better than the median random subset
of the same FLOPs and within 1.25x of the whole pool's fit (docs/active.md)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysweep.active.acquisition import ActiveDesign, run_in_process
from raysweep.fit import fit_table

TABLE = Path(__file__).resolve().parents[2] / "data" / "external" / "chinchilla_fig4_epoch.csv"


def rmse_log(pool, targets, subset):
    res = fit_table(pool.iloc[sorted(subset)], law="chinchilla")
    pred = res.predict(targets)
    return float(np.sqrt(np.mean((np.log(pred) - np.log(targets["loss"].to_numpy())) ** 2)))


def prefix_within(order, cost, budget):
    picked, spent = [], 0.0
    for i in order:
        if spent + cost[i] <= budget:
            picked.append(int(i))
            spent += cost[i]
    return picked


@pytest.mark.timeout(600)
def test_default_design_beats_random_on_the_chinchilla_replay():
    df = pd.read_csv(TABLE)
    df["tokens"] = df["training_flop"] / (6 * df["n_params"])
    flops = 6 * df["n_params"] * df["tokens"]
    pool = df[flops < 1e21].reset_index(drop=True)
    targets = df[flops >= 1e21].reset_index(drop=True)
    rows = [{"run_id": f"r{i}", "n_params": float(n), "tokens": float(d)}
            for i, (n, d) in enumerate(zip(pool["n_params"], pool["tokens"]))]
    cost = 6 * pool["n_params"].to_numpy() * pool["tokens"].to_numpy()
    budget = 0.1 * cost.sum()
    points = list(dict.fromkeys(zip(targets["n_params"], targets["tokens"])))
    design = ActiveDesign(rows, budget, target=points)
    loss = pool["loss"].to_numpy()
    chosen = run_in_process(design, lambda i: loss[i], batch=4)
    assert design.spent(chosen) <= budget
    active = rmse_log(pool, targets, chosen)
    whole = rmse_log(pool, targets, range(len(pool)))
    random = np.median([rmse_log(pool, targets, prefix_within(
        np.random.default_rng(s).permutation(len(pool)), cost, budget)) for s in range(9)])
    assert active < random, (active, random)
    assert active <= 1.25 * whole, (active, whole)
    # most of its FLOPs go to the runs nearest the targets (the law bends below)
    top = np.log(cost) > np.log(cost.max()) - 1.5
    assert cost[[i for i in chosen if top[i]]].sum() > 0.5 * cost[list(chosen)].sum()
