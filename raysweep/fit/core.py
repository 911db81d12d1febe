"""``fit_table``: fit a law to a results table, with bootstrap intervals and a hold-out.

Staged fitting (paper.md §2; more stable on small grids than one joint fit):

1. the dense law ``A N^-alpha + B D^-beta + E`` on the dense rows, multi-start
   from Epoch AI's grid;
2. the capacity parameters with the dense law frozen, multi-start from a small
   grid (every family starts from the same point);
3. a joint polish of everything from the stage-2 optimum.

A table without dense rows cannot separate the scale of rho from A (with one
family, ``A L^-alpha`` is one number): the law is then fitted jointly from a
coarse combined grid and the result is flagged ``not_identified``.

Bootstrap (``bootstrap=K``): runs are resampled with replacement *within each
representation label* (so every format stays in every replicate), each
replicate is refitted by one L-BFGS-B run warm-started at the point estimate,
on two worker processes; intervals are the 2.5/97.5 percentiles.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np
import pandas as pd

from raysweep.errors import FitError
from raysweep.fit.data import Design, clean_rows, make_design
from raysweep.fit.laws import BASE, Frantar, Law, make_law
from raysweep.fit.optimize import DELTA, Objective, multistart, polish

CI_LEVEL = 0.95
WIDE_RATIO = 4.0  # A, B, E, gamma: an interval wider than a factor 4 is "wide"
WIDE_REL = 1.0  # other parameters: an interval wider than the estimate itself is "wide"
EDGE_REL = 1e-4  # a parameter this close to a bound (fraction of its range) is at the bound


class FitStatus(str, enum.Enum):
    """Soft outcome of a fit; an estimate exists in every case (else FitError)."""

    OK = "ok"
    WIDE_INTERVALS = "wide_intervals"
    NOT_IDENTIFIED = "not_identified"


@dataclass(frozen=True)
class FitResult:
    """A fitted law: the contract's fields (``to_json``), plus what ``predict`` needs."""

    law: str
    n_points: int
    params: dict
    capacity: dict
    rho: dict
    ci: dict
    fit_error: dict
    holdout_error: dict
    status: FitStatus
    flags: dict  # parameter or group -> why it is not to be trusted
    notes: tuple
    theta: tuple
    model: Law = field(repr=False)
    samples: tuple = field(default=(), repr=False)  # bootstrap thetas
    share: dict = field(default_factory=dict)  # family -> family whose curve it shares

    def to_json(self) -> dict:
        """Exactly the fields of the ``raysweep fit --json`` contract."""
        return {"law": self.law, "n_points": self.n_points, "params": self.params,
                "capacity": self.capacity, "rho": self.rho, "ci": self.ci,
                "fit_error": self.fit_error, "holdout_error": self.holdout_error}

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Predicted losses for the rows of ``df`` (same columns as the fitted table)."""
        design = make_design(df, clean=False, share=self.share)
        return np.exp(self.model.predict(np.array(self.theta), design, jac=False)[0])


def fit_table(df: pd.DataFrame, law: str = "unified", bootstrap: int = 0,
              holdout: str | None = None, seed: int = 0, **opts) -> FitResult:
    """Fit ``law`` to a results table; see the module docstring for the method.

    Options: ``delta`` (Huber, default 1e-3), ``keep`` (L-BFGS-B runs per stage,
    default 8), ``workers`` (bootstrap processes, default 2), ``share`` (a dict
    mapping a family onto another whose capacity curve it shares, e.g.
    ``{"noise": "int"}``).
    """
    with _one_blas_thread():
        return _fit_table(df, law, bootstrap, holdout, seed, **opts)


def _one_blas_thread():
    """Limit BLAS to one thread: the matrices are tiny, and threaded BLAS on a shared
    2-core machine made one fit 10-20x slower (docs/decisions.md)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: scikit-learn brings it
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _fit_table(df, law, bootstrap, holdout, seed, **opts) -> FitResult:
    unknown = set(opts) - {"delta", "keep", "workers", "share"}
    if unknown:
        raise FitError(f"fit_table: unknown option(s) {sorted(unknown)}; allowed: delta, keep, "
                       "workers, share")
    share = dict(opts.get("share") or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in share.items()):
        raise FitError(f"fit_table: share must map family names to family names, got {share!r}")
    delta = float(opts.get("delta", DELTA))
    df, notes = clean_rows(df)
    held = _holdout_rows(df, holdout)
    train_df = df[~held]
    design = make_design(train_df, clean=False, share=share)
    model = make_law(law, design)
    used = model.rows_used(design)
    if not used.all():
        notes.append(f"{law} law: {int((~used).sum())} row(s) outside its scope left out")
        design = design.take(np.flatnonzero(used))
        model = make_law(law, design)
    _check_size(design, model)
    theta, flags = _staged_fit(model, design, delta, int(opts.get("keep", 8)))
    flags.update(_identification(model, design, theta))
    samples = ()
    ci: dict = {}
    if bootstrap > 0:
        samples = _bootstrap(model, design, theta, bootstrap, seed, delta,
                             int(opts.get("workers", 2)))
        ci = _intervals(model, design, theta, np.array(samples))
        for name, why in _wide(model, theta, ci).items():
            flags.setdefault(name, why)  # "at the bound" / "not identified" say more
    pred, _ = model.predict(theta, design, jac=False)
    hold_err = {"rmse_log": None, "rmse": None, "n": 0}
    if held.any():
        hd = make_design(df[held], clean=False, share=share)
        hold_err = _holdout_error(model, theta, hd, notes)
    status = (FitStatus.NOT_IDENTIFIED if any(v.startswith("not identified") for v in
                                                flags.values())
              else FitStatus.WIDE_INTERVALS if flags else FitStatus.OK)
    return FitResult(
        law=law, n_points=design.n, params=model.params(theta), capacity=model.capacity(theta),
        rho=_rho_table(model, theta, df, share), ci=ci,
        fit_error=_errors(design.log_loss, pred), holdout_error=hold_err, status=status,
        flags=flags, notes=tuple(notes) + design.notes, theta=tuple(map(float, theta)),
        model=model, samples=tuple(map(tuple, samples)), share=share,
    )


