"""Huber objective on log residuals and multi-start L-BFGS-B.

Objective (Epoch AI's Chinchilla replication, Besiroglu et al. 2024):

    sum_i huber_delta(log L_i - log L_pred_i)

with ``huber(r) = r^2 / 2`` for ``|r| <= delta``, ``delta (|r| - delta / 2)``
beyond: quadratic for the typical run, linear for outliers (a diverged or
mislabelled run pulls the fit no more than its sign). Its gradient is
``-J^T clip(r, -delta, delta)``, J the law's Jacobian; the Jacobians are
analytic and :func:`check_gradient` compares them with central differences.

Multi-start: the objective is evaluated (no optimizing) at every point of the
grid of starts, and L-BFGS-B runs from the ``keep`` best of them; the best end
point wins. On the Chinchilla data, keeping 100 starts instead of 8 reaches the
same optimum (to 1e-7) at 4x the cost (docs/decisions.md).

Centring: L-BFGS-B moves ``u = M^-1 theta`` rather than ``theta``, where
``theta = M u`` is the law's :meth:`~raysweep.fit.laws.Law.center_matrix` for the
design's mean ln N and ln D (``a = a_c + alpha * mean ln N``, ``b = b_c + beta *
mean ln D``): at ln N ~ 18 the pair (a, alpha) is otherwise almost collinear, and
centring leaves the objective's minima unchanged while making it far better
conditioned. Starts, results and bounds stay in ``theta`` (the box on ``u`` is the
interval image of the box on ``theta``). A parameter the law fixes
(:attr:`~raysweep.fit.laws.Law.fixed`) has equal lower and upper bounds.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from raysweep.fit.data import Design
from raysweep.fit.laws import Law

DELTA = 1e-3


def huber(r: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Sum of Huber losses of residuals ``r`` and d/dr per residual."""
    a = np.abs(r)
    quad = a <= delta
    val = np.where(quad, 0.5 * r * r, delta * (a - 0.5 * delta)).sum()
    return float(val), np.clip(r, -delta, delta)


class Objective:
    """Huber loss of a law on a design as a function of a subset of parameters.

    ``free`` marks the entries of the full vector that the optimizer moves; the
    others stay at ``base`` (the staged fit freezes the dense law this way).
    """

    def __init__(self, law: Law, design: Design, delta: float = DELTA,
                 base: np.ndarray | None = None, free: np.ndarray | None = None,
                 center: bool = True):
        self.law, self.design, self.delta = law, design, delta
        p = len(law.names)
        self.base = np.zeros(p) if base is None else np.asarray(base, float).copy()
        self.free = np.ones(p, bool) if free is None else np.asarray(free, bool)
        for i, v in getattr(law, "fixed", {}).items():
            self.base[i] = v
        # Huber is tiny near the optimum (~delta * rmse * n); scale it so that
        # L-BFGS-B's absolute gradient tolerance is meaningful.
        self.scale = 1.0 / (delta * max(design.n, 1))
        self.all_free = bool(self.free.all())
        M = law.center_matrix(design) if center and design.n else np.eye(p)
        # the map only mixes frozen with frozen or free with free entries
        self.M = M[np.ix_(self.free, self.free)]
        self.Minv = np.linalg.inv(self.M)

    def values(self, xs: np.ndarray) -> np.ndarray:
        """:meth:`value` of many points (rows) at once (:meth:`Law.predict_many`)."""
        xs = np.atleast_2d(np.asarray(xs, float))
        thetas = np.tile(self.base, (len(xs), 1))
        thetas[:, self.free] = xs
        with np.errstate(over="ignore", invalid="ignore"):
            r = self.design.log_loss[None, :] - self.law.predict_many(thetas, self.design)
            a = np.abs(r)
            val = np.where(a <= self.delta, 0.5 * r * r,
                           self.delta * (a - 0.5 * self.delta)).sum(axis=1)
        return np.where(np.isfinite(val), val * self.scale, np.inf)

    def to_u(self, x: np.ndarray) -> np.ndarray:
        """Free entries of theta -> the optimizer's (centred) coordinates."""
        return self.Minv @ np.asarray(x, float)

    def from_u(self, u: np.ndarray) -> np.ndarray:
        return self.M @ np.asarray(u, float)

    def u_call(self, u: np.ndarray) -> tuple[float, np.ndarray]:
        """Value and gradient in the optimizer's coordinates (what L-BFGS-B sees)."""
        val, grad = self(self.from_u(u))
        return val, self.M.T @ grad

    def u_bounds(self) -> list[tuple[float, float]]:
        """The box on u: the interval image of the box on theta under M^-1."""
        lo, hi = np.array(self.bounds(), float).T
        W = self.Minv
        ulo = np.where(W > 0, W * lo, W * hi).sum(axis=1)
        uhi = np.where(W > 0, W * hi, W * lo).sum(axis=1)
        return list(zip(ulo, uhi))

    def full(self, x: np.ndarray) -> np.ndarray:
        theta = self.base.copy()
        theta[self.free] = x
        return theta

    def value(self, x: np.ndarray) -> float:
        pred, _ = self.law.predict(self.full(x), self.design, jac=False)
        val, _ = huber(self.design.log_loss - pred, self.delta)
        return val * self.scale if np.isfinite(val) else np.inf

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        pred, J = self.law.predict(self.full(x), self.design, jac=True)
        val, dr = huber(self.design.log_loss - pred, self.delta)
        if not np.isfinite(val):
            return 1e30, np.zeros_like(x)
        grad = -((J if self.all_free else J[:, self.free]).T @ dr)
        return val * self.scale, grad * self.scale

    def bounds(self) -> list[tuple[float, float]]:
        return [b for b, f in zip(self.law.bounds, self.free) if f]


