"""Benchmark of active search on held-out targets beyond the pool (issue 16).

Every case is a *pool* of runs the search may buy and *targets* it may not:
the targets are always held out and lie beyond the pool, so every strategy,
the whole pool included, extrapolates to them.

Cases (default run):

- ``chinchilla``: Epoch AI's Chinchilla table; pool: the runs under 1e21 FLOPs,
  targets: the runs at or above;
- ``farseer``: Farseer's runs as packaged by "Spend Less, Fit Better"
  (farseer_train.csv the pool, farseer_test.csv the targets, 6ND per run);
- ``ref:<name>``: every committed reference study under data/reference/
  (results.csv), the largest N held out;
- ``sim:<truth>``: simulated 6-format grids with misspecification: rho drifting
  with N, an excess loss at small N, noise growing at small N, noise shared by
  the formats of one seed (``sim:clean`` has none of it).

Budgets are fractions of the pool's FLOPs (6 N D summed). Strategies (all start
from the search's initial design except ``pool``):

- ``active``: raysweep.active (``design: plan``, batch 4 as a study), run to each budget;
- ``random``: the rest of the pool in random order (a seed per order);
- ``cheapest``: the rest by increasing 6 N D;
- ``vopt``: one relaxed V-optimal design solved once, at the fit on the initial
  design, for the whole budget, rounded by weight (no adaptation);
- ``oracle``: greedy on the linearized target variance at the *true* law
  (simulation) or at the fit on pool plus targets (replays), by gain per
  (6 N D)^c with c in {0, 0.5, 1}, best kept: a strategy that knows the truth;
- ``pool``: the whole pool (budget 1.0).

Every strategy's runs are scored by ``raysweep fit``'s fitter
(:func:`raysweep.fit.fit_table`, the chinchilla law on dense tables, the
decoupled law otherwise): ``rmse_log`` (RMSE of log-loss at the targets; the
primary metric), ``r2`` (of the loss at the targets) and, in simulation,
``rho_err`` (largest absolute error of rho against the true rho at the targets'
N, which drifts with N in ``sim:misspecified``) and ``regret``:
sqrt(V(S) / V*), V(S) the linearized mean target variance of the chosen runs at
the truth, V* the certified lower bound of the relaxed budgeted design
(:func:`raysweep.active.planner.relaxed_design`), below every design of the
budget. Medians over seeds with 95% bootstrap intervals; ``vs_random``: the
paired median of (strategy - random) with its interval.

Cost on 2 shared cores (2026-12-02): ``--quick`` 15-25 s; a replay at two
budgets and 20 seeds 2.5-3.5 min; the default run (every case, 7 budgets, 20
seeds) far longer than a few minutes (Chinchilla alone 8 min, a simulated case
about 1 min per seed), so pass ``--cases``/``--budgets``/``--seeds`` to size it.

Usage: python bench/active.py [--replay POOL.csv --targets TARGETS.csv]
       [--budgets 0.05,0.1] [--seeds K] [--quick] [--cases chinchilla,farseer,...]
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.active.acquisition import ActiveDesign, run_in_process
from raysweep.active.options import DESIGNS, DISCREPANCY, DISCREPANCY_SCALE
from raysweep.active.planner import PRIOR_SD, PRIOR_SD_CAP, relaxed_design, round_plan
from raysweep.errors import FitError
from raysweep.fit import fit_table
from raysweep.results import row_is_dense

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "data" / "external"  # the Epoch Chinchilla and Farseer tables, with sources
BUDGETS = ("0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1.0")
BATCH = 4
ORACLE_EXPONENTS = (0.0, 0.5, 1.0)
ACTIVE_KW: dict = {}  # extra ActiveDesign options of the active and vopt strategies


# ----------------------------------------------------------------- tables

def load_table(path: str | Path) -> pd.DataFrame:
    """A table in the results schema, or dense N, D, loss columns (Farseer's ``N``/``D``;
    Chinchilla's ``training_flop``, D = FLOPs / 6N)."""
    df = pd.read_csv(path)
    df = df.rename(columns={"N": "n_params", "D": "tokens"})
    if "tokens" not in df.columns and "training_flop" in df.columns:
        df["tokens"] = df["training_flop"] / (6 * df["n_params"])
    missing = {"n_params", "tokens", "loss"} - set(df.columns)
    if missing:
        raise SystemExit(f"{path}: missing column(s) {sorted(missing)}; need n_params (or N), "
                         "tokens (or D, or training_flop) and loss")
    if "status" in df.columns:
        df = df[df["status"].fillna("ok") == "ok"]
    df = df[np.isfinite(df["loss"]) & (df["loss"] > 0)].reset_index(drop=True)
    return df


def rows_of(df: pd.DataFrame) -> list[dict]:
    keep = [c for c in ("n_params", "tokens", "format", "weights", "activations")
            if c in df.columns]
    rows = []
    for i, r in enumerate(df[keep].to_dict("records")):
        r["run_id"] = f"r{i}"
        if "weights" in r:
            r.setdefault("activations", "bf16")
        rows.append(r)
    return rows


def law_of(rows) -> str:
    return "chinchilla" if all(row_is_dense(r) for r in rows) else "decoupled"


# ----------------------------------------------------------------- scoring

class Scorer:
    """``raysweep fit``'s fit of a subset of the pool, scored at the targets (memoized)."""

    def __init__(self, pool: pd.DataFrame, targets: pd.DataFrame, truth_targets=None,
                 truth_rho=None):
        self.pool, self.targets = pool, targets
        self.law = law_of(rows_of(pool))
        self.y = (np.asarray(truth_targets, float) if truth_targets is not None
                  else targets["loss"].to_numpy(float))
        self.truth_rho = truth_rho  # label -> rho at the targets' N, or None
        self._memo: dict = {}

    def __call__(self, subset, answers) -> dict | None:
        key = (tuple(sorted(subset)), tuple(answers[i] for i in sorted(subset)))
        if key in self._memo:
            return self._memo[key]
        df = self.pool.iloc[sorted(subset)].copy()
        df["loss"] = [answers[i] for i in sorted(subset)]
        try:
            res = fit_table(df, law=self.law)
            pred = res.predict(self.targets)
        except (FitError, ValueError, np.linalg.LinAlgError):
            self._memo[key] = None
            return None
        err = np.log(pred) - np.log(self.y)
        out = {"rmse_log": float(np.sqrt(np.mean(err ** 2))),
               "r2": float(1 - np.sum((pred - self.y) ** 2)
                           / np.sum((self.y - self.y.mean()) ** 2))}
        if self.truth_rho:
            out["rho_err"] = float(max(abs((res.rho.get(lab) or math.nan) - r)
                                       for lab, r in self.truth_rho.items()))
        self._memo[key] = out
        return out


def prefix_within(order, cost, budget) -> list[int]:
    """Greedy prefix of ``order`` that fits ``budget`` (skipping runs that do not)."""
    picked, spent = [], 0.0
    for i in order:
        if spent + cost[i] <= budget * (1 + 1e-9):
            picked.append(int(i))
            spent += cost[i]
    return picked


# ----------------------------------------------------------------- linearized designs

class Linearized:
    """The law linearized at fixed parameters: V(S) for any subset, the relaxed bound,
    and the truth-knowing greedy oracle."""

    def __init__(self, design: ActiveDesign, observed_truth: dict[int, float], sigma: float):
        jac = design.laplace.fit(observed_truth).jac
        n_pool = design.pool.n_pool
        self.info = jac[:n_pool] / sigma
        self.grad = jac[design.pool.target_rows]
        sd = np.array([*PRIOR_SD, *[PRIOR_SD_CAP] * (jac.shape[1] - len(PRIOR_SD))])
        self.m0 = np.diag(sd ** -2.0)
        self.cost = design.pool.cost

    def v(self, subset) -> float:
        s = list(subset)
        m = self.m0 + self.info[s].T @ self.info[s]
        return float(np.trace(self.grad @ np.linalg.solve(m, self.grad.T))) / len(self.grad)

    def bound(self, budget: float) -> float:
        return relaxed_design(self.info, self.m0, self.grad, self.cost, budget,
                              iters=400, tol=1e-5).lower_bound

    def greedy(self, start, budget: float) -> list[int]:
        best, best_v = None, math.inf
        for c in ORACLE_EXPONENTS:
            chosen = [i for i in start]
            left = budget - sum(self.cost[i] for i in chosen)
            m = self.m0 + self.info[chosen].T @ self.info[chosen]
            while True:
                free = np.array([i for i in range(len(self.cost))
                                 if i not in chosen and self.cost[i] <= left], int)
                if not len(free):
                    break
                h = np.linalg.solve(m, self.grad.T)  # p x T
                u = self.info[free] @ np.linalg.solve(m, np.eye(len(m)))  # rows M^-1 j
                q = (self.info[free] @ h) ** 2  # (j^T M^-1 g_t)^2
                denom = 1 + np.einsum("ij,ij->i", u, self.info[free])
                gain = q.sum(1) / denom / self.cost[free] ** c
                k = int(free[np.argmax(gain)])
                chosen.append(k)
                left -= self.cost[k]
                m = m + np.outer(self.info[k], self.info[k])
            v = self.v(chosen)
            if v < best_v:
                best, best_v = chosen, v
        return best


# ----------------------------------------------------------------- one case

def target_points(targets: pd.DataFrame) -> list[tuple[float, float]]:
    return list(dict.fromkeys(zip(targets["n_params"].astype(float),
                                  targets["tokens"].astype(float))))


def vopt_subset(design: ActiveDesign, answers, budget: float) -> list[int]:
    """One relaxed V-optimal design at the fit on the initial design, rounded by weight."""
    cost = design.pool.cost
    init = list(design.init)
    cheap = [int(i) for i in np.argsort(cost, kind="stable") if i not in init]
    while True:  # the pilot: the initial design, widened by the cheapest runs until it fits
        try:
            lap = design.laplace.fit({i: answers[i] for i in init})
            break
        except (FitError, ValueError, np.linalg.LinAlgError):
            if not cheap or cost[init].sum() + cost[cheap[0]] > budget:
                return init
            init.append(cheap.pop(0))
    info = design.information(lap)
    left = budget - cost[init].sum()
    rest = np.array([i for i in range(design.pool.n_pool) if i not in init], int)
    if left <= 0 or not len(rest):
        return init
    plan = relaxed_design(info[rest], lap.m0, design._target_grad(lap), cost[rest], left)
    picks = round_plan(plan.weights, cost[rest], left, len(rest))
    return init + [int(rest[i]) for i in picks]


def run_seed(case: dict, seed: int, budgets, active_cache=None) -> dict:
    """Every strategy at every budget for one seed: {strategy: {budget: metrics}}."""
    rows = case["rows"]
    answers = case["answers"](seed)
    scorer = case["scorer"]
    total = case["total"]
    base = ActiveDesign(rows, total, target=case["points"])
    cost = base.pool.cost
    init = list(base.init)
    rest = [i for i in range(len(rows)) if i not in init]
    out: dict = {s: {} for s in ("active", "random", "cheapest", "vopt", "oracle")}
    out["active_s"] = 0.0
    lin = case.get("linearized")
    if lin is not None:
        out["regret"] = {s: {} for s in out if s != "active_s"}
    orders = {"random": init + list(np.random.default_rng(seed).permutation(rest)),
              "cheapest": init + sorted(rest, key=lambda i: cost[i])}
    for b in budgets:
        fb = float(b)
        if fb >= 1.0:
            continue
        budget = fb * total
        subsets = {name: prefix_within(o, cost, budget) for name, o in orders.items()}
        key = (b,)
        if active_cache is not None and key in active_cache:
            subsets["active"], dt = active_cache[key]
        else:
            t0 = time.perf_counter()
            design = ActiveDesign(rows, budget, target=case["points"], seed=seed, **ACTIVE_KW)
            subsets["active"] = sorted(run_in_process(design, lambda i: answers[i],
                                                      batch=BATCH))
            dt = time.perf_counter() - t0
            if active_cache is not None:
                active_cache[key] = (subsets["active"], dt)
        out["active_s"] += dt
        subsets["vopt"] = case["vopt"](b, answers)
        subsets["oracle"] = case["oracle"](b)
        for name, sub in subsets.items():
            out[name][b] = scorer(sub, answers) if len(sub) > 1 else None
            if lin is not None:
                out["regret"][name][b] = math.sqrt(lin.v(sub) / case["bound"][b])
    out["pool"] = {"1.0": scorer(range(len(rows)), answers)}
    return out


def make_replay_case(name: str, pool: pd.DataFrame, targets: pd.DataFrame, seeds: int,
                     truth_rho=None) -> dict:
    rows = rows_of(pool)
    answers = pool["loss"].to_numpy(float)
    total = float(sum(6 * r["n_params"] * r["tokens"] for r in rows))
    points = target_points(targets)
    case = {"name": name, "pool": pool, "rows": rows, "answers": lambda seed: answers,
            "scorer": Scorer(pool, targets, truth_rho=truth_rho), "total": total,
            "points": points, "deterministic": True}
    base = ActiveDesign(rows, total, target=points)
    vcache, ocache = {}, {}

    def vopt(b, ans):
        if b not in vcache:
            vcache[b] = vopt_subset(ActiveDesign(rows, total, target=points, **ACTIVE_KW), ans,
                                    float(b) * total)
        return vcache[b]

    # the oracle knows the truth: the law fitted on pool and targets together
    allrows = rows + rows_of(targets)
    both = ActiveDesign(allrows, total, target=points)
    obs = {i: float(v) for i, v in enumerate(np.r_[answers, targets["loss"].to_numpy(float)])}
    lin_all = Linearized(both, obs, both.laplace.fit(obs).sigma)
    n = len(rows)
    lin_all.info, lin_all.cost = lin_all.info[:n], base.pool.cost

    def oracle(b):
        if b not in ocache:
            ocache[b] = lin_all.greedy(list(base.init), float(b) * total)
        return ocache[b]

    case.update(vopt=vopt, oracle=oracle)
    return case


# ----------------------------------------------------------------- simulation

SPECS = {"dense": ("bf16", "bf16"), "w4": ("int4", "bf16"), "w3": ("int3", "bf16"),
         "w2": ("int2", "bf16"), "w4a4": ("int4", "int4"), "s50": ("sparse50", "bf16")}
RHO = {"dense": 1.0, "w4": 0.9, "w3": 0.75, "w2": 0.45, "w4a4": 0.8, "s50": 0.65}
LAW = {"A": 482.01, "alpha": 0.3478, "B": 2085.43, "beta": 0.3658, "E": 1.82}
SIZES = (2e7, 4e7, 8e7, 1.6e8, 3.2e8)
TPP = (10, 20, 40, 80)
TRUTHS = {
    "clean": dict(drift=0.0, excess=0.0, grow=0.0, shared=0.0, noise=0.01),
    "misspecified": dict(drift=0.04, excess=0.04, grow=0.5, shared=0.006, noise=0.008),
}


def sim_truth(t: dict, fmt: str, n: float, d: float) -> float:
    """True loss: rho_f (N / 1e8)^(-drift (1 - rho_f)) (capacity drifting with N), plus an
    excess ``excess (2e7 / N)^1.5`` at small N."""
    rho = RHO[fmt] * (n / 1e8) ** (-t["drift"] * (1 - RHO[fmt]))
    return (LAW["A"] * (n * rho) ** -LAW["alpha"] + LAW["B"] * d ** -LAW["beta"] + LAW["E"]
            + t["excess"] * (SIZES[0] / n) ** 1.5)


def make_sim_case(truth: str) -> dict:
    t = TRUTHS[truth]
    grid = [{"format": f, "weights": SPECS[f][0], "activations": SPECS[f][1],
             "n_params": n, "tokens": r * n} for f in SPECS for n in SIZES for r in TPP]
    df = pd.DataFrame(grid)
    df["loss"] = [sim_truth(t, r["format"], r["n_params"], r["tokens"]) for r in grid]
    held = df["n_params"] == max(SIZES)
    pool, targets = df[~held].reset_index(drop=True), df[held].reset_index(drop=True)
    rows = rows_of(pool)
    truth_pool = pool["loss"].to_numpy(float)
    nmax = max(SIZES)
    truth_rho = {f: RHO[f] * (nmax / 1e8) ** (-t["drift"] * (1 - RHO[f]))
                 for f in SPECS if f != "dense"}
    n_rel = pool["n_params"].to_numpy(float)
    sd = t["noise"] * (n_rel.max() / n_rel) ** t["grow"]
    cell = np.unique(pool[["n_params", "tokens"]].to_numpy(float), axis=0,
                     return_inverse=True)[1].ravel()

    def answers(seed):
        rng = np.random.default_rng(1000 + seed)
        shared = rng.standard_normal(cell.max() + 1) * t["shared"]
        return truth_pool * np.exp(sd * rng.standard_normal(len(rows)) + shared[cell])

    total = float(sum(6 * r["n_params"] * r["tokens"] for r in rows))
    points = target_points(targets)
    case = {"name": f"sim:{truth}", "pool": pool, "rows": rows, "answers": answers,
            "scorer": Scorer(pool, targets, truth_targets=targets["loss"], truth_rho=truth_rho),
            "total": total, "points": points, "deterministic": False}
    base = ActiveDesign(rows, total, target=points)
    # linearized at the law's best fit to the noise-free truth (the truth itself when
    # the law is well specified)
    lin = Linearized(base, dict(enumerate(truth_pool)), t["noise"])
    case["linearized"] = lin
    ocache, vcache = {}, {}

    def oracle(b):
        if b not in ocache:
            ocache[b] = lin.greedy(list(base.init), float(b) * total)
        return ocache[b]

    def vopt(b, ans):
        key = (b, tuple(ans[i] for i in base.init))
        if key not in vcache:
            vcache[key] = vopt_subset(ActiveDesign(rows, total, target=points, **ACTIVE_KW), ans,
                                      float(b) * total)
        return vcache[key]

    case.update(oracle=oracle, vopt=vopt)
    return case


# ----------------------------------------------------------------- summaries

def boot_median(vals, rng, n=1000) -> tuple[float, float, float]:
    v = np.asarray([x for x in vals if x is not None and math.isfinite(x)], float)
    if not len(v):
        return (math.nan, math.nan, math.nan)
    meds = np.median(rng.choice(v, (n, len(v))), axis=1)
    return (float(np.median(v)), float(np.quantile(meds, 0.025)),
            float(np.quantile(meds, 0.975)))


def summarize(case: dict, runs: list[dict], budgets) -> dict:
    rng = np.random.default_rng(0)
    strategies = ("active", "random", "cheapest", "vopt", "oracle")
    metrics = ["rmse_log", "r2"] + (["rho_err"] if case["scorer"].truth_rho else [])
    out = {"case": case["name"], "n_pool": len(case["rows"]), "n_targets": len(case["points"]),
           "seeds": len(runs), "active_s_mean": float(np.mean([r["active_s"] for r in runs]))}

    def val(r, s, b, m):
        e = r[s].get(b)
        return e[m] if e else math.nan

    for m in metrics:
        table = {}
        for s in strategies:
            table[s] = {b: boot_median([val(r, s, b, m) for r in runs], rng)
                        for b in budgets if float(b) < 1}
        table["pool"] = {"1.0": boot_median([val(r, "pool", "1.0", m) for r in runs], rng)}
        out[m] = table
    # paired differences against random (rmse_log: > 0 is worse than random)
    out["vs_random"] = {}
    for s in ("active", "cheapest", "vopt", "oracle"):
        out["vs_random"][s] = {
            b: boot_median([val(r, s, b, "rmse_log") - val(r, "random", b, "rmse_log")
                            for r in runs], rng) for b in budgets if float(b) < 1}
    if "regret" in runs[0]:
        out["regret"] = {s: {b: boot_median([r["regret"][s][b] for r in runs], rng)
                             for b in budgets if float(b) < 1} for s in strategies}
        out["bound"] = {b: case["bound"][b] for b in budgets if float(b) < 1}
    pool = out["rmse_log"]["pool"]["1.0"][0]
    out["fraction_to_match"] = next(
        (float(b) for b in budgets if float(b) < 1
         and out["rmse_log"]["active"][b][0] <= 1.25 * pool), 1.0)
    return out


def _seed_job(args):
    name, seed, budgets = args
    case = CASES_BUILT[name]
    return run_seed(case, seed, budgets)


CASES_BUILT: dict = {}


def run_case(case: dict, seeds: int, budgets, workers: int = 1) -> dict:
    if case["deterministic"]:  # replays: only random's order depends on the seed
        cache: dict = {}
        runs = [run_seed(case, s, budgets, cache) for s in range(seeds)]
    else:
        CASES_BUILT[case["name"]] = case
        if "linearized" in case:
            case["bound"] = {b: case["linearized"].bound(float(b) * case["total"])
                             for b in budgets if float(b) < 1}
        jobs = [(case["name"], s, budgets) for s in range(seeds)]
        if workers > 1:
            with ProcessPoolExecutor(workers) as ex:
                runs = list(ex.map(_seed_job, jobs))
        else:
            runs = [_seed_job(j) for j in jobs]
    return summarize(case, runs, budgets)


def default_cases(quick: bool) -> list:
    """(name, builder) of the full case list."""
    chin = load_table(SHARED / "chinchilla_fig4_epoch.csv")
    flops = 6 * chin["n_params"] * chin["tokens"]
    cases = [("chinchilla", lambda s: make_replay_case(
        "chinchilla", chin[flops < 1e21].reset_index(drop=True),
        chin[flops >= 1e21].reset_index(drop=True), s))]
    cases.append(("farseer", lambda s: make_replay_case(
        "farseer", load_table(SHARED / "farseer_train.csv"),
        load_table(SHARED / "farseer_test.csv"), s)))
    for ref in sorted((ROOT / "data" / "reference").glob("*/results.csv")):
        def build(s, ref=ref):
            df = load_table(ref)
            held = df["n_params"] == df["n_params"].max()
            return make_replay_case(f"ref:{ref.parent.name}", df[~held].reset_index(drop=True),
                                    df[held].reset_index(drop=True), s)
        cases.append((f"ref:{ref.parent.name}", build))
    for truth in TRUTHS:
        cases.append((f"sim:{truth}", lambda s, truth=truth: make_sim_case(truth)))
    return cases


def jsonable(x):
    """NaN and inf (a budget where a strategy has no fit) as null."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def flat(summary: dict, metric: str, budgets) -> dict:
    t = summary[metric]
    out = {s: {b: round(t[s][b][0], 6) for b in t[s]} for s in t if s != "pool"}
    out["pool"] = {"1.0": round(t["pool"]["1.0"][0], 6)}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replay", help="pool table (results schema, or N, D, loss columns)")
    ap.add_argument("--targets", help="held-out target table (same columns)")
    ap.add_argument("--budgets", help="comma-separated fractions of the pool's FLOPs")
    ap.add_argument("--seeds", type=int, default=None, help="seeds (default 20; --quick 3)")
    ap.add_argument("--quick", action="store_true",
                    help="the reference study only, budgets 0.2 and 0.5, 3 seeds")
    ap.add_argument("--cases", help="comma-separated subset of the default case names")
    ap.add_argument("--workers", type=int, default=2, help="processes for simulated seeds")
    ap.add_argument("--design", choices=DESIGNS, help="the active strategy's search.design "
                    "(default: the study default, plan)")
    ap.add_argument("--discrepancy", type=float,
                    help=f"the active strategy's search.discrepancy (default {DISCREPANCY})")
    ap.add_argument("--discrepancy-scale", type=float,
                    help="the active strategy's search.discrepancy_scale "
                    f"(default {DISCREPANCY_SCALE})")
    args = ap.parse_args(argv)
    for key, value in (("design", args.design), ("discrepancy", args.discrepancy),
                       ("discrepancy_scale", args.discrepancy_scale)):
        if value is not None:
            ACTIVE_KW[key] = value
    seeds = args.seeds or (3 if args.quick else 20)
    if seeds < 1:
        raise SystemExit("--seeds: need at least 1")
    budgets = tuple(args.budgets.split(",")) if args.budgets else (
        ("0.2", "0.5") if args.quick else BUDGETS)
    for b in budgets:
        try:
            ok = 0 < float(b) <= 1
        except ValueError:
            ok = False
        if not ok:
            raise SystemExit(f"--budgets: got {b!r}; allowed: fractions in (0, 1]")
    t0 = time.perf_counter()
    if args.replay:
        if not args.targets:
            raise SystemExit("--replay needs --targets (the held-out runs to predict)")
        case = make_replay_case("replay", load_table(args.replay), load_table(args.targets),
                                seeds)
        s = run_case(case, seeds, budgets)
        print(json.dumps(jsonable(s)), file=sys.stderr)
        print(json.dumps(jsonable({"rmse_log": flat(s, "rmse_log", budgets),
                                   "r2": flat(s, "r2", budgets), "details": s,
                                   "wall_s": round(time.perf_counter() - t0, 1)})))
        return
    cases = default_cases(args.quick)
    if args.cases:
        want = args.cases.split(",")
        unknown = set(want) - {n for n, _ in cases}
        if unknown:
            raise SystemExit(f"--cases: unknown {sorted(unknown)}; allowed: "
                             f"{', '.join(n for n, _ in cases)}")
        cases = [c for c in cases if c[0] in want]
    elif args.quick:
        cases = [c for c in cases if c[0] == "ref:quickstart"]
    results = []
    for name, build in cases:
        tc = time.perf_counter()
        s = run_case(build(seeds), seeds, budgets, args.workers)
        s["wall_s"] = round(time.perf_counter() - tc, 1)
        print(f"{name}: {json.dumps(jsonable(flat(s, 'rmse_log', budgets)))}", file=sys.stderr)
        results.append(s)
    fr = [s["fraction_to_match"] for s in results]
    print(json.dumps(jsonable({
        "median_fraction_to_match_full_grid": float(np.median(fr)),
        "budgets": list(budgets), "seeds": seeds,
        "cases": {s["case"]: s for s in results},
        "rmse_log": {s["case"]: flat(s, "rmse_log", budgets) for s in results},
        "wall_s": round(time.perf_counter() - t0, 1)})))


if __name__ == "__main__":
    main()
