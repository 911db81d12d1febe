"""WSD branches against separately trained cosine runs at tiny scale (CPU); one JSON line.

For each seed, one (format, N) family over several D (tokens per parameter
``--tpp``): a WSD trunk and its cooldown branches (:func:`raysweep.train.wsd.wsd_configs`),
and the same D trained as separate cosine runs (today's recipe). Reports per D
the branch loss, the cosine loss, their difference (mean and sd over seeds)
against the seed noise (sd of the cosine losses over seeds), and the FLOPs and
wall seconds both ways.

Usage: ``python bench/wsd.py [--size 2x32] [--tpp 5 10 20] [--seeds 0 1 2]
[--cooldown 0.2] [--decay sqrt] [--data stdlib]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from raysweep.train.loop import train
from raysweep.train.wsd import wsd_configs


def _sd(xs):
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="2x32")
    ap.add_argument("--tpp", type=float, nargs="+", default=[5, 10, 20])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cooldown", type=float, default=0.2)
    ap.add_argument("--decay", default="sqrt")
    ap.add_argument("--data", default="stdlib")
    args = ap.parse_args(argv)
    per_d: dict[int, dict[str, list]] = {}
    wall = {"wsd": 0.0, "cosine": 0.0}
    flops = {"wsd": 0.0, "cosine": 0.0}
    n = None
    for seed in args.seeds:
        base = {"size": args.size, "data": args.data, "seed": seed}
        probe = wsd_configs(base, [1])
        n = probe.n_params
        ds = [int(round(r * n)) for r in args.tpp]
        with tempfile.TemporaryDirectory() as tmp:
            fam = wsd_configs(base, ds, cooldown=args.cooldown, decay=args.decay,
                              trunk_dir=f"{tmp}/trunk")
            t0 = time.perf_counter()
            trunk = train(fam.trunk.config)
            branches = [train(b.config) for b in fam.branches]
            wall["wsd"] += time.perf_counter() - t0
            flops["wsd"] += trunk["flops_own"] + sum(b["flops_own"] for b in branches)
        t0 = time.perf_counter()
        cosines = [train({**base, "tokens": d}) for d in ds]
        wall["cosine"] += time.perf_counter() - t0
        flops["cosine"] += sum(c["flops"] for c in cosines)
        for d, b, c in zip(ds, branches, cosines):
            e = per_d.setdefault(round(d / n), {"wsd": [], "cosine": []})
            e["wsd"].append(b["loss"])
            e["cosine"].append(c["loss"])
    rows = []
    for tpp, e in sorted(per_d.items()):
        diff = [w - c for w, c in zip(e["wsd"], e["cosine"])]
        rows.append({"tokens_per_param": tpp, "wsd_loss": statistics.mean(e["wsd"]),
                     "cosine_loss": statistics.mean(e["cosine"]),
                     "diff_mean": statistics.mean(diff), "diff_sd": _sd(diff),
                     "seed_sd_cosine": _sd(e["cosine"]), "seed_sd_wsd": _sd(e["wsd"])})
    out = {"size": args.size, "n_params": n, "seeds": args.seeds, "cooldown": args.cooldown,
           "decay": args.decay, "data": args.data, "per_d": rows,
           "flops_wsd": flops["wsd"], "flops_cosine": flops["cosine"],
           "flops_ratio": flops["wsd"] / flops["cosine"],
           "wall_s_wsd": wall["wsd"], "wall_s_cosine": wall["cosine"],
           "wall_ratio": wall["wsd"] / wall["cosine"]}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