def _holdout_rows(df: pd.DataFrame, expr: str | None) -> np.ndarray:
    if not expr:
        return np.zeros(len(df), bool)
    try:
        picked = df.query(expr)
    except Exception as exc:  # pandas raises many types for a bad query
        raise FitError(f"--holdout {expr!r} is not a valid pandas query over the columns "
                       f"{sorted(map(str, df.columns))}: {exc}") from exc
    held = df.index.isin(picked.index)
    if held.all():
        raise FitError(f"--holdout {expr!r} selects every row; nothing is left to fit")
    return held


def _holdout_error(model: Law, theta: np.ndarray, hd: Design, notes: list) -> dict:
    """Errors on the held-out rows the law can predict (a decoupled law cannot predict a
    format it never saw; such rows are counted out with a note)."""
    ok = np.zeros(hd.n, bool)
    pred = np.full(hd.n, np.nan)
    for i in range(hd.n):
        try:
            pred[i] = model.predict(theta, hd.take(np.array([i])), jac=False)[0][0]
            ok[i] = True
        except FitError:
            pass
    if not ok.all():
        notes.append(f"{int((~ok).sum())} held-out row(s) not scored: the {model.name} law "
                     "cannot predict their format")
    if not ok.any():
        return {"rmse_log": None, "rmse": None, "n": 0}
    return dict(_errors(hd.log_loss[ok], pred[ok]), n=int(ok.sum()))


def _check_size(design: Design, model: Law) -> None:
    p = len(model.names)
    if design.n < p + 1:
        raise FitError(f"{model.name} law has {p} parameters but only {design.n} usable row(s); "
                       f"need at least {p + 1}")


