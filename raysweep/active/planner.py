"""Designs that plan for the whole budget: the bias-plus-variance plan (``design:
plan``, the default) and the relaxed budgeted V-optimal design (``design: vopt``).

Both linearize ``raysweep fit``'s current fit (a Laplace posterior,
:class:`HuberLaplace`: Huber on log-loss residuals, the chinchilla law for an
all-dense pool and the decoupled law otherwise) and ask: *if the whole remaining
budget were spent now, which runs should it buy?*

``plan`` (:class:`Misspecified`, :func:`robust_plan`): the law's error is a smooth
function of (ln N, ln D) (:func:`discrepancy_kernel`), and the criterion is the
expected squared error at the targets of the *plain* fit, bias from that error plus
noise variance (Box and Draper's criterion). A run far from the targets carries an
error the targets do not share, so it can raise the criterion; the plan is the
better of two greedy plans to the end of the budget (gain per FLOP, plain gain).

``vopt`` (:func:`relaxed_design`): the law taken as exact. Observing candidate ``c``
adds the rank-one information ``j_c j_c^T / sigma^2`` (``j_c``: the gradient of its
predicted log-loss in the law's parameters), and the targets' mean predicted
variance after buying a set with weights ``w`` is

    V(w) = tr(G M(w)^-1 G^T) / T,   M(w) = M0 + sum_c w_c j_c j_c^T / sigma^2

(``G``: the targets' log-loss gradients, ``M0``: the prior precision plus the
information of the runs already observed or pending). Relaxing ``w_c`` from
{0, 1} to [0, 1] under the cost budget ``sum_c w_c cost_c <= B`` makes this a
convex problem (V is convex in w), solved by Frank-Wolfe: the linear step is a
fractional knapsack, the step size a line search, and the Frank-Wolfe gap
certifies a lower bound on the optimum of *any* design of that budget, integer or
not (the benchmark's regret is measured against it). The search runs the
largest-weight candidates of the plan, re-plans after every batch with the
refitted law, and counts pending runs in ``M0``.
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


def discrepancy_kernel(x: np.ndarray, y: np.ndarray, amp: float, scale: float) -> np.ndarray:
    """Prior covariance of the law's misspecification between rows ``x`` and ``y``
    (arrays of (ln N, ln D)): ``amp^2 exp(-|x - y|^2 / (2 scale^2))``, a smooth error of
    sd ``amp`` in log-loss, correlated over ``scale`` e-folds of N and of D."""
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return amp * amp * np.exp(-d2 / (2.0 * scale * scale))


@dataclass(frozen=True)
class Misspecified:
    """The quantities of the bias-plus-variance criterion over pool and target rows.

    ``jac`` (P, p): the law's log-loss gradients at the pool rows; ``grad`` (T, p): the
    target quantities' gradients; ``x`` (P, 2) and ``xt`` (T, 2): the (ln N, ln D) of
    pool rows and targets; ``amp``, ``scale``: the misspecification's sd and
    correlation length (:func:`discrepancy_kernel`; blocks of it are computed when
    needed, so a pool of 10,000 runs never holds a 10,000 x 10,000 matrix);
    ``target_loss``: False when the targets are not losses (log-capacities: the law's
    error reaches them through the fit only); ``sigma``: run-to-run noise sd of
    log-loss; ``prior``: (p, p) prior precision (keeps the normal equations
    invertible; internal units, as :class:`Laplace`).
    """

    jac: np.ndarray
    grad: np.ndarray
    x: np.ndarray
    xt: np.ndarray
    amp: float
    scale: float
    sigma: float
    prior: np.ndarray
    target_loss: bool = True

    def k(self, i, j) -> np.ndarray:
        """Misspecification covariance between pool rows ``i`` and ``j``."""
        return discrepancy_kernel(self.x[i], self.x[j], self.amp, self.scale)

    def kt(self, i) -> np.ndarray:
        """Covariance between pool rows ``i`` and the targets (zero for non-loss ones)."""
        if not self.target_loss:
            return np.zeros((len(i), len(self.grad)))
        return discrepancy_kernel(self.x[i], self.xt, self.amp, self.scale)

    @property
    def ktt(self) -> np.ndarray:
        return np.full(len(self.grad), self.amp ** 2 if self.target_loss else 0.0)

    def mse(self, chosen) -> np.ndarray:
        """Expected squared error at every target of the plain least-squares fit on the
        rows ``chosen`` (pool indices), misspecification and noise included (T,).

        The fit linearized at the current parameters moves by
        ``M^-1 J_S^T (delta_S + eps_S) / sigma^2`` (M = prior + J_S^T J_S / sigma^2), so
        with ``a_t = M^-1 g_t`` its error at target t, ``a_t^T J_S^T (delta_S + eps_S) /
        sigma^2 - delta_t``, has mean square
        ``a_t^T J_S^T (K_SS + sigma^2 I) J_S a_t / sigma^4 - 2 a_t^T J_S^T k_St / sigma^2
        + k_tt``: the variance of an exact law plus the bias of a wrong one.
        """
        s = np.asarray(list(chosen), int)
        js, _, a, q, lin = self._normal(s)
        s2 = self.sigma ** 2
        return (np.einsum("pt,pq,qt->t", a, q, a) / s2 ** 2
                - 2 * np.einsum("pt,pt->t", a, lin) / s2 + self.ktt)

    def _normal(self, s: np.ndarray):
        """For the rows ``s``: J_S, M, a = M^-1 G^T, J_S^T (K_SS + sigma^2 I) J_S and
        J_S^T k_St."""
        js, s2 = self.jac[s], self.sigma ** 2
        m = self.prior + js.T @ js / s2
        q = js.T @ (self.k(s, s) + s2 * np.eye(len(s))) @ js
        return js, m, np.linalg.solve(m, self.grad.T), q, js.T @ self.kt(s)

    def mse_added(self, chosen, cand) -> np.ndarray:
        """Mean over targets of :meth:`mse` of ``chosen + [c]`` for each ``c`` in
        ``cand`` (rank-one updates, vectorized over the candidates)."""
        s, c = np.asarray(list(chosen), int), np.asarray(cand, int)
        js, m, a, q, lin_s = self._normal(s)  # a: p x T
        jc, s2 = self.jac[c], self.sigma ** 2
        u = np.linalg.solve(m, jc.T).T  # (C, p): M^-1 j_c
        ja = jc @ a  # (C, T): j_c . a_t
        den = s2 + np.einsum("cp,cp->c", jc, u)
        ac = a[None] - u[:, :, None] * (ja / den[:, None])[:, None, :]  # (C, p, T)
        uq = self.k(s, c).T @ js  # (C, p): J_S^T k_Sc
        jac_a = np.einsum("cp,cpt->ct", jc, ac)
        quad = (np.einsum("cpt,pq,cqt->ct", ac, q, ac)
                + 2 * np.einsum("cp,cpt->ct", uq, ac) * jac_a
                + (self.amp ** 2 + s2) * jac_a ** 2)  # k(c, c) = amp^2
        lin = np.einsum("pt,cpt->ct", lin_s, ac) + jac_a * self.kt(c)
        return (quad / s2 ** 2 - 2 * lin / s2 + self.ktt).mean(1)


@dataclass(frozen=True)
class RobustPlan:
    """The runs the bias-plus-variance plan buys for the remaining budget, in the order
    it chose them, and the mean target MSE before and after (log-loss^2)."""

    picks: list[int]
    mse_now: float
    mse_after: float


def robust_plan(crit: Misspecified, chosen, cand, cost: np.ndarray, budget: float,
                rel_tol: float = 1e-3, exponents=(0.0, 1.0)) -> RobustPlan:
    """A plan for the whole budget under the bias-plus-variance criterion.

    For each cost exponent c of ``exponents``: from the runs ``chosen`` (observed and
    pending), repeatedly add the affordable candidate of ``cand`` with the largest
    drop of the mean target MSE (:meth:`Misspecified.mse`) per cost^c, until the
    budget is spent or no run lowers it by ``rel_tol`` of its value. The plan with the
    lowest final MSE wins: the gain-per-cost greedy and the plain-gain greedy together
    are the standard budgeted selection (either alone can be far from the best plan:
    per cost buys many cheap runs, plain gain one expensive run). Under
    misspecification a run far from the targets can *raise* the error of the plain fit
    (it pulls the fit toward a region where the law is wrong), so a plan may leave
    budget unspent.
    """
    best = None
    for c in exponents:
        plan = _greedy_plan(crit, chosen, cand, cost, budget, rel_tol, c)
        if best is None or plan.mse_after < best.mse_after:
            best = plan
    return best


def _greedy_plan(crit, chosen, cand, cost, budget, rel_tol, exponent) -> RobustPlan:
    chosen = list(chosen)
    free = [int(i) for i in cand]
    now = float(np.mean(crit.mse(chosen)))
    cur, picks, left = now, [], float(budget)
    scale = float(np.max(cost)) if len(cost) else 1.0
    while True:
        ok = np.array([i for i in free if cost[i] <= left], int)
        if not len(ok):
            break
        m = crit.mse_added(chosen, ok)
        gain = cur - m
        worth = gain > rel_tol * cur  # a run must lower the error to be bought at all
        if not worth.any():
            break
        k = int(np.argmax(np.where(worth, gain / (cost[ok] / scale) ** exponent, -np.inf)))
        i = int(ok[k])
        picks.append(i)
        chosen.append(i)
        free.remove(i)
        left -= float(cost[i])
        cur = float(m[k])
    return RobustPlan(picks, now, cur)


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