def polish(obj: Objective, x0: np.ndarray, maxiter: int = 2000) -> tuple[np.ndarray, float]:
    """One L-BFGS-B run from ``x0`` (theta's free entries, clipped into the bounds), in the
    centred coordinates; returns theta's free entries and the objective."""
    lo, hi = np.array(obj.bounds()).T
    x0 = np.clip(np.asarray(x0, float), lo, hi)
    bounds = obj.u_bounds()
    ulo, uhi = np.array(bounds).T
    u0 = np.clip(obj.to_u(x0), ulo, uhi)
    res = minimize(obj.u_call, u0, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": maxiter, "ftol": 1e-13, "gtol": 1e-9, "maxcor": 30})
    return obj.from_u(res.x), float(res.fun)


def multistart(obj: Objective, starts: np.ndarray, keep: int = 8) -> tuple[np.ndarray, float]:
    """Evaluate every start, run L-BFGS-B from the ``keep`` best, return the best end point."""
    starts = np.atleast_2d(np.asarray(starts, float))
    lo, hi = np.array(obj.bounds()).T
    # clipped into the box (a fixed parameter's starts collapse): distinct starts only
    starts = np.unique(np.clip(starts, lo, hi), axis=0)
    vals = obj.values(starts)
    order = _distinct_best(vals, keep)
    best_x, best_f = starts[order[0]], np.inf
    for i in order:
        x, f = polish(obj, starts[i])
        if f < best_f:
            best_x, best_f = x, f
    return best_x, best_f


def _distinct_best(vals: np.ndarray, keep: int) -> list[int]:
    """Indices of the ``keep`` lowest values, skipping ties: starts with the same objective
    (to 1e-10) are almost always one degenerate function (a term switched off, as
    ``b - beta ln D`` far below the others, where every (b, beta) gives the same fit and
    no gradient), and keeping several of them wastes runs that could leave the flat set."""
    order = np.argsort(np.where(np.isfinite(vals), vals, np.inf), kind="stable")
    picked: list[int] = []
    for i in order:
        if len(picked) == keep:
            break
        if picked and abs(vals[i] - vals[picked[-1]]) <= 1e-10 * max(abs(vals[i]), 1e-300):
            continue
        picked.append(int(i))
    return picked or [int(order[0])]


def check_gradient(law: Law, design: Design, theta: np.ndarray, eps: float = 1e-6) -> float:
    """Largest relative difference between the analytic and central-difference Jacobian."""
    _, J = law.predict(np.asarray(theta, float), design)
    num = np.empty_like(J)
    for j in range(len(theta)):
        tp, tm = np.array(theta, float), np.array(theta, float)
        tp[j] += eps
        tm[j] -= eps
        num[:, j] = (law.predict(tp, design, jac=False)[0]
                     - law.predict(tm, design, jac=False)[0]) / (2 * eps)
    scale = np.maximum(np.abs(num), 1e-3)
    return float(np.max(np.abs(J - num) / scale))
