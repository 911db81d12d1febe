"""Benchmark of active search: FLOPs spent vs error at the largest scale.

Ground truth is simulated in-process (no Ray, no Optuna): several laws
``L = A (N rho_f)^-alpha + B D^-beta + E`` with known capacities, observed
with multiplicative log-normal noise at two levels, five seeds each. Every
strategy is scored by the *held-out* error of its fitted law against the
noise-free truth:

- ``target_rmse``: RMSE over representations of the predicted loss at the
  grid's largest (N, D) (loss units);
- ``rho_mae``: mean absolute error of rho over the non-dense representations;
- ``design_rmse``: the *expected* target RMSE of the runs a strategy chose,
  linearized at the true law (:func:`linearized_mse`), averaged over seeds: it
  scores the choice of runs without the seed noise of ``target_rmse``, whose
  error at the targets is mostly one common shift of the dense extrapolation
  (a median over 5 seeds of that cannot tell two designs 20% apart).

Strategies, all fitted with the same surrogate (the decoupled law of
raysweep.active.surrogate, point fit) so only the choice of runs differs:

- ``active``: raysweep.active.acquisition (initial design, then acquisition; batch 4)
  with the default target, the loss of every representation at the largest
  (N, D);
- ``active_rho``: the same search with ``target: rho`` (the acquisition scores
  the capacities of the non-dense representations instead);
- ``random``: the same initial design, then the rest of the pool in random order;
- ``cheapest``: the same initial design, then the rest by increasing 6 N D;
- ``full``: the whole grid.

Budgets are fractions of the full grid's FLOPs, up to 1 (the searches run
until the whole pool is spent, so every case has a measured fraction); a
search is compared with random only at budgets where it has a fit (its initial
design goes out in batches too). Per case (law, noise), the error curves are
medians over seeds; ``fraction_to_match`` is the first budget at which a
search's median error is within 10% of the full grid's median error.
``median_fraction_to_match_full_grid`` is the median of that over cases, for
the default search and the loss at the largest scale; ``..._rho`` the same for
the rho error; ``searches.active_rho`` holds the same figures for the
``target: rho`` search.
``oracle_fraction_to_match`` is the yardstick for it: the FLOPs a greedy
design that knows the true law needs to match, linearized (see its function).

With ``--holdout`` the target runs are left out of every pool (the full grid is
the rest), so every strategy, the full grid included, extrapolates to them.

``--covariance laplace|mixed`` runs the default search with a tried alternative
acquisition covariance (see :class:`LaplaceDesign`, :class:`MixedDesign`; no
``active_rho`` then).

Usage: python bench/active.py [--seeds 5] [--replay TABLE.csv | --no-replay] [--quick]
       [--holdout] [--covariance ensemble|laplace|mixed]
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from raysweep.active.acquisition import ActiveDesign, run_in_process
from raysweep.fit.laws import tanh_capacity

# GMSE reference values (Panferov et al. 2025): int4, int3, int2, sparse50.
G = {"int4": 0.011543, "int3": 0.03744, "int2": 0.11885, "sparse50": 0.0713}
LAWS = {
    "chinchilla_unified": dict(
        A=482.01, alpha=0.3478, B=2085.43, beta=0.3658, E=1.82,
        rho={"dense": 1.0, "w4": tanh_capacity(G["int4"]), "w3": tanh_capacity(G["int3"]),
             "w2": tanh_capacity(G["int2"]), "w4a4": tanh_capacity(G["int4"]) ** 2,
             "s50": tanh_capacity(G["sparse50"])}),
    "shallow_alpha": dict(
        A=60.0, alpha=0.2, B=400.0, beta=0.3, E=2.0,
        rho={"dense": 1.0, "w4": 0.9, "w3": 0.75, "w2": 0.45, "w4a4": 0.8, "s50": 0.65}),
    "steep_low_rho": dict(
        A=900.0, alpha=0.4, B=1500.0, beta=0.35, E=1.6,
        rho={"dense": 1.0, "w4": 0.8, "w3": 0.55, "w2": 0.25, "w4a4": 0.6, "s50": 0.5}),
}
SIZES = (2e7, 4e7, 8e7, 1.6e8, 3.2e8)
TPP = (25, 50, 100)
NOISES = (0.003, 0.01)
BUDGETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)


def make_pool(law: dict) -> list[dict]:
    return [{"run_id": f"{f}-{n:g}-{r}", "format": f,
             "weights": "bf16" if f == "dense" else f, "activations": "bf16",
             "n_params": n, "tokens": r * n, "seed": 0}
            for f in law["rho"] for n in SIZES for r in TPP]


def true_loss(law, fmt, n, d):
    return law["A"] * (n * law["rho"][fmt]) ** -law["alpha"] + law["B"] * d ** -law["beta"] \
        + law["E"]


def score(design, observed, truth_targets, truth_rho) -> dict:
    """Held-out errors of the point fit on ``observed`` (targets with no truth: NaN,
    left out)."""
    post = design.posterior(observed, k=0)
    pred = post.central[design.pool.target_rows]
    err = {"target_rmse": float(np.sqrt(np.nanmean((pred - truth_targets) ** 2)))}
    if truth_rho:
        diffs = [abs(post.rho[f] - r) for f, r in truth_rho.items() if f != design.pool.labels[
            design.pool.ref]]
        err["rho_mae"] = float(np.mean(diffs))
    return err


def prefix_within(order, cost, budget):
    """Greedy prefix of ``order`` whose total cost fits ``budget`` (skipping misfits)."""
    picked, spent = [], 0.0
    for i in order:
        if spent + cost[i] <= budget:
            picked.append(int(i))
            spent += cost[i]
    return picked


OPTS = {"ensemble": 48, "cost_exponent": 1.0}


class LaplaceDesign(ActiveDesign):
    """Tried alternative (``--covariance laplace``): the acquisition's covariance from
    one linearization, ``G C G^T`` with ``C = (P + J_obs^T J_obs / sigma^2)^-1`` at the
    MAP fit (P: the surrogate's prior precision, G: the loss gradients)."""

    def _laplace(self, observed, theta, post):
        sur = self.surrogate
        idx = np.array(sorted(observed), int)
        prec = np.diag(sur.prior(np.log([observed[i] for i in idx]))[1] ** -2.0)
        rows = np.arange(len(self.pool.n))
        jac = sur._jac(theta, rows)
        jo = jac[idx] / post.sigma
        g = jac * np.exp(sur.predict_log(theta, rows))[:, None]
        return g @ np.linalg.solve(prec + jo.T @ jo, g.T)

    def covariance(self, observed):
        post = self.posterior(observed, k=0)
        return post, self._laplace(observed, post.theta, post)


class MixedDesign(LaplaceDesign):
    """Tried alternative (``--covariance mixed``): Rao-Blackwellized ensemble, half the
    between-member covariance plus half the mean of each member's Laplace covariance."""

    def covariance(self, observed):
        post = self.posterior(observed)
        within = np.mean([self._laplace(observed, t, post) for t in post.thetas], axis=0)
        return post, 0.5 * within + 0.5 * np.cov(post.members, rowvar=False)


DESIGNS = {"ensemble": ActiveDesign, "laplace": LaplaceDesign, "mixed": MixedDesign}
# The active strategy's class (--covariance), and the searches run: name -> the search's
# target (None: the loss of every representation at the largest (N, D), the default).
STRATEGY = {"design": ActiveDesign, "searches": {"active": None, "active_rho": "rho"}}


def run_case(pool, answers, truth_targets, truth_rho, seed, mse=None, target=None) -> dict:
    """All strategies on one pool; ``answers[i]`` is run i's observed loss.

    ``target``: explicit target (N, D) points (held-out mode: not in the pool).
    Every strategy is scored by the same point fit at the loss targets.
    """
    total = float(sum(6 * r["n_params"] * r["tokens"] for r in pool))
    out = {"active_s": {}}
    scorer = None  # the default search's design (scores random, cheapest, full)
    for name, search_target in STRATEGY["searches"].items():
        design = STRATEGY["design"](pool, max(BUDGETS) * total, seed=seed,
                                    target=search_target or target, **OPTS)
        own = ActiveDesign(pool, 1.0, target=target) if design.target_rho else design
        scorer = scorer or (None if design.target_rho else design)
        curve = []  # (fraction spent, errors) after each round

        def on_round(obs, spent, own=own, curve=curve):
            err = score(own, obs, truth_targets, truth_rho)
            if mse is not None:
                err["design_mse"] = mse(obs)
            curve.append((spent / total, err))

        t0 = time.perf_counter()
        run_in_process(design, lambda i: answers[i], batch=4, on_round=on_round)
        out["active_s"][name] = time.perf_counter() - t0
        out[name] = []
        for b in BUDGETS:
            done = [e for f, e in curve if f <= b + 1e-12]
            out[name].append(done[-1] if done else None)
    scorer = scorer or ActiveDesign(pool, 1.0, target=target)
    cost = scorer.pool.cost
    out["init_fraction"] = float(sum(cost[i] for i in scorer.init)) / total
    rest = [i for i in range(len(pool)) if i not in scorer.init]
    orders = {"random": list(scorer.init) + list(np.random.default_rng(seed).permutation(rest)),
              "cheapest": list(scorer.init) + sorted(rest, key=lambda i: cost[i])}
    for name, order in orders.items():
        out[name] = []
        for b in BUDGETS:
            obs = {i: answers[i] for i in prefix_within(order, cost, b * total)}
            err = score(scorer, obs, truth_targets, truth_rho) if len(obs) > 1 else None
            if err is not None and mse is not None:
                err["design_mse"] = mse(obs)
            out[name].append(err)
    out["full"] = score(scorer, dict(enumerate(answers)), truth_targets, truth_rho)
    if mse is not None:
        out["full"]["design_mse"] = mse(range(len(pool)))
    return out


def med(runs, strategy, k, metric):
    vals = [r[strategy][k][metric] if r[strategy][k] else math.inf for r in runs]
    return float(np.median(vals))


def _versus(curves, full, search):
    """First budget at which ``search`` is within 10% of the full grid (1.0 if none),
    and the budgets where its median error is above random's (where it has a fit)."""
    match = next((b for b, e in zip(BUDGETS, curves[search]) if e <= 1.1 * full), 1.0)
    worse = [b for b, a, r in zip(BUDGETS, curves[search], curves["random"])
             if r * (1 + 1e-6) < a < math.inf]  # equal within rounding (both the full grid)
    return match, worse


def summarize(name, runs) -> dict:
    """Median-over-seeds curves, the fraction to match the full grid, random check.

    Top-level keys are the default search's (``active``); the other searches run
    (``active_rho``) get the same figures under their own name.
    """
    searches = [s for s in STRATEGY["searches"] if s in runs[0]]
    strategies = searches + ["random", "cheapest"]
    per = {s: {"budgets_compared": sum(math.isfinite(med(runs, s, k, "target_rmse"))
                                       for k in range(len(BUDGETS)))} for s in searches}
    out = {"case": name, "initial_design_fraction": max(r["init_fraction"] for r in runs),
           "active_s_mean": {s: float(np.mean([r["active_s"][s] for r in runs]))
                             for s in searches}}
    full = float(np.median([r["full"]["target_rmse"] for r in runs]))
    curves = {s: [med(runs, s, k, "target_rmse") for k in range(len(BUDGETS))]
              for s in strategies}
    out.update(full_grid=full, curves={s: [round(v, 5) for v in c] for s, c in curves.items()})
    for s in searches:
        per[s]["fraction_to_match"], per[s]["budgets_active_worse"] = _versus(curves, full, s)
        per[s]["active_le_random_every_budget"] = not per[s]["budgets_active_worse"]
    if "rho_mae" in runs[0]["full"]:
        rfull = float(np.median([r["full"]["rho_mae"] for r in runs]))
        rc = {s: [med(runs, s, k, "rho_mae") for k in range(len(BUDGETS))] for s in strategies}
        out.update(rho_mae_full=rfull,
                   rho_mae_curves={s: [round(v, 5) for v in c] for s, c in rc.items()})
        for s in searches:
            per[s]["rho_fraction_to_match"], per[s]["rho_budgets_active_worse"] = _versus(
                rc, rfull, s)
    if "design_mse" in runs[0]["full"]:
        # Expected RMSE of the chosen runs (mean of the linearized MSE over seeds).
        dc = {s: [float(np.sqrt(np.mean([r[s][k]["design_mse"] if r[s][k] else np.inf
                                         for r in runs]))) for k in range(len(BUDGETS))]
              for s in strategies}
        out["design_rmse_full"] = float(np.sqrt(runs[0]["full"]["design_mse"]))
        out["design_rmse_curves"] = {s: [round(v, 5) for v in c] for s, c in dc.items()}
        for s in searches:
            per[s]["design_budgets_active_worse"] = _versus(dc, math.inf, s)[1]
    out.update(per.get("active", {}))
    out.update({s: v for s, v in per.items() if s != "active"})
    return out


def linearized_mse(law: dict, noise: float, pool: list[dict], target=None):
    """Expected squared target error of any subset of the pool, linearized at the truth.

    At the true parameters theta*, the decoupled law's Jacobian J (log-loss
    per theta) and the surrogate's prior precision P give the linearized
    posterior covariance ``C_S = (P + J_S^T J_S / noise^2)^-1`` of a subset S,
    hence the expected mean squared error of the target losses
    ``tr(G C_S G^T) / T`` (G: the T targets' loss gradients). It depends on
    which runs were chosen, not on their noise draws, so it compares *designs*
    without the seed noise of ``target_rmse``. Returns (design, cost fraction
    per pool row, mse(subset)).
    """
    design = ActiveDesign(pool, 1.0, target=target)
    sur, p = design.surrogate, design.pool
    th = np.zeros(sur.n_theta)
    th[:5] = [math.log(law["A"]) - law["alpha"] * sur.n0, law["alpha"],
              math.log(law["B"]) - law["beta"] * sur.d0, law["beta"], math.log(law["E"])]
    for i, lab in enumerate(p.labels):
        if sur.col[i] >= 0:
            th[sur.col[i]] = math.log(law["rho"][lab])
    rows = np.arange(len(p.n))
    loss = np.exp(sur.predict_log(th, rows))
    jac = sur._jac(th, rows)
    prec = np.diag(1.0 / sur.prior(np.log(loss[: p.n_pool]))[1] ** 2)
    grad = jac[p.target_rows] * loss[p.target_rows, None]
    jc = jac[: p.n_pool] / noise
    cost = p.cost / p.cost.sum()

    def mse(sel):
        sel = list(sel)
        return float(np.trace(grad @ np.linalg.solve(prec + jc[sel].T @ jc[sel], grad.T))
                     ) / len(grad)

    return design, cost, mse


def oracle_fraction_to_match(law: dict, noise: float, pool: list[dict], target=None) -> float:
    """FLOPs a design that *knows the true law* needs to match the full grid (linearized).

    A yardstick for ``fraction_to_match``, not a strategy. With
    :func:`linearized_mse` at the true law, runs are added to active's initial
    design greedily by expected-error reduction per (6 N D)^c (c = 1 and 0.5,
    the better is kept) until the expected target RMSE is within 10% of the
    full grid's. Greedy A-optimal design with the truth known is close to the
    best any sequential design can do, so an active fraction far below this
    figure would be luck of the seeds, not method.
    """
    design, cost, var = linearized_mse(law, noise, pool, target)
    goal = 1.21 * var(range(len(cost)))  # RMSE within 10%
    best = 1.0
    for c_exp in (1.0, 0.5):
        sel = list(design.init)
        while var(sel) > goal:
            cur = var(sel)
            gain = [-1.0 if i in sel else (cur - var(sel + [i])) / cost[i] ** c_exp
                    for i in range(len(cost))]
            sel.append(int(np.argmax(gain)))
        best = min(best, float(cost[sel].sum()))
    return round(best, 3)


def simulated_cases(n_seeds: int, laws, holdout: bool = False) -> list[dict]:
    """``holdout``: the target runs (largest N and D) are left out of every pool."""
    cases = []
    for lname in laws:
        law = LAWS[lname]
        pool = make_pool(law)
        n_max, d_max = max(SIZES), max(SIZES) * max(TPP)
        target = None
        if holdout:
            pool = [r for r in pool if (r["n_params"], r["tokens"]) != (n_max, d_max)]
            target = [(n_max, d_max)]
        for noise in NOISES:
            mse = linearized_mse(law, noise, pool, target)[2]
            runs = []
            for seed in range(n_seeds):
                rng = np.random.default_rng([seed, int(noise * 1e4)])
                answers = [true_loss(law, r["format"], r["n_params"], r["tokens"])
                           * math.exp(noise * rng.standard_normal()) for r in pool]
                design_targets = np.array([true_loss(law, f, n_max, d_max) for f in law["rho"]])
                runs.append(run_case(pool, answers, design_targets, law["rho"], seed, mse,
                                     target))
            case = summarize(f"{lname}/noise={noise}" + ("/holdout" if holdout else ""), runs)
            case["oracle_fraction_to_match"] = oracle_fraction_to_match(law, noise, pool, target)
            cases.append(case)
    return cases


def replay_case(path: str, n_seeds: int, holdout: bool = False) -> dict:
    """A results table as ground truth: truth at the targets = the table's own losses.

    ``holdout``: the runs at the targets (the table's largest N, then largest D) are
    taken out of the pool and only score the predictions.
    """
    import pandas as pd

    df = pd.read_csv(path) if path.endswith(".csv") else pd.read_parquet(path)
    df = df[df.get("status", "ok").eq("ok")] if "status" in df else df
    rows = df.to_dict("records")
    full = ActiveDesign(rows, 1.0).pool  # the targets, as the search would pick them
    at_target = {(lab, n, d) for lab, n, d in full.targets}
    is_target = [(full.labels[full.fmt[i]], full.n[i], full.d[i]) in at_target
                 for i in range(len(rows))]
    pool = [r for r, t in zip(rows, is_target) if not (holdout and t)]
    answers = [float(r["loss"]) for r in pool]
    losses: dict = {}
    for i, t in enumerate(is_target):
        if t:
            losses.setdefault((full.labels[full.fmt[i]], full.n[i], full.d[i]), []).append(
                float(rows[i]["loss"]))
    target = list(dict.fromkeys((n, d) for _, n, d in full.targets)) if holdout else None
    # truth in the order of the targets of the pool the strategies see (its labels come
    # in order of first appearance, which leaving rows out can change)
    seen = ActiveDesign(pool, 1.0, target=target).pool.targets
    truth = np.array([np.mean(losses[t]) if t in losses else np.nan for t in seen])
    runs = [run_case(pool, answers, truth, None, s, target=target) for s in range(n_seeds)]
    return summarize(f"replay:{Path(path).name}" + ("/holdout" if holdout else ""), runs)


def headline(cases, search) -> dict:
    """The benchmark's summary figures for one search, over cases (median of each
    case's fraction; counts of (case, budget) points where it is worse than random)."""

    def median_of(key):
        return float(np.median([c[key] for c in cases if key in c] or [math.nan]))

    return {
        "search_target": STRATEGY["searches"][search] or "largest",
        "median_fraction_to_match_full_grid": median_of("fraction_to_match"),
        "target_fraction": 0.10,
        "active_le_random_every_budget_all_cases": all(
            c["active_le_random_every_budget"] for c in cases),
        "median_fraction_to_match_full_grid_rho": median_of("rho_fraction_to_match"),
        "median_oracle_fraction_to_match": median_of("oracle_fraction_to_match"),
        "active_worse_than_random": {
            m: f"{sum(len(c.get(k, [])) for c in cases)}/"
               f"{sum(c['budgets_compared'] for c in cases if k in c)}"
            for m, k in (("loss", "budgets_active_worse"), ("rho", "rho_budgets_active_worse"),
                         ("design", "design_budgets_active_worse"))},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--replay", action="append", default=[],
                    help="results table(s) to replay (default: data/reference/*/results.csv)")
    ap.add_argument("--quick", action="store_true", help="one law, two seeds (smoke run)")
    ap.add_argument("--covariance", choices=sorted(DESIGNS), default="ensemble",
                    help="the acquisition's covariance: the search's ensemble (default) or "
                         "a tried linearized alternative")
    ap.add_argument("--holdout", action="store_true",
                    help="leave the target runs (largest N and D) out of every pool, the "
                         "full grid's included: every strategy extrapolates to them")
    ap.add_argument("--no-replay", action="store_true", help="simulated cases only")
    ap.add_argument("--ensemble", type=int, default=OPTS["ensemble"])
    ap.add_argument("--cost-exponent", type=float, default=OPTS["cost_exponent"])
    args = ap.parse_args()
    OPTS.update(ensemble=args.ensemble, cost_exponent=args.cost_exponent)
    STRATEGY["design"] = DESIGNS[args.covariance]
    if args.covariance != "ensemble":  # the tried covariances score loss targets only
        STRATEGY["searches"] = {"active": None}
    t0 = time.perf_counter()
    laws = ["chinchilla_unified"] if args.quick else list(LAWS)
    seeds = 2 if args.quick else args.seeds
    cases = simulated_cases(seeds, laws, holdout=args.holdout)
    replays = [] if args.no_replay else (
        args.replay or [str(p) for p in Path("data/reference").glob("*/results.csv")])
    for path in replays:
        cases.append(replay_case(path, seeds, holdout=args.holdout))
    for c in cases:
        print(f"{c['case']:36s} match={c['fraction_to_match']:<6} full={c['full_grid']:.4f} "
              f"active={c['curves']['active']} random={c['curves']['random']}")
    result = headline(cases, "active")
    result["searches"] = {s: headline([{**c, **c[s]} for c in cases], s)
                          for s in STRATEGY["searches"] if s != "active"}
    result.update({
        "holdout": args.holdout, "covariance": args.covariance, "budgets": list(BUDGETS),
        "seeds": seeds, "options": OPTS,
        "noises": list(NOISES),
        "replay_tables": replays, "wall_s": round(time.perf_counter() - t0, 1),
        "cases": cases,
    })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
