"""Acquisition of active search: which runs to train next, given the ones done.

Three designs (``search.design``). ``plan`` (the default) fits the finished runs
with ``raysweep fit``'s estimator and plans the whole remaining budget each round
for the smallest expected error of that fit at the targets, the law's
misspecification included, running the plan's first picks
(:mod:`raysweep.active.planner`, :meth:`ActiveDesign._plan`); ``vopt`` solves the
relaxed budgeted V-optimal design instead (the law taken as exact,
:meth:`ActiveDesign._vopt`); ``greedy`` is the earlier acquisition, described
below, one candidate at a time per FLOP on an ensemble of least-squares fits.

The candidate pool is the study's grid (one row per trial config). The
*targets* are the quantities the user wants pinned, by default the predicted
loss of every representation at the grid's largest (N, D), which fixes each
rho where it matters most. Each round:

1. fit the surrogate (:mod:`raysweep.active.surrogate`) on the finished runs: an
   ensemble of K fits gives, for every candidate c and target t, samples of
   the predicted losses y_c, y_t;
2. score every affordable candidate by the expected reduction of the summed
   target variance if c were observed with noise variance s_c^2, in the
   ensemble-Kalman form (the linear update the ensemble implies)::

       gain(c) = sum_t Cov(y_c, y_t)^2 / (Var(y_c) + s_c^2)

   divided by its cost (6 N D)^cost_exponent;
3. pick a batch greedily. After each pick, and first for every run still
   pending, the covariance is updated as if that run had been observed at its
   predicted mean (the "kriging believer"): in the linear update the mean does
   not enter the covariance, so this is the rank-one downdate
   ``C <- C - C[:, c] C[c, :] / (C[c, c] + s_c^2)``; a second pick near a
   pending run then scores what it adds beyond it, not what it duplicates;
4. stop when no affordable candidate is left (budget) or the largest target
   standard deviation falls below ``target_std``.

Before the first fit, an initial design covers every representation at its
cheapest (N, D), plus the dense reference at three (N, D) points spanning two
N and two D, so the dense law (and every rho relative to it) is identifiable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from raysweep.active.options import DESIGNS, DISCREPANCY, DISCREPANCY_SCALE
from raysweep.active.planner import (
    HuberLaplace,
    Laplace,
    Misspecified,
    Plan,
    RobustPlan,
    relaxed_design,
    robust_plan,
    round_plan,
)
from raysweep.active.surrogate import DecoupledEnsemble, Posterior
from raysweep.errors import FitError
from raysweep.results import row_is_dense, row_label, run_flops

# a fit that cannot be made yet (too few runs, a singular system): fall back
FIT_ERRORS = (FitError, np.linalg.LinAlgError, ValueError)


@dataclass(frozen=True)
class Pool:
    """The candidate runs as arrays, plus the target points appended after them.

    Rows ``0 .. n_pool-1`` are candidates; rows ``n_pool ..`` are targets (one
    per label and target (N, D)), which are predicted but never run.
    """

    labels: tuple[str, ...]
    fmt: np.ndarray
    n: np.ndarray
    d: np.ndarray
    n_pool: int
    ref: int
    targets: tuple[tuple[str, float, float], ...] = field(default=())

    @property
    def cost(self) -> np.ndarray:
        """FLOPs of each candidate, 6 N D (Kaplan et al. 2020)."""
        return run_flops(1.0, 1.0) * self.n[: self.n_pool] * self.d[: self.n_pool]

    @property
    def target_rows(self) -> np.ndarray:
        return np.arange(self.n_pool, len(self.n))

    @classmethod
    def build(cls, rows: list[dict], target=None) -> Pool:
        """From pool dicts (keys ``n_params``, ``tokens``, ``format`` or specs).

        ``target``: None for the grid's largest (N, D) (largest N, then the
        largest D among rows at that N), or a list of (n_params, tokens) points.
        Every label gets a target at every target point.
        """
        labels, fmt, dense = [], [], {}
        for r in rows:
            lab = row_label(r)
            if lab not in dense:
                labels.append(lab)
                dense[lab] = row_is_dense(r)
            fmt.append(labels.index(lab))
        n = np.array([float(r["n_params"]) for r in rows])
        d = np.array([float(r["tokens"]) for r in rows])
        if target is None:
            n_max = n.max()
            target = [(n_max, d[n == n_max].max())]
        ref = next((i for i, lab in enumerate(labels) if dense[lab]), -1)
        tg = tuple((lab, float(tn), float(td)) for tn, td in target for lab in labels)
        return cls(
            labels=tuple(labels),
            fmt=np.array(fmt + [labels.index(t[0]) for t in tg], int),
            n=np.concatenate([n, [t[1] for t in tg]]),
            d=np.concatenate([d, [t[2] for t in tg]]),
            n_pool=len(rows), ref=ref, targets=tg,
        )

    def initial_design(self) -> list[int]:
        """Cheapest run of every label, plus dense at 3 (N, D) points (see module doc)."""
        cost = self.cost
        order = np.argsort(cost, kind="stable")
        fmt = self.fmt[: self.n_pool]
        picks = [int(order[np.flatnonzero(fmt[order] == f)[0]])
                 for f in range(len(self.labels)) if np.any(fmt == f)]
        ref = self.ref if self.ref >= 0 else int(fmt[order[0]])
        rows = [int(i) for i in order if fmt[i] == ref]
        chosen = [rows[0]]

        def add(pred):
            for i in rows:
                if (self.n[i], self.d[i]) not in {(self.n[j], self.d[j]) for j in chosen} \
                        and pred(i):
                    chosen.append(i)
                    return

        add(lambda i: self.n[i] != self.n[chosen[0]])  # a second N
        add(lambda i: self.d[i] not in {self.d[j] for j in chosen})  # a second D
        while len(chosen) < 3 and len(chosen) < len({(self.n[i], self.d[i]) for i in rows}):
            add(lambda i: True)
        return list(dict.fromkeys(picks + chosen))


@dataclass(frozen=True)
class Proposal:
    """The next runs to start (pool indices) and why the list may be short."""

    picks: list[int]
    # "initial" | "acquired" | "budget" | "target_std" | "exhausted" | "waiting" |
    # "converged" (design plan: no affordable run lowers the error at the targets)
    reason: str
    target_std: float = float("nan")  # largest target sd (loss units), from observed runs


class ActiveDesign:
    """Stateless-per-call acquisition over a fixed pool (state lives with the caller).

    The caller (the Optuna sampler, or an in-process loop) passes what it knows:
    ``observed`` {pool index: final loss}, ``pending`` indices, ``failed``
    {pool index: number of failures}. Runs that failed ``max_failures`` times
    are not proposed again; every failed attempt counts as spent.
    """

    def __init__(self, rows: list[dict], budget_flops: float, *, target=None,
                 cost_exponent: float = 1.0, ensemble: int = 48, noise: float = 0.01,
                 target_std: float = 0.0, max_failures: int = 1, seed: int = 0,
                 surrogate=None, design: str = "plan", discrepancy: float = DISCREPANCY,
                 discrepancy_scale: float = DISCREPANCY_SCALE):
        self.target_rho = isinstance(target, str) and target == "rho"
        self.pool = Pool.build(rows, [] if self.target_rho else target)
        if self.target_rho and self.pool.ref < 0:
            raise ValueError("target 'rho' needs a dense reference representation in the pool "
                             "(rho is measured against it)")
        # The target quantities: the loss at every target row, or (target 'rho') the
        # capacity of every non-reference label.
        self.rho_labels = tuple(lab for i, lab in enumerate(self.pool.labels)
                                if self.target_rho and i != self.pool.ref)
        self.n_targets = len(self.rho_labels) if self.target_rho else len(self.pool.targets)
        self.budget = float(budget_flops)
        self.cost_exponent = float(cost_exponent)
        self.k = int(ensemble)
        self.target_std = float(target_std)
        self.max_failures = int(max_failures)
        self.seed = int(seed)
        p = self.pool
        self.surrogate = surrogate or DecoupledEnsemble(
            np.log(p.n), np.log(p.d), p.fmt, p.labels, p.ref, noise=noise)
        self.init = p.initial_design()
        self._cache: tuple[tuple, Posterior] | None = None
        if design not in DESIGNS:
            raise ValueError(f"design: got {design!r}; allowed: {', '.join(DESIGNS)}")
        self.design = design
        self.discrepancy = float(discrepancy)
        self.discrepancy_scale = float(discrepancy_scale)
        self.noise = float(noise)
        self.rows = rows
        self._laplace: HuberLaplace | None = None
        self.last_plan: Plan | RobustPlan | None = None

    @property
    def laplace(self) -> HuberLaplace:
        """``raysweep fit``'s estimator over the pool rows, then one row per target."""
        if self._laplace is None:
            first = {}
            for r in self.rows:
                first.setdefault(row_label(r), r)
            tg = [{**first[lab], "n_params": n, "tokens": d} for lab, n, d in self.pool.targets]
            self._laplace = HuberLaplace(list(self.rows) + tg, noise=self.noise)
        return self._laplace

    def _target_grad(self, lap: Laplace) -> np.ndarray:
        """Gradients of the target quantities: log-loss at every target row, or the
        log-capacity of every non-reference label (target ``rho``)."""
        if self.target_rho:
            return lap.rho_grad(self.rho_labels)
        return lap.jac[self.pool.target_rows]

    def target_intervals(self, observed: dict[int, float], level: float = 0.95) -> dict:
        """Per target (keys as :meth:`predict_targets`): (central, lower, upper) of the
        Huber fit on ``observed`` with its Laplace interval (log-normal, ``level``)."""
        from statistics import NormalDist

        lap = self.laplace.fit(observed)
        z = NormalDist().inv_cdf(0.5 + level / 2)
        g = self._target_grad(lap)
        if self.design == "plan":  # the plan's criterion: misspecification included
            var = self.criterion(lap).mse(sorted(observed))
        else:
            var = np.diag(lap.cov(g))
        sd = np.sqrt(np.maximum(var, 0.0))
        if self.target_rho:
            centre = np.array([lap.theta[lap.names.index(f"logrho[{lab}]")]
                               for lab in self.rho_labels])
            keys = [f"rho[{lab}]" for lab in self.rho_labels]
        else:
            centre = lap.log_pred[self.pool.target_rows]
            keys = [f"{lab}@N={n:.4g},D={d:.4g}" for lab, n, d in self.pool.targets]
        return {k: (float(np.exp(c)), float(np.exp(c - z * s)), float(np.exp(c + z * s)))
                for k, c, s in zip(keys, centre, sd, strict=True)}

    def spent(self, observed, pending=(), failed=None) -> float:
        """FLOPs committed: finished + pending + every failed attempt."""
        c = self.pool.cost
        fails = sum(c[i] * k for i, k in (failed or {}).items())
        return float(sum(c[i] for i in observed) + sum(c[i] for i in pending) + fails)

    def posterior(self, observed: dict[int, float], k: int | None = None) -> Posterior:
        """Surrogate fit on ``observed`` with predictions at every pool and target row."""
        k = self.k if k is None else k
        key = (tuple(sorted(observed.items())), k)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        idx = np.array(sorted(observed), int)
        rng = np.random.default_rng([self.seed, len(idx)])
        post = self.surrogate.posterior(idx, np.array([observed[i] for i in idx]),
                                        np.arange(len(self.pool.n)), k, rng)
        self._cache = (key, post)
        return post

    def predict_targets(self, observed: dict[int, float]) -> dict[str, float]:
        """Central predicted loss per target, keyed ``"<label>@N=..,D=.."`` (target
        ``rho``: the central capacity per non-reference label, keyed ``"rho[<label>]"``)."""
        if self.design in ("plan", "vopt"):
            try:
                return {k: v[0] for k, v in self.target_intervals(observed).items()}
            except FIT_ERRORS:
                pass  # too few runs for raysweep fit: the surrogate's point fit
        post = self.posterior(observed, k=0)
        if self.target_rho:
            return {f"rho[{lab}]": post.rho[lab] for lab in self.rho_labels}
        return {f"{lab}@N={n:.4g},D={d:.4g}": float(post.central[self.pool.n_pool + j])
                for j, (lab, n, d) in enumerate(self.pool.targets)}

    def propose(self, observed: dict[int, float], pending=(), failed=None,
                n: int = 1) -> Proposal:
        """Up to ``n`` new pool indices to run next (see the module docstring)."""
        failed = failed or {}
        pending = list(pending)
        left = self.budget - self.spent(observed, pending, failed)
        cost = self.pool.cost
        busy = set(observed) | set(pending) | {i for i, k in failed.items()
                                               if k >= self.max_failures}
        free = np.ones(self.pool.n_pool, bool)
        free[list(busy)] = False
        if not free.any():
            return Proposal([], "exhausted")
        init = [i for i in self.init if free[i]]
        if init:
            picks = []
            for i in init:
                if len(picks) < n and cost[i] <= left:
                    picks.append(i)
                    left -= cost[i]
            return Proposal(picks, "initial" if picks else "budget")
        if len(observed) < 2:
            if pending:
                return Proposal([], "waiting")
            # the initial runs failed: widen the design with the cheapest runs left
            ok = [int(i) for i in np.argsort(cost, kind="stable") if free[i] and cost[i] <= left]
            return Proposal(ok[:n], "initial" if ok else "budget")
        return self._acquire(observed, pending, free, left, n)

    def covariance(self, observed: dict[int, float]) -> tuple[Posterior, np.ndarray]:
        """The posterior and the covariance the acquisition scores with: the ensemble's
        sample covariance of the predicted loss at every pool row, then of the
        ``n_targets`` target quantities (bench/active.py ``--covariance`` swaps in
        linearized alternatives)."""
        post = self.posterior(observed)
        samples = post.members
        if self.target_rho:
            if post.rho_members is None:
                raise ValueError("target 'rho' needs a surrogate whose posterior carries "
                                 "rho_members (the capacity samples per label)")
            samples = np.column_stack([samples[:, : self.pool.n_pool]]
                                      + [post.rho_members[lab] for lab in self.rho_labels])
        return post, np.cov(samples, rowvar=False)

    def _acquire(self, observed, pending, free, left, n) -> Proposal:
        if self.design in ("plan", "vopt"):
            try:
                step = self._plan if self.design == "plan" else self._vopt
                return step(observed, pending, free, left, n)
            except FIT_ERRORS:
                # raysweep fit cannot fit these runs yet (fewer runs than parameters):
                # widen the pilot with the cheapest affordable runs
                cost = self.pool.cost
                picks = []
                for i in np.argsort(cost, kind="stable"):
                    if len(picks) < n and free[i] and cost[i] <= left:
                        picks.append(int(i))
                        left -= cost[i]
                return Proposal(picks, "initial" if picks else "budget")
        return self._greedy(observed, pending, free, left, n)

    def _plan(self, observed, pending, free, left, n) -> Proposal:
        """Plan the remaining budget under the bias-plus-variance criterion and run the
        plan's first picks (:func:`raysweep.active.planner.robust_plan`)."""
        lap = self.laplace.fit(observed)
        crit = self.criterion(lap)
        chosen = list(observed) + list(pending)
        sd_now = self._sd_loss(lap, crit.mse(chosen))
        ok = self._affordable(sd_now, free, left)
        if isinstance(ok, Proposal):
            return ok
        plan = robust_plan(crit, chosen, ok, self.pool.cost, left)
        self.last_plan = plan
        if not plan.picks:  # no affordable run lowers the error at the targets
            return Proposal([], "converged", sd_now)
        return Proposal(plan.picks[:n], "acquired", sd_now)

    def criterion(self, lap: Laplace) -> Misspecified:
        """The plan's bias-plus-variance criterion at the fit ``lap``: the law's error
        a smooth function of (ln N, ln D) with sd ``discrepancy`` and correlation length
        ``discrepancy_scale`` (:func:`raysweep.active.planner.discrepancy_kernel`),
        shared by every representation."""
        p = self.pool
        x = np.column_stack([np.log(p.n), np.log(p.d)])
        return Misspecified(lap.jac[: p.n_pool], self._target_grad(lap), x[: p.n_pool],
                            x[p.n_pool:], self.discrepancy, self.discrepancy_scale,
                            lap.sigma, lap.prior, target_loss=not self.target_rho)

    def _affordable(self, sd_now: float, free, left: float) -> np.ndarray | Proposal:
        """The affordable free candidates, or the Proposal that stops the search (every
        target's sd below ``target_std``, or nothing affordable left)."""
        if sd_now <= self.target_std:
            return Proposal([], "target_std", sd_now)
        ok = np.flatnonzero(free & (self.pool.cost <= left))
        return ok if len(ok) else Proposal([], "budget", sd_now)

    def _sd_loss(self, lap: Laplace, var: np.ndarray) -> float:
        """Largest target sd in loss units (rho units for target ``rho``) from the
        variances ``var`` of the log target quantities."""
        scale = (np.exp(lap.theta[[lap.names.index(f"logrho[{lab}]") for lab in self.rho_labels]])
                 if self.target_rho else np.exp(lap.log_pred[self.pool.target_rows]))
        return float(np.sqrt(np.max(np.maximum(var, 0.0) * scale ** 2)))

    def _vopt(self, observed, pending, free, left, n) -> Proposal:
        """Solve the relaxed budgeted V-optimal design for the remaining budget (the law
        taken as exact) and run its largest weights (:mod:`raysweep.active.planner`)."""
        lap = self.laplace.fit(observed)
        info = self.information(lap)
        obs = list(observed) + list(pending)
        m0 = lap.prior + info[obs].T @ info[obs]
        g = self._target_grad(lap)
        sd_now = self._sd_loss(lap, np.diag(g @ np.linalg.solve(m0, g.T)))
        ok = self._affordable(sd_now, free, left)
        if isinstance(ok, Proposal):
            return ok
        cost = self.pool.cost
        plan = relaxed_design(info[ok], m0, g, cost[ok], left)
        self.last_plan = plan
        picks = [int(ok[i]) for i in round_plan(plan.weights, cost[ok], left, n)]
        if not picks:  # nothing adds information: the largest affordable gain anyway
            picks = [int(ok[np.argmax(plan.weights)])]
        return Proposal(picks, "acquired", sd_now)

    def information(self, lap: Laplace) -> np.ndarray:
        """Per pool row, the log-loss gradient over the noise sd (``design: vopt``)."""
        return lap.jac[: self.pool.n_pool] / lap.sigma

    def _greedy(self, observed, pending, free, left, n) -> Proposal:
        post, cov = self.covariance(observed)
        tg = np.arange(self.pool.n_pool, self.pool.n_pool + self.n_targets)
        sd_now = float(np.sqrt(np.max(np.diag(cov)[tg])))
        if sd_now <= self.target_std:
            return Proposal([], "target_std", sd_now)
        noise = (post.central * post.sigma) ** 2  # loss-space noise variance per row
        for i in pending:
            cov = _believe(cov, i, noise[i])
        cost = self.pool.cost
        weight = cost ** -self.cost_exponent
        picks = []
        for _ in range(n):
            ok = np.flatnonzero(free & (cost <= left))
            if not len(ok):
                break
            gain = (cov[np.ix_(ok, tg)] ** 2).sum(1) / (np.diag(cov)[ok] + noise[ok])
            c = int(ok[np.argmax(gain * weight[ok])])
            picks.append(c)
            free[c] = False
            left -= cost[c]
            cov = _believe(cov, c, noise[c])
        return Proposal(picks, "acquired" if picks else "budget", sd_now)


def _believe(cov: np.ndarray, c: int, noise_var: float) -> np.ndarray:
    """Covariance after observing row ``c`` with noise ``noise_var`` (rank-one downdate)."""
    v = cov[:, c]
    return cov - np.outer(v, v) / (v[c] + noise_var)


def run_in_process(design: ActiveDesign, oracle, batch: int = 4, max_rounds: int = 1000,
                   on_round=None) -> dict[int, float]:
    """Synchronous loop without Ray or Optuna: propose a batch, observe it, repeat.

    ``oracle(i) -> loss`` answers pool index ``i`` (``None`` or NaN = failed).
    ``on_round(observed, spent)`` is called after every batch (benchmarks use it
    to record error against spent FLOPs). Returns {pool index: loss}.
    """
    observed: dict[int, float] = {}
    failed: dict[int, int] = {}
    for _ in range(max_rounds):
        prop = design.propose(observed, (), failed, n=batch)
        if not prop.picks:
            break
        for i in prop.picks:
            y = oracle(i)
            if y is None or not np.isfinite(y):
                failed[i] = failed.get(i, 0) + 1
            else:
                observed[i] = float(y)
        if on_round is not None:
            on_round(dict(observed), design.spent(observed, (), failed))
    return observed
