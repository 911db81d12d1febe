"""bench/active.py: the --quick run and the --replay contract (last line: one JSON object)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "active.py"


def run(*args, timeout=300):
    out = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(300)
def test_replay_of_a_dense_table_prints_the_contract(tmp_path):
    """N, D, loss columns (Farseer's names); targets beyond the pool."""
    rng = np.random.default_rng(0)
    n = np.repeat([1e7, 2e7, 4e7, 8e7, 1.6e8], 5)
    d = n * np.tile([5, 10, 20, 40, 80], 5)
    loss = (400 * n ** -0.34 + 1800 * d ** -0.37 + 1.8) * np.exp(0.005 * rng.standard_normal(25))
    pd.DataFrame({"group": "all", "N": n, "D": d, "loss": loss}).to_csv(tmp_path / "p.csv")
    tn, td = np.array([6.4e8, 1.3e9]), np.array([1.3e10, 2.6e10])
    pd.DataFrame({"N": tn, "D": td, "loss": 400 * tn ** -0.34 + 1800 * td ** -0.37 + 1.8}
                 ).to_csv(tmp_path / "t.csv")
    res = run("--replay", str(tmp_path / "p.csv"), "--targets", str(tmp_path / "t.csv"),
              "--budgets", "0.3,0.60", "--seeds", "2")
    for metric in ("rmse_log", "r2"):
        table = res[metric]
        assert {"active", "random", "cheapest", "pool"} <= set(table)
        assert set(table["pool"]) == {"1.0"}
        for s in ("active", "random", "cheapest"):
            assert set(table[s]) == {"0.3", "0.60"}  # budgets as written
    pool = res["rmse_log"]["pool"]["1.0"]
    assert 0 < pool < 0.05  # the whole pool extrapolates this law well
    assert all(v is None or v > 0
               for s in ("active", "random") for v in res["rmse_log"][s].values())
    assert res["details"]["n_targets"] == 2 and res["details"]["n_pool"] == 25


@pytest.mark.timeout(300)
def test_quick_run_keeps_the_contract_key():
    res = run("--quick")
    assert 0 < res["median_fraction_to_match_full_grid"] <= 1
    case = res["cases"]["ref:quickstart"]
    assert case["n_targets"] >= 1 and case["seeds"] == 3
    for s in ("active", "random", "cheapest", "vopt", "oracle"):
        assert set(case["rmse_log"][s]) == {"0.2", "0.5"}
        med, lo, hi = case["rmse_log"][s]["0.5"]
        assert med is None or lo <= med <= hi
    assert set(case["vs_random"]) == {"active", "cheapest", "vopt", "oracle"}


def test_bad_budgets_are_refused():
    out = subprocess.run([sys.executable, str(BENCH), "--budgets", "0.1,2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "--budgets" in out.stderr and "allowed" in out.stderr
