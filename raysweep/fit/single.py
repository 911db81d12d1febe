"""Single-run capacity: rho of one compressed run from its dense twin.

(Panferov et al. 2025, "Unified Scaling Laws for Compressed Representations", fitting.)

With the dense law ``L(N, D) = A N^-alpha + B D^-beta + E`` fitted, a compressed
run and a dense run at the *same* (N, D) differ only in the first term, since
rho multiplies N alone and D is never rescaled::

    L - L_dense = A (N rho)^-alpha - A N^-alpha = A N^-alpha (rho^-alpha - 1)

so ``rho = (1 + N^alpha / A * (L - L_dense))^(-1/alpha)``. B, beta and E cancel:
only A and alpha of the fitted law are needed. This gives one rho per run,
without assuming any capacity curve, which is a check on the unified law's
rho(GMSE) and on the run-to-run noise (two seeds of one format give two rhos).

A compressed run *better* than its dense twin (``L < L_dense``, within noise)
gives rho > 1; a gap so large that ``1 + N^alpha/A (L - L_dense) <= 0`` cannot
happen under the law (it would need rho = inf) and gives NaN.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from raysweep.errors import FitError

SINGLE_RUN_COLUMNS = ("label", "n_params", "tokens", "loss", "dense_loss", "rho")


def single_run_rho(a: float, alpha: float, n_params, loss, dense_loss):
    """``rho = (1 + N^alpha / A * (L - L_dense))^(-1/alpha)``; NaN where the base is <= 0.

    Works on scalars and numpy arrays alike; ``a`` and ``alpha`` come from a
    fitted dense (or unified) law.
    """
    if not (a > 0 and alpha > 0 and math.isfinite(a) and math.isfinite(alpha)):
        raise FitError(f"single_run_rho: A and alpha must be positive and finite, got "
                       f"A={a!r}, alpha={alpha!r}")
    n = np.asarray(n_params, dtype=float)
    base = 1.0 + n ** alpha / a * (np.asarray(loss, dtype=float) -
                                   np.asarray(dense_loss, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(base > 0, np.abs(base) ** (-1.0 / alpha), np.nan)
    return float(rho) if rho.ndim == 0 else rho


def single_run_rho_table(fit, df: pd.DataFrame) -> pd.DataFrame:
    """Per compressed row of ``df``: rho from the dense row(s) at the same n_params and tokens.

    ``fit`` is a :class:`~raysweep.fit.FitResult` (or anything with ``params``
    holding ``A`` and ``alpha``). Rows with status != ok are left out; several
    dense seeds at one (N, D) are averaged into ``dense_loss``. Compressed rows
    with no dense twin are left out. Columns: :data:`SINGLE_RUN_COLUMNS`, in table order.
    """
    from raysweep.fit.data import clean_rows, make_design

    params = getattr(fit, "params", fit)
    if "A" not in params or "alpha" not in params:
        raise FitError(f"single_run_rho_table: the fit has no dense-law parameters A and alpha "
                       f"(params: {sorted(params)})")
    df, _ = clean_rows(df)
    design = make_design(df, clean=False)
    n = df["n_params"].to_numpy(dtype=float)
    t = df["tokens"].to_numpy(dtype=float)
    loss = df["loss"].to_numpy(dtype=float)
    dense = design.dense
    twins: dict[tuple[float, float], list[float]] = {}
    for key_n, key_t, value in zip(n[dense], t[dense], loss[dense]):
        twins.setdefault((key_n, key_t), []).append(value)
    keep = [i for i in np.flatnonzero(~dense) if (n[i], t[i]) in twins]
    if not keep:
        return pd.DataFrame({c: [] for c in SINGLE_RUN_COLUMNS})
    idx = np.array(keep, dtype=int)
    dense_loss = np.array([np.mean(twins[(n[i], t[i])]) for i in idx])
    rho = single_run_rho(float(params["A"]), float(params["alpha"]), n[idx], loss[idx],
                         dense_loss)
    return pd.DataFrame({"label": [design.labels[i] for i in idx], "n_params": n[idx],
                         "tokens": t[idx], "loss": loss[idx], "dense_loss": dense_loss,
                         "rho": np.atleast_1d(rho)})


def single_run_summary(table: pd.DataFrame) -> dict:
    """Per label: number of runs, mean, min and max single-run rho (NaN rows skipped)."""
    out = {}
    for lab, g in table.groupby("label", sort=False):
        r = g["rho"].to_numpy(dtype=float)
        r = r[np.isfinite(r)]
        out[str(lab)] = {"runs": int(len(g)), "mean": float(r.mean()) if len(r) else None,
                         "min": float(r.min()) if len(r) else None,
                         "max": float(r.max()) if len(r) else None}
    return out
