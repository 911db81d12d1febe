"""Benchmark the fitter: unified fit of 300 synthetic runs over 6 families, 200 bootstrap refits.

    python bench/fit.py [--runs 300] [--bootstrap 200] [--workers 2]

Prints one JSON object on its last line: ``unified_fit_s`` (point estimate,
staged multi-start), ``bootstrap_200_s`` (refits on ``--workers`` processes),
plus the recovered parameters next to the truth. Targets (issue 5): < 20 s
and < 120 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from raysweep.fit import fit_table
from raysweep.fit.synthetic import CAPACITY, FAMILIES, TRUTH, synthetic_table


def table(runs: int, seed: int = 0):
    df = synthetic_table(families=tuple(FAMILIES), roles=("w", "wa"), noise=0.01, seed=seed,
                         dense_seeds=2)
    dense = df[df["format"] == "bf16|bf16"]
    rest = df.drop(dense.index).sample(runs - len(dense), random_state=seed)
    return pd.concat([dense, rest])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    df = table(args.runs)
    t0 = time.perf_counter()
    point = fit_table(df, law="unified")
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    boot = fit_table(df, law="unified", bootstrap=args.bootstrap, workers=args.workers)
    total_s = time.perf_counter() - t0
    out = {
        "runs": len(df), "families": len(point.capacity), "params": len(point.theta),
        "unified_fit_s": round(fit_s, 3),
        # the bootstrap call also refits the point estimate: subtract it
        f"bootstrap_{args.bootstrap}_s": round(total_s - fit_s, 3),
        "workers": args.workers, "status": boot.status.value,
        "fit_rmse_log": round(point.fit_error["rmse_log"], 5),
        "alpha": [round(point.params["alpha"], 4), TRUTH["alpha"]],
        "F_int": [round(point.capacity["int"]["F"], 4), CAPACITY["int"][1]],
    }
    if args.bootstrap:
        out["alpha_ci"] = [round(x, 4) for x in boot.ci["alpha"]]
        out["ci_contains_truth"] = float(np.mean([boot.ci[k][0] <= v <= boot.ci[k][1]
                                                  for k, v in TRUTH.items()]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
