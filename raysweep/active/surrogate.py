"""The surrogate of active search: an ensemble of decoupled-law fits.

Active search needs, after every batch of finished runs, a *distribution* over
the loss of every candidate run and of every target, not one best fit: the
acquisition (:mod:`raysweep.active.acquisition`) scores a candidate by how much
observing it would shrink the spread of the targets. This module provides that
distribution as an ensemble of K fits of the decoupled law (the unified law)::

    log L(N, D, f) = LSE(a - alpha * (log N + r_f),  b - beta * log D,  e)

with one free log-capacity ``r_f = log rho_f`` per representation ``f`` and
``r = 0`` for the dense reference. The decoupled law is the most flexible law
the fit module offers (one rho per label), so the search makes no assumption
about how capacity depends on GMSE; a GMSE-based law can be swapped in through
the :class:`Surrogate` protocol (``raysweep.fit.fit_table`` once it exists).

How the ensemble is made: *randomized maximum likelihood* (RML; Oliver et al.
1996, the standard way to build an ensemble for an ensemble-Kalman update of a
nonlinear model). Member k minimizes

    sum_i ((m_i(theta) - y_i - sigma eps_ik) / sigma)^2
      + sum_j ((theta_j - mu_j - s_j eta_jk) / s_j)^2

i.e. the observations and the weak prior are perturbed by their own noise,
then fitted. For a linear model the members are exact posterior draws. Each
member is fitted from two starts (the central solution and a fresh draw from
the prior) and keeps the better: a member lands in another local optimum only
when that optimum explains its perturbed data better, which is how the
multi-modality of scaling-law fits (rho trading against alpha, A against E)
shows up in the spread instead of being hidden by one linearization.

The weak prior (alpha, beta ~ N(0.35, 0.2); rho ~ logN(log 0.6, 1); a, b, e
centred on the observed losses with sd 1.5) only matters while the data cannot
pin a direction, e.g. a format with no run yet: its target spread then comes
from the prior, which is exactly what makes that format worth a cheap run.

Coordinates are centred (log N and log D minus the pool's medians) so the
prior does not depend on the units of N and D.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from raysweep.fit.laws import lse_law

DENSE_PRIOR = {"alpha": (0.35, 0.2), "beta": (0.35, 0.2)}
RHO_PRIOR = (np.log(0.6), 1.0)  # log-rho mean and sd
SCALE_SD = 1.5  # sd of the prior on a, b, e (log-loss units)
BOUNDS_EXP = (0.02, 1.5)  # alpha, beta
BOUNDS_R = (-12.0, 0.7)  # log rho: rho in (6e-6, 2)


@dataclass(frozen=True)
class Posterior:
    """What one round of fitting knows about the query points (losses, not logs).

    ``members`` is (K, Q): member k's predicted loss at query q; ``central`` the
    unperturbed best fit; ``sigma`` the observation noise in log-loss units;
    ``rho`` the central fit's capacity per label; ``params`` its dense law.
    """

    central: np.ndarray
    members: np.ndarray
    sigma: float
    rho: dict[str, float]
    params: dict[str, float]
    theta: np.ndarray | None = None  # the central fit's parameters
    thetas: np.ndarray | None = None  # (K, n_theta): each member's parameters
    rho_members: dict[str, np.ndarray] | None = None  # label -> (K,) rho per member


class Surrogate(Protocol):
    """Anything that turns observed runs into a :class:`Posterior` on query points."""

    def posterior(self, obs: np.ndarray, y: np.ndarray, query: np.ndarray,
                  k: int, rng: np.random.Generator) -> Posterior:
        """``obs``/``query``: row indices into the pool; ``y``: observed losses."""


class DecoupledEnsemble:
    """RML ensemble of the decoupled law over a fixed set of rows.

    Rows are given once as arrays (``log_n``, ``log_d``, ``fmt`` index into
    ``labels``, ``ref`` = the index of the dense label or -1); observations and
    queries are then row indices, so nothing is re-parsed per round.
    """

    def __init__(self, log_n, log_d, fmt, labels, ref: int, noise: float = 0.01):
        self.log_n = np.asarray(log_n, float)
        self.log_d = np.asarray(log_d, float)
        self.fmt = np.asarray(fmt, int)
        self.labels = tuple(labels)
        self.ref = ref
        self.noise = float(noise)
        self.n0 = float(np.median(self.log_n))
        self.d0 = float(np.median(self.log_d))
        # Column of each label's free log-rho in theta (-1 for the reference).
        free = [i for i in range(len(self.labels)) if i != ref]
        self.col = np.full(len(self.labels), -1)
        self.col[free] = 5 + np.arange(len(free))
        self.n_theta = 5 + len(free)
        self._warm: np.ndarray | None = None

    # ------------------------------------------------------------ the model

    def _law(self, theta, rows):
        """The law at pool rows (:func:`raysweep.fit.laws.lse_law`, centred ln N and ln D).

        theta is ``(a, alpha, b, beta, e, ln rho of each free label...)``.
        """
        r = np.where(self.col[self.fmt[rows]] >= 0, theta[np.maximum(self.col[self.fmt[rows]], 0)],
                     0.0)
        x = self.log_n[rows] - self.n0 + r
        z = self.log_d[rows] - self.d0
        return lse_law(theta[0], theta[2], theta[4], theta[1], theta[3], x, z)

    def predict_log(self, theta, rows) -> np.ndarray:
        """log L at pool rows ``rows`` (log-sum-exp of the three terms)."""
        return self._law(theta, rows)[0]

    def _jac(self, theta, rows):
        j6 = self._law(theta, rows)[1]  # columns (a, b, e, alpha, beta, ln rho)
        J = np.zeros((len(rows), self.n_theta))
        J[:, :5] = j6[:, [0, 3, 1, 4, 2]]
        cols = self.col[self.fmt[rows]]
        has = cols >= 0
        J[np.flatnonzero(has), cols[has]] = j6[has, 5]
        return J

    # ------------------------------------------------------------ the prior

    def prior(self, y_log: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Prior mean and sd of theta, centred on the observed log-losses."""
        ybar = float(np.mean(y_log)) if len(y_log) else 1.0
        mu = np.empty(self.n_theta)
        sd = np.empty(self.n_theta)
        mu[:5] = [ybar - 1.5, DENSE_PRIOR["alpha"][0], ybar - 1.5, DENSE_PRIOR["beta"][0],
                  ybar - 0.4]
        sd[:5] = [SCALE_SD, DENSE_PRIOR["alpha"][1], SCALE_SD, DENSE_PRIOR["beta"][1], SCALE_SD]
        mu[5:], sd[5:] = RHO_PRIOR
        return mu, sd

    def _bounds(self):
        lo = np.full(self.n_theta, -np.inf)
        hi = np.full(self.n_theta, np.inf)
        lo[[1, 3]], hi[[1, 3]] = BOUNDS_EXP
        lo[5:], hi[5:] = BOUNDS_R
        return lo, hi

    def _fit(self, rows, y_log, sigma, mu, sd, starts) -> tuple[np.ndarray, float]:
        """Best of ``starts`` for the MAP problem; returns (theta, cost)."""
        from scipy.optimize import least_squares

        lo, hi = self._bounds()

        def resid(t):
            return np.concatenate([(self.predict_log(t, rows) - y_log) / sigma, (t - mu) / sd])

        def jac(t):
            return np.vstack([self._jac(t, rows) / sigma, np.diag(1.0 / sd)])

        best, best_cost = None, np.inf
        for s in starts:
            s = np.clip(s, lo + 1e-6, hi - 1e-6)
            res = least_squares(resid, s, jac=jac, bounds=(lo, hi), method="trf",
                                x_scale="jac", max_nfev=200)
            if res.cost < best_cost:
                best, best_cost = res.x, res.cost
        return best, best_cost

    # ------------------------------------------------------------ the ensemble

    def posterior(self, obs, y, query, k, rng) -> Posterior:
        """Central fit plus ``k`` RML members; predictions at ``query`` rows."""
        obs = np.asarray(obs, int)
        query = np.asarray(query, int)
        y_log = np.log(np.asarray(y, float))
        mu, sd = self.prior(y_log)
        starts = [mu] + [mu + sd * rng.standard_normal(self.n_theta) * 0.5 for _ in range(3)]
        if self._warm is not None:
            starts.append(self._warm)
        theta, _ = self._fit(obs, y_log, self.noise, mu, sd, starts)
        sigma = self._sigma(theta, obs, y_log)
        if sigma != self.noise:  # refit with the estimated noise level
            theta, _ = self._fit(obs, y_log, sigma, mu, sd, [theta])
        self._warm = theta
        members = np.empty((k, len(query)))
        thetas = np.empty((k, self.n_theta))
        for j in range(k):
            yj = y_log + sigma * rng.standard_normal(len(y_log))
            muj = mu + sd * rng.standard_normal(self.n_theta)
            fresh = muj + 0.5 * sd * rng.standard_normal(self.n_theta)
            tj, _ = self._fit(obs, yj, sigma, muj, sd, [theta, fresh])
            members[j] = np.exp(self.predict_log(tj, query))
            thetas[j] = tj
        rho_members = {lab: np.exp(thetas[:, self.col[i]])
                       for i, lab in enumerate(self.labels) if self.col[i] >= 0}
        return Posterior(np.exp(self.predict_log(theta, query)), members, sigma,
                         self.rho(theta), self.params(theta), theta, thetas, rho_members)

    def _sigma(self, theta, obs, y_log) -> float:
        """Noise in log-loss: the residual scale shrunk toward the configured ``noise``.

        With ``dof`` residual degrees of freedom the estimate is
        ``sqrt((dof * s^2 + 5 * noise^2) / (dof + 5))``: the configured value
        counts as five pseudo-observations, so a handful of runs cannot drive
        sigma to zero (which would make the ensemble overconfident).
        """
        dof = len(obs) - self.n_theta
        if dof <= 0:
            return self.noise
        s2 = float(np.sum((self.predict_log(theta, obs) - y_log) ** 2)) / dof
        return float(np.sqrt((dof * s2 + 5 * self.noise**2) / (dof + 5)))

    def rho(self, theta) -> dict[str, float]:
        """Capacity per label; 1 for the dense reference."""
        return {lab: (1.0 if self.col[i] < 0 else float(np.exp(theta[self.col[i]])))
                for i, lab in enumerate(self.labels)}

    def params(self, theta) -> dict[str, float]:
        """The dense law in the paper's units: L = A N^-alpha + B D^-beta + E."""
        a = theta[0] + theta[1] * self.n0
        b = theta[2] + theta[3] * self.d0
        return {"A": float(np.exp(a)), "alpha": float(theta[1]), "B": float(np.exp(b)),
                "beta": float(theta[3]), "E": float(np.exp(theta[4]))}