def _errors(log_obs: np.ndarray, log_pred: np.ndarray) -> dict:
    r = log_obs - log_pred
    return {"rmse_log": float(np.sqrt(np.mean(r * r))),
            "rmse": float(np.sqrt(np.mean((np.exp(log_obs) - np.exp(log_pred)) ** 2)))}


def _staged_fit(model: Law, design: Design, delta: float, keep: int) -> tuple[np.ndarray, dict]:
    flags: dict = {}
    dense = design.dense
    n_cap = len(model.names) - len(BASE)
    enough_dense = dense.sum() >= 6 and len(np.unique(design.log_n[dense])) >= 2
    if type(model) is Law or (n_cap == 0 and not isinstance(model, Frantar)):
        # the dense law (chinchilla, or a law whose table has no compressed rows)
        theta, _ = multistart(Objective(model, design, delta), model.base_grid(), keep)
        return theta, flags
    if enough_dense:
        sub = design.take(np.flatnonzero(dense))
        dense_law = make_law("chinchilla", sub)
        base, _ = multistart(Objective(dense_law, sub, delta), dense_law.base_grid(), keep)
        if isinstance(model, Frantar):
            theta, _ = multistart(Objective(model, design, delta), model.from_dense(base), keep)
            return theta, flags
        obj = Objective(model, design, delta, base=np.r_[base, np.zeros(n_cap)],
                        free=np.r_[np.zeros(5, bool), np.ones(n_cap, bool)])
        cap, _ = multistart(obj, model.cap_grid(), keep)
        theta, _ = polish(Objective(model, design, delta), np.r_[base, cap])
        return theta, flags
    flags["rho scale"] = ("not identified: the table has too few dense rows (need 6 over 2+ "
                          "sizes), so the scale of rho trades off against A; fitted jointly")
    obj = Objective(model, design, delta)
    if isinstance(model, Frantar):
        starts = np.vstack([model.from_dense(s) for s in model.base_grid(fine=False)[::7]])
    else:
        base, cap = model.base_grid(fine=False), model.cap_grid()
        starts = np.array([np.r_[b, c] for b in base for c in cap])
    theta, _ = multistart(obj, starts, keep)
    return theta, flags


def _identification(model: Law, design: Design, theta: np.ndarray) -> dict:
    flags = {}
    if len(np.unique(design.log_n)) < 2:
        flags["alpha"] = "not identified: a single model size N (A, alpha and rho trade off)"
    if len(np.unique(design.log_d)) < 2:
        flags["beta"] = "not identified: a single token count D (B, beta and E trade off)"
    for group, why in model.identified_groups(design).items():
        flags[group] = "not identified: " + why
    for name, x, (lo, hi) in zip(model.names, theta, model.bounds):
        # L-BFGS-B with the Huber loss may stop a hair inside the bound (1e-5 of the range
        # seen on real tables), so "at the bound" is within 1e-4 of the range.
        if min(x - lo, hi - x) < EDGE_REL * max(1.0, hi - lo):
            flags.setdefault(reported_name(name), f"at the bound of its range [{lo}, {hi}]: "
                                                  "an edge solution, the data do not determine it")
    return flags


_RENAME = {"a": "A", "b": "B", "e": "E", "la_S": "a_S", "lc_S": "c_S", "la_D": "a_D"}


def reported_name(internal: str) -> str:
    """The reported name of an internal (log-space) parameter: ``e`` -> ``E``,
    ``int.logL`` -> ``int.L`` (the bound applies to ln L), ``logrho[x]`` -> ``rho[x]``."""
    fam, dot, name = internal.rpartition(".")
    name = _RENAME.get(name, name)
    if name.startswith("log_"):
        name = name[4:]
    elif name.startswith("log") and name != "log":
        name = name[3:]
    return f"{fam}{dot}{name}"


def _refit_chunk(args) -> list[np.ndarray]:
    """Worker: refit bootstrap replicates given as index arrays (module level: picklable)."""
    model, design, theta, delta, index_sets = args
    out = []
    with _one_blas_thread():
        for idx in index_sets:
            x, _ = polish(Objective(model, design.take(idx), delta), theta, maxiter=1500)
            out.append(x)
    return out


