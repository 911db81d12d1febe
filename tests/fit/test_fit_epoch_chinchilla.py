"""Real-data regression: Epoch AI's Chinchilla replication fit (Besiroglu et al. 2024)."""

from pathlib import Path

import pandas as pd
import pytest

from raysweep.fit import fit_table

DATA = Path(__file__).resolve().parents[2] / "data" / "external" / "chinchilla_fig4_epoch.csv"
EPOCH = {"A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


def test_reproduces_epoch_fit():
    df = pd.read_csv(DATA)
    df["tokens"] = df["training_flop"] / (6 * df["n_params"])
    df = df.sort_values("loss").iloc[:-5]  # Epoch excluded the 5 highest-loss runs
    res = fit_table(df, law="chinchilla")
    assert res.n_points == 240
    for k in ("A", "B"):
        assert res.params[k] == pytest.approx(EPOCH[k], rel=0.03), k
    for k, v in (("alpha", EPOCH["alpha"]), ("beta", EPOCH["beta"]), ("E", 1.82)):
        assert res.params[k] == pytest.approx(v, abs=0.005), k
    assert res.status.value == "ok"


def test_epoch_fit_intervals_from_full_refits():
    df = pd.read_csv(DATA)
    df["tokens"] = df["training_flop"] / (6 * df["n_params"])
    df = df.sort_values("loss").iloc[:-5]
    res = fit_table(df, law="chinchilla", bootstrap=10, seed=0, workers=2)
    assert res.bootstrap["method"] == "full staged refit" and res.bootstrap["clusters"] > 100
    for k in ("A", "B", "alpha", "beta", "E"):
        lo, hi = res.ci[k]
        assert lo < hi, k
        assert lo * 0.999 <= res.params[k] <= hi * 1.001 or k in res.bootstrap["skewed"], k
    # Epoch's published exponents lie inside the intervals of the full refits
    for k in ("alpha", "beta"):
        assert res.ci[k][0] - 0.005 <= EPOCH[k] <= res.ci[k][1] + 0.005, (k, res.ci[k])
    assert res.ci["alpha"][1] - res.ci["alpha"][0] < 0.2
