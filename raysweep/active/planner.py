"""A design that plans for its whole budget: the relaxed budgeted V-optimal design.

Each round of the active search (``search.design: plan``, the default) asks:
*if the whole remaining budget were spent now, which runs should it buy?* With
the current fit linearized (a Laplace posterior), observing candidate ``c`` adds
the rank-one information ``j_c j_c^T / sigma^2`` (``j_c``: the gradient of its
predicted log-loss in the law's parameters), and the targets' mean predicted
variance after buying a set with weights ``w`` is

    V(w) = tr(G M(w)^-1 G^T) / T,   M(w) = M0 + sum_c w_c j_c j_c^T / sigma^2

(``G``: the targets' log-loss gradients, ``M0``: the prior precision plus the
information of the runs already observed or pending). Relaxing ``w_c`` from
{0, 1} to [0, 1] under the cost budget ``sum_c w_c cost_c <= B`` makes this a
convex problem (V is convex in w), solved by Frank-Wolfe (:func:`relaxed_design`):
the linear step is a fractional knapsack, the step size a line search, and the
Frank-Wolfe gap certifies a lower bound on the optimum of *any* design of that
budget, integer or not (the benchmark's regret is measured against it). The
search then runs the largest-weight candidates of the plan, re-plans after every
batch with the refitted law, and counts pending runs in ``M0``.

The fit is ``raysweep fit``'s (:func:`raysweep.fit.fit_table`: Huber on
log-loss residuals, log-sum-exp law, multi-start L-BFGS-B), the chinchilla law
for an all-dense pool and the decoupled law (one rho per representation)
otherwise; :class:`HuberLaplace` wraps it with the Jacobians the plan needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The weak Gaussian prior that keeps M0 invertible before the data pin a
# direction (sd per parameter, internal units): a, b, e (log loss), alpha, beta,
# then every capacity parameter (log rho).
PRIOR_SD = (10.0, 10.0, 2.0, 0.5, 0.5)
PRIOR_SD_CAP = 2.0
NOISE_PSEUDO = 5  # the configured noise counts as this many observations (see noise_level)


def v_value(info: np.ndarray, w: np.ndarray, m0: np.ndarray, grad: np.ndarray) -> float:
    """``tr(G (M0 + J^T diag(w) J)^-1 G^T) / T`` (``info``: J, rows already / sigma)."""
    m = m0 + (info * w[:, None]).T @ info
    return float(np.trace(grad @ np.linalg.solve(m, grad.T))) / len(grad)


def _knapsack(score: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray:
    """The vertex of {0 <= s <= 1, cost . s <= budget} maximizing ``score . s``
    (score >= 0): items by score per cost, the last one fractional."""
    s = np.zeros(len(score))
    left = budget
    for i in np.argsort(-score / cost, kind="stable"):
        if score[i] <= 0 or left <= 0:
            break
        s[i] = min(1.0, left / cost[i])
        left -= s[i] * cost[i]
    return s


def _line_search(f, lo: float = 0.0, hi: float = 1.0, iters: int = 30) -> float:
    """Minimizer of a convex scalar function on [lo, hi] (golden section)."""
    g = (np.sqrt(5.0) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    x = (a + b) / 2
    return x if f(x) <= min(f(lo), f(hi)) else (lo if f(lo) <= f(hi) else hi)


@dataclass(frozen=True)
class Plan:
    """Solution of the relaxed design: weights per candidate, the value reached and a
    certified lower bound on the optimum (value minus the Frank-Wolfe gap)."""

    weights: np.ndarray
    value: float
    lower_bound: float


def relaxed_design(info: np.ndarray, m0: np.ndarray, grad: np.ndarray, cost: np.ndarray,
                   budget: float, iters: int = 200, tol: float = 1e-4) -> Plan:
    """Frank-Wolfe on ``min V(w)`` s.t. ``0 <= w <= 1``, ``cost . w <= budget``.

    ``info``: (P, p) candidate gradients divided by their noise sd; ``m0``: (p, p)
    information already held; ``grad``: (T, p) target gradients; ``cost``: (P,).
    Stops when the gap is below ``tol`` times the value.
    """
    info = np.asarray(info, float)
    cost = np.asarray(cost, float)
    n = len(cost)
    if n == 0 or budget <= 0:
        v = v_value(info, np.zeros(n), m0, grad)
        return Plan(np.zeros(n), v, v)
    w = np.zeros(n)  # feasible start
    best_lb = 0.0
    v = v_value(info, w, m0, grad)
    for _ in range(iters):
        m = m0 + (info * w[:, None]).T @ info
        h = np.linalg.solve(m, grad.T)  # p x T
        # dV/dw_c = -||G M^-1 j_c||^2 / T
        score = ((info @ h) ** 2).sum(1) / len(grad)
        s = _knapsack(score, cost, budget)
        gap = float(score @ (s - w))
        best_lb = max(best_lb, v - gap)
        if gap <= tol * v:
            break
        d = s - w
        step = _line_search(lambda t, w=w, d=d: v_value(info, w + t * d, m0, grad))
        if step <= 0:
            break
        w = w + step * d
        v = v_value(info, w, m0, grad)
    return Plan(np.clip(w, 0.0, 1.0), v, min(best_lb, v))


def round_plan(weights: np.ndarray, cost: np.ndarray, budget: float, n: int,
               floor: float = 1e-3) -> list[int]:
    """Up to ``n`` candidates (indices into ``weights``) of largest weight that fit the
    budget together; candidates below ``floor`` are not bought."""
    picks, left = [], float(budget)
    for i in np.argsort(-weights, kind="stable"):
        if len(picks) >= n or weights[i] < floor:
            break
        if cost[i] <= left:
            picks.append(int(i))
            left -= cost[i]
    return picks


def discrepancy_sd(sigma: float, flops: np.ndarray, target_flops: float,
                   discrepancy: float) -> np.ndarray:
    """Noise sd per run including the law's misspecification: a run ``k`` e-folds of
    compute below the targets says less about them, ``sigma sqrt(1 + d k^2)``
    (``d = discrepancy``; 0: the law is taken as exact)."""
    k = np.maximum(np.log(target_flops / np.asarray(flops, float)), 0.0)
    return sigma * np.sqrt(1.0 + discrepancy * k * k)


def noise_level(resid: np.ndarray, n_theta: int, noise: float) -> float:
    """Noise sd of log-loss: a robust residual scale (1.4826 MAD) shrunk toward the
    configured ``noise`` with :data:`NOISE_PSEUDO` pseudo-observations."""
    dof = len(resid) - n_theta
    if dof <= 0:
        return float(noise)
    s = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    return float(np.sqrt((dof * s * s + NOISE_PSEUDO * noise * noise) / (dof + NOISE_PSEUDO)))


def pool_frame(rows: list[dict], loss=None):
    """A results-schema DataFrame of pool rows (the fitter's input); ``loss``: per row,
    or 1.0 where unknown (prediction only)."""
    import pandas as pd

    cols = {"n_params": [float(r["n_params"]) for r in rows],
            "tokens": [float(r["tokens"]) for r in rows],
            "loss": list(loss) if loss is not None else [1.0] * len(rows)}
    for key in ("format", "weights", "activations"):
        if any(key in r for r in rows):
            cols[key] = [r.get(key, "bf16" if key != "format" else "") for r in rows]
    return pd.DataFrame(cols)


class HuberLaplace:
    """``raysweep fit``'s estimator on observed pool rows, linearized for the plan.

    ``rows``: the pool rows then the target rows (dicts with ``n_params``,
    ``tokens`` and the representation columns). :meth:`fit` returns a
    :class:`Laplace` with the law's log-loss Jacobian at every row.
    """

    def __init__(self, rows: list[dict], noise: float = 0.01, keep: int = 8):
        from raysweep.results import row_is_dense

        self.rows = rows
        self.noise = float(noise)
        self.keep = int(keep)
        self.law = "chinchilla" if all(row_is_dense(r) for r in rows) else "decoupled"
        self.frame = pool_frame(rows)
        self._design = None
        self._cache: tuple | None = None

    def design(self):
        from raysweep.fit import make_design

        if self._design is None:
            self._design = make_design(self.frame, clean=False)
        return self._design

    def fit(self, observed: dict[int, float]) -> Laplace:
        """Fit on ``observed`` {row: loss}; raises FitError when it cannot."""
        key = tuple(sorted(observed.items()))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        from raysweep.fit import fit_table

        idx = np.array(sorted(observed), int)
        df = self.frame.iloc[idx].copy()
        df["loss"] = [observed[i] for i in idx]
        res = fit_table(df, law=self.law, keep=self.keep)
        theta = np.array(res.theta)
        log_pred, jac = res.model.predict(theta, self.design(), jac=True)
        resid = np.log(df["loss"].to_numpy(float)) - log_pred[idx]
        sigma = noise_level(resid, len(theta), self.noise)
        names = tuple(res.model.names)
        sd = np.array([*PRIOR_SD, *[PRIOR_SD_CAP] * (len(names) - len(PRIOR_SD))])
        prior = np.diag(sd ** -2.0)
        m0 = prior + jac[idx].T @ jac[idx] / sigma ** 2
        out = Laplace(res, theta, log_pred, jac, sigma, m0, names, prior)
        self._cache = (key, out)
        return out


@dataclass(frozen=True)
class Laplace:
    """A fit and its linearization: ``log_pred``/``jac`` at every row, noise
    ``sigma`` (log-loss), ``m0`` the prior plus observed information."""

    result: object  # raysweep.fit.FitResult
    theta: np.ndarray
    log_pred: np.ndarray
    jac: np.ndarray
    sigma: float
    m0: np.ndarray
    names: tuple[str, ...]
    prior: np.ndarray | None = None  # the prior precision alone

    def cov(self, grad: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
        """Posterior covariance of ``grad @ theta`` (after adding info rows ``extra``)."""
        m = self.m0 if extra is None or not len(extra) else self.m0 + extra.T @ extra
        return grad @ np.linalg.solve(m, grad.T)

    def rho_grad(self, labels) -> np.ndarray:
        """Rows selecting ``logrho[label]`` for each label (decoupled law)."""
        g = np.zeros((len(labels), len(self.names)))
        for k, lab in enumerate(labels):
            g[k, self.names.index(f"logrho[{lab}]")] = 1.0
        return g