def _bootstrap(model, design, theta, k, seed, delta, workers) -> np.ndarray:
    rng = np.random.default_rng(seed)
    groups = {}
    for i, lab in enumerate(design.labels):
        groups.setdefault(lab, []).append(i)
    index_sets = [np.concatenate([rng.choice(g, size=len(g), replace=True)
                                  for g in groups.values()]) for _ in range(k)]
    workers = max(1, min(workers, os.cpu_count() or 1, k))
    chunks = [index_sets[i::workers] for i in range(workers)]
    tasks = [(model, design, theta, delta, c) for c in chunks]
    results = None
    if workers > 1:
        # fork is fast; spawn is safe when the caller holds threads (torch, ray loaded)
        method = "spawn" if {"torch", "ray"} & set(sys.modules) else "fork"
        try:
            with ProcessPoolExecutor(workers, mp_context=get_context(method)) as pool:
                results = list(pool.map(_refit_chunk, tasks))
        except (BrokenProcessPool, OSError):  # e.g. spawn from a REPL: no importable __main__
            results = None
    if results is None:
        results = [_refit_chunk(t) for t in tasks]
    out = np.empty((k, len(theta)))
    for w, res in enumerate(results):
        out[w::workers] = np.array(res)
    return out


def _flat(model: Law, theta: np.ndarray) -> dict[str, float]:
    """Reported parameters, capacity ones as ``family.NAME``."""
    out = dict(model.params(theta))
    for fam, ps in model.capacity(theta).items():
        out.update({f"{fam}.{k}": v for k, v in ps.items()})
    return out


def _intervals(model, design, theta, samples) -> dict:
    lo_q, hi_q = 50 * (1 - CI_LEVEL), 50 * (1 + CI_LEVEL)
    flat = [_flat(model, s) for s in samples]
    ci = {name: [float(np.percentile([f[name] for f in flat], lo_q)),
                 float(np.percentile([f[name] for f in flat], hi_q))] for name in flat[0]}
    labels = sorted(set(design.labels))
    first = {lab: design.labels.index(lab) for lab in labels}
    one = design.take(np.array([first[lab] for lab in labels]))
    rhos = np.array([model.rho(s, one) for s in samples])
    for j, lab in enumerate(labels):
        if not design.dense[first[lab]]:
            ci[f"rho[{lab}]"] = [float(np.percentile(rhos[:, j], lo_q)),
                                 float(np.percentile(rhos[:, j], hi_q))]
    return ci


SCALE_PARAMS = ("A", "B", "E", "a_S", "c_S", "a_D")


def _wide(model: Law, theta: np.ndarray, ci: dict) -> dict:
    flags = {}
    est = _flat(model, theta)
    for name, (lo, hi) in ci.items():
        if name.startswith("rho["):
            continue
        x = est[name]
        if name in SCALE_PARAMS or name.endswith(".L") or name.endswith(".B") or \
                name.startswith("gamma"):
            wide = lo <= 0 or hi / lo > WIDE_RATIO
        else:
            wide = (hi - lo) > WIDE_REL * abs(x)
        if wide:
            flags[name] = (f"wide interval [{lo:.3g}, {hi:.3g}] around {x:.3g}: "
                           "not resolved by this data")
    return flags


def _rho_table(model: Law, theta: np.ndarray, df: pd.DataFrame, share: dict) -> dict:
    """rho per distinct representation in the table (fitted and held-out rows)."""
    design = make_design(df, clean=False, share=share)
    used = model.rows_used(design)
    out = {}
    for i, lab in enumerate(design.labels):
        if lab in out or not used[i]:
            continue
        try:
            out[lab] = float(model.rho(theta, design.take(np.array([i])))[0])
        except FitError:  # e.g. a held-out label the decoupled law never saw
            out[lab] = None
    return {k: (None if v is None or not math.isfinite(v) else v) for k, v in out.items()}
