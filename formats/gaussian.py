"""Exact Gaussian MSE of scalar grids and Monte Carlo for the rest.

The reference values checked against are those of Panferov et al. 2025,
"Unified Scaling Laws for Compressed Representations", GMSE reference values
section.

A scalar quantizer maps x ~ N(0, 1) to the nearest of the sorted levels
``c_0 < ... < c_{K-1}``; cell i is ``[l_i, r_i]`` between the midpoints of
neighbouring levels (the outer cells reach +-inf). With the Gaussian partial
moments on ``[l, r]``::

    P  = Phi(r) - Phi(l)
    M1 = phi(l) - phi(r)                    (= int x phi(x) dx)
    M2 = P + l phi(l) - r phi(r)            (= int x^2 phi(x) dx)

the expected squared error is ``sum_i M2_i - 2 c_i M1_i + c_i^2 P_i``. Everything
is vectorized over levels and over a batch of candidate scales, so the
MSE-optimal scale of a grid is a coarse log-spaced scan followed by a bounded
Brent refinement (scipy ``minimize_scalar``), a few milliseconds per grid.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from scipy import optimize, special

GMSE = namedtuple("GMSE", ["value", "stderr", "method"])
GMSE.__doc__ = "Gaussian MSE of a representation: value, standard error (0 if exact), method."

_SQRT2PI = math.sqrt(2.0 * math.pi)


def _phi(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / _SQRT2PI


def grid_mse(levels: np.ndarray, scales: np.ndarray | float) -> np.ndarray:
    """E[(x - Q_c(x))^2] for x ~ N(0,1), Q_c = nearest level of ``c * levels``.

    ``levels``: sorted unit levels (K,); ``scales``: one or more scales c (S,).
    Returns an array of S values (exact up to float64 rounding).
    """
    lv = np.asarray(levels, dtype=np.float64)[None, :]
    c = np.atleast_1d(np.asarray(scales, dtype=np.float64))[:, None]
    pts = c * lv                                              # (S, K) reconstruction points
    mids = 0.5 * (pts[:, 1:] + pts[:, :-1])
    inf = np.full((c.shape[0], 1), np.inf)
    lo = np.concatenate([-inf, mids], axis=1)
    hi = np.concatenate([mids, inf], axis=1)
    p = special.ndtr(hi) - special.ndtr(lo)
    phl, phh = _phi(lo), _phi(hi)
    m1 = phl - phh
    # l phi(l) -> 0 at +-inf; np.where avoids inf * 0
    with np.errstate(invalid="ignore"):
        lphl = np.where(np.isfinite(lo), lo * phl, 0.0)
        hphh = np.where(np.isfinite(hi), hi * phh, 0.0)
    m2 = p + lphl - hphh
    return np.sum(m2 - 2.0 * pts * m1 + pts * pts * p, axis=1)


def optimal_scale(levels: np.ndarray, lo: float, hi: float,
                  n_scan: int = 96) -> tuple[float, float]:
    """(c*, MSE(c*)): the MSE-optimal scale of a fixed grid in [lo, hi].

    A log-spaced scan finds the basin (fp grids are not unimodal in c: the
    binade structure makes small ripples); Brent's bounded method polishes it.
    """
    cs = np.geomspace(lo, hi, n_scan)
    vals = grid_mse(levels, cs)
    i = int(np.argmin(vals))
    a, b = cs[max(i - 1, 0)], cs[min(i + 1, n_scan - 1)]
    res = optimize.minimize_scalar(lambda c: float(grid_mse(levels, c)[0]), bounds=(a, b),
                                   method="bounded", options={"xatol": 1e-10})
    if res.fun <= vals[i]:
        return float(res.x), float(res.fun)
    return float(cs[i]), float(vals[i])


def uniform_levels(bits: int) -> np.ndarray:
    """Unit mid-rise grid ``linspace(-1, 1, 2^b)``: levels ``(2k - 1) / (2^b - 1)``."""
    return np.linspace(-1.0, 1.0, 2**bits)


def zero_levels(bits: int) -> np.ndarray:
    """Unit symmetric grid with a zero level (``intz{b}``): ``k / Q``, ``|k| <= Q = 2^(b-1) - 1``.

    2^b - 1 levels (the hardware int grid: int4 codes -7..7, the code -8 unused).
    """
    q = 2 ** (bits - 1) - 1
    return np.arange(-q, q + 1, dtype=np.float64) / q


def lloyd_levels(bits: int, tol: float = 1e-7, max_iter: int = 800,
                 relax: float = 1.8) -> np.ndarray:
    """Lloyd-Max levels of N(0,1) with 2^b levels (MSE-optimal scalar quantizer).

    Starts from the Panter-Dite companding points ``sqrt(3) Phi^-1((i + 1/2)/K)``
    (point density ~ phi^(1/3)), then alternates midpoints and exact centroids
    ``c_i = M1_i / P_i`` (over-relaxed: ``c += relax (centroid - c)``, which
    speeds up the slow global "stretch" mode) until the levels move less than
    ``tol`` or ``max_iter`` steps (lloyd8: MSE within 1e-4 relative of the limit).
    """
    k = 2**bits
    c = math.sqrt(3.0) * special.ndtri((np.arange(k) + 0.5) / k)
    for _ in range(max_iter):
        mids = 0.5 * (c[1:] + c[:-1])
        lo = np.concatenate([[-np.inf], mids])
        hi = np.concatenate([mids, [np.inf]])
        p = special.ndtr(hi) - special.ndtr(lo)
        new = (_phi(lo) - _phi(hi)) / p
        if np.max(np.abs(new - c)) < tol:
            return new
        c = c + relax * (new - c)
    return c


def sparse_gmse(s: float) -> float:
    """Magnitude pruning of a fraction s of N(0,1): ``s - 2 t phi(t)``, t = Phi^-1((1+s)/2)."""
    if s <= 0.0:
        return 0.0
    if s >= 1.0:
        return 1.0
    t = float(special.ndtri((1.0 + s) / 2.0))
    return s - 2.0 * t * float(_phi(np.asarray(t)))


# ----------------------------------------------------------------------------- Monte Carlo

MC_COLS = 1024  # default MC row length (rounded up to a multiple of a spec's group size, m, d)
MC_SEED = 0
MC_REL_SE = 1e-3        # default target: relative standard error
MC_MAX_ELEMENTS = 1 << 25  # cap (~33M samples): high-variance specs stop above 1e-3
MC_SLICE = 1 << 18      # samples drawn and projected at a time (1 MiB of float32)


def monte_carlo(project, rel_se: float = MC_REL_SE, seed: int = MC_SEED, cols: int = MC_COLS,
                max_elements: int = MC_MAX_ELEMENTS) -> GMSE:
    """GMSE of ``project(x) -> (x_hat, mask)`` on i.i.d. N(0,1) rows, by Monte Carlo.

    Rows of ``cols`` samples (Representation.gmse passes 1024, or the next
    multiple of the group size, so every ``@g{G}`` works) are drawn in batches
    from a seeded CPU generator (so the answer is deterministic); each row's
    MSE is one observation, and batches are added until the standard error of
    the mean is ``rel_se`` of the mean (or ``max_elements`` is reached). The
    first batch has 2^18 samples (at least one row); each next one is sized
    from the variance seen so far to just reach the target.
    Returns ``GMSE(mean, stderr, "mc")``.

    Speed: a batch is drawn and projected in slices of ``MC_SLICE`` samples
    (1 MiB of float32), so the working set stays in cache and no large tensor is
    allocated (page faults cost more than the arithmetic). Since ``project`` acts
    row by row and ``torch.randn`` on the CPU fills rows of a multiple of 16
    values from the same stream whether drawn at once or in slices, the samples
    and the row MSEs are those of one big draw (for other ``cols`` the draw is
    still deterministic, only sliced differently). The error is formed in float32
    (``x_hat - x``, relative rounding ~1e-7) and each row's sum of squares is
    accumulated in float64, as are the mean and the standard error.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    rows = max(1, (1 << 18) // cols)
    sub = max(1, MC_SLICE // cols)
    per_row: list[torch.Tensor] = []
    n = 0
    while True:
        for r0 in range(0, rows, sub):
            x = torch.randn(min(sub, rows - r0), cols, generator=gen)
            with torch.no_grad():
                x_hat, _ = project(x)
            err = (x_hat - x).pow_(2)
            per_row.append(err.sum(-1, dtype=torch.float64).div_(cols))
        n += rows * cols
        v = torch.cat(per_row)
        per_row = [v]
        mean = float(v.mean())
        se = float(v.std()) / math.sqrt(v.numel()) if v.numel() > 1 else float("inf")
        if mean == 0.0 or se <= rel_se * mean or n >= max_elements:
            return GMSE(mean, se if mean else 0.0, "mc")
        # rows still needed for the target (se ~ 1/sqrt(rows)), +10%, at most 4x so far
        need = v.numel() * ((se / (rel_se * mean)) ** 2 - 1.0) * 1.1
        rows = int(min(max(need, 16), 4 * v.numel(), (max_elements - n) // cols + 1))
