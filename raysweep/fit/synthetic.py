"""Synthetic results tables drawn from a known unified law (tests, benchmarks, demos).

The table carries ``gmse_*`` and ``family_*`` columns (no spec columns), so it
needs no format parser: the fit reads each role's GMSE and family directly.
The GMSE values of ``int``, ``sparse`` and ``noise`` are the exact reference values
of the paper (Panferov et al. 2025, "Unified Scaling Laws for Compressed
Representations"); the other families' values are illustrative, not measurements.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from raysweep.fit.laws import PAPER_CAPACITY, tanh_capacity, unified_loss


def _sparse_gmse(s: float) -> float:
    """Unstructured magnitude sparsity s on N(0,1): ``s - 2 t phi(t)``, t = Phi^-1((1+s)/2)."""
    from scipy.stats import norm

    t = norm.ppf((1 + s) / 2)
    return float(s - 2 * t * norm.pdf(t))


# family -> {label: (GMSE, bits per element)}
FAMILIES: dict[str, dict[str, tuple[float, float]]] = {
    "int": {"int2": (0.11885, 2), "int3": (0.03744, 3), "int4": (0.011543, 4),
            "int8": (8.78e-5, 8)},
    "noise": {f"noise{b}": (4.0 ** -b, b) for b in (1, 2, 3, 4)},
    "sparse": {f"sparse{p}": (_sparse_gmse(p / 100), 16 * (1 - p / 100) + 1)
               for p in (30, 50, 70, 90)},
    "fp": {"fp3": (0.05, 3), "fp4": (0.012685, 4), "fp6": (0.0032, 6)},
    "lloyd": {"lloyd2": (0.1175, 2), "lloyd3": (0.03454, 3), "lloyd4": (0.009497, 4)},
    "vq": {"vq2x4": (0.10, 2), "vq2x6": (0.032, 3), "vq2x8": (0.0095, 4)},
}

TRUTH = {"A": 400.0, "alpha": 0.30, "B": 2000.0, "beta": 0.35, "E": 1.8}
CAPACITY = {"int": tuple(PAPER_CAPACITY.values()), "noise": (1.0, 0.45, 1.2),
            "sparse": (0.95, 0.8, 1.0), "fp": (0.97, 0.40, 1.5), "lloyd": (1.0, 0.42, 1.3),
            "vq": (0.9, 0.5, 1.2)}


def unified_rho(family: str, gmse: float, capacity=CAPACITY) -> float:
    return tanh_capacity(gmse, *capacity[family])


def synthetic_table(families=("int", "noise"), sizes=(3e7, 5e7, 1e8, 2e8),
                    tokens_per_param=(50, 100, 200), roles=("w", "a", "wa"), seeds=1,
                    noise=0.0, seed=0, truth=TRUTH, capacity=CAPACITY,
                    dense_seeds: int | None = None) -> pd.DataFrame:
    """Rows for dense and for each format of ``families`` on each role combination.

    ``roles``: ``w`` weights only, ``a`` activations only, ``wa`` both (same
    format), ``cross`` every weights format with every activations format of the
    same family (for composability). ``noise`` is the std of multiplicative
    log-normal noise on the loss.
    """
    rng = np.random.default_rng(seed)
    reps = [(None, None)]
    for fam in families:
        specs = list(FAMILIES[fam])
        for s in specs:
            if "w" in roles:
                reps.append(((fam, s), None))
            if "a" in roles:
                reps.append((None, (fam, s)))
            if "wa" in roles:
                reps.append(((fam, s), (fam, s)))
        if "cross" in roles:
            reps += [((fam, w), (fam, a)) for w in specs for a in specs if w != a]
    rows = []
    for w, a in reps:
        n_seeds = (dense_seeds or seeds) if (w, a) == (None, None) else seeds
        for n in sizes:
            for r in tokens_per_param:
                for s in range(n_seeds):
                    rows.append(_row(w, a, n, r, s, truth, capacity, noise, rng))
    df = pd.DataFrame(rows)
    df.insert(0, "run_id", [f"syn{i:05d}" for i in range(len(df))])
    return df


def _row(w, a, n, r, s, truth, capacity, noise, rng) -> dict:
    rho, row = 1.0, {}
    for role, rep in (("weights", w), ("activations", a)):
        if rep is None:
            row.update({f"gmse_{role}": 0.0, f"family_{role}": "", f"bits_{role}": 16.0})
            continue
        fam, spec = rep
        g, bits = FAMILIES[fam][spec]
        rho *= unified_rho(fam, g, capacity)
        row.update({f"gmse_{role}": g, f"family_{role}": fam, f"bits_{role}": float(bits)})
    d = n * r
    loss = unified_loss(n, d, rho, truth)
    if noise:
        loss *= math.exp(rng.normal(0.0, noise))
    label = f"{w[1] if w else 'bf16'}|{a[1] if a else 'bf16'}"
    fams = {x[0] for x in (w, a) if x}
    return {"study": "synthetic", "format": label, "family": "+".join(sorted(fams)) or "dense",
            **row, "n_params": int(n), "tokens": int(d), "tokens_per_param": float(r),
            "seed": s, "loss": loss, "status": "ok"}


# The calibration truth: the paper's scalar-quantization curve for int, noise injection
# on its own curve; L = 1 for both (the paper's saturating representations).
CALIBRATION_CAPACITY = {**CAPACITY, "int": tuple(PAPER_CAPACITY.values()),
                        "noise": (1.0, 0.45, 1.2)}
# grid shapes: (sizes, tokens per parameter)
CALIBRATION_GRIDS = {
    "4x3": ((3e7, 5e7, 1e8, 2e8), (50, 100, 200)),
    "5x4": ((2e7, 4e7, 8e7, 1.6e8, 3.2e8), (25, 50, 100, 200)),
}


def true_values(families, capacity=CALIBRATION_CAPACITY, truth=TRUTH,
                labels=()) -> dict[str, float]:
    """The reported parameters of the truth (``A``, ``int.F``, ...) and ``rho[label]`` of
    each ``"<w>|<a>"`` label of :data:`FAMILIES` specs."""
    out = dict(truth)
    for fam in families:
        out.update(dict(zip((f"{fam}.L", f"{fam}.F", f"{fam}.C"), capacity[fam])))
    spec_family = {s: f for f, specs in FAMILIES.items() for s in specs}
    for lab in labels:
        rho = 1.0
        for spec in lab.split("|"):
            if spec in spec_family:
                rho *= unified_rho(spec_family[spec], FAMILIES[spec_family[spec]][spec][0],
                                   capacity)
        if lab != "bf16|bf16":
            out[f"rho[{lab}]"] = rho
    return out


def calibration(grid="4x3", noise=0.01, datasets=20, bootstrap=100, families=("int", "noise"),
                roles=("w", "a"), seed=0, workers=2, capacity_L="auto") -> dict:
    """Coverage of the 95% intervals on tables drawn from a known unified law.

    For each of ``datasets`` tables (grid ``CALIBRATION_GRIDS[grid]``, log-normal noise
    ``noise``, truth :data:`TRUTH` and :data:`CALIBRATION_CAPACITY`): fit with
    ``bootstrap`` full refits; count, per reported parameter and per rho, the datasets
    whose interval holds the truth; and draw one fresh run of every configuration (new
    noise, the same law) and count the runs inside their 95% prediction interval.
    Returns ``{"coverage": {name: fraction}, "pi_coverage": fraction, "datasets",
    "heldout_runs", "fixed", "bias": {name: mean bootstrap bias / truth}, ...}``.
    """
    from raysweep.fit.core import fit_table

    sizes, tpp = CALIBRATION_GRIDS[grid]
    kw = dict(families=families, roles=roles, sizes=sizes, tokens_per_param=tpp,
              noise=noise, capacity=CALIBRATION_CAPACITY, dense_seeds=2)
    hits: dict[str, list[bool]] = {}
    est_err: dict[str, list[float]] = {}
    pi_hits: list[bool] = []
    fixed: set = set()
    for i in range(datasets):
        df = synthetic_table(seed=seed * 100_003 + i, **kw)
        fresh = synthetic_table(seed=seed * 100_003 + i + 50_000, **kw)
        res = fit_table(df, law="unified", bootstrap=bootstrap, seed=i, workers=workers,
                        capacity_L=capacity_L)
        fixed |= set(res.fixed)
        truth = true_values(families, labels=sorted(set(df["format"])))
        est = {**res.params, **{f"{f}.{k}": v for f, ps in res.capacity.items()
                                for k, v in ps.items()},
               **{f"rho[{k}]": v for k, v in res.rho.items()}}
        for name, v in truth.items():
            if name in res.fixed or name not in res.ci:
                continue
            lo, hi = res.ci[name]
            hits.setdefault(name, []).append(bool(lo <= v <= hi))
            est_err.setdefault(name, []).append((est[name] - v) / abs(v))
        pi = res.predict_interval(fresh)
        y = fresh["loss"].to_numpy(dtype=float)
        pi_hits += list((pi["lo"] <= y) & (y <= pi["hi"]))
    return {"grid": grid, "noise": noise, "datasets": datasets, "bootstrap": bootstrap,
            "families": list(families), "fixed": sorted(fixed),
            "coverage": {k: float(np.mean(v)) for k, v in hits.items()},
            "mean_rel_error": {k: float(np.mean(v)) for k, v in est_err.items()},
            "pi_coverage": float(np.mean(pi_hits)), "heldout_runs": len(pi_hits)}
