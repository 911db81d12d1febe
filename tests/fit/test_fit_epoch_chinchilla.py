"""Real-data regression: Epoch AI's Chinchilla replication fit (Besiroglu et al. 2024)."""

from pathlib import Path

import pandas as pd
import pytest

from raysweep.fit import fit_table

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "chinchilla_fig4_epoch.csv"
EPOCH = {"A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


@pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} not present")
def test_reproduces_epoch_fit():
    df = pd.read_csv(DATA)
    df["tokens"] = df["training_flop"] / (6 * df["n_params"])
    df = df.sort_values("loss").iloc[:-5]  # Epoch excluded the 5 highest-loss runs
    res = fit_table(df, law="chinchilla")
    assert res.n_points == 240
    for k, v in EPOCH.items():
        assert res.params[k] == pytest.approx(v, rel=0.03), k
    assert res.params["E"] == pytest.approx(1.82, abs=0.02)
    assert res.status.value == "ok"
