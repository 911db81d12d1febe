"""``fit_table``: fit a law to a results table, with bootstrap intervals and a hold-out.

Staged fitting (after Epoch AI's procedure, Besiroglu et al. 2024; more stable on
small grids than one joint fit):

1. the dense law ``A N^-alpha + B D^-beta + E`` on the dense rows, multi-start
   from Epoch AI's grid;
2. the capacity parameters with the dense law frozen, multi-start from a small
   grid (every family starts from the same point);
3. a joint polish of everything from the stage-2 optimum.

A table without dense rows cannot separate the scale of rho from A (with one
family, ``A L^-alpha`` is one number): the law is then fitted jointly from a
coarse combined grid and the result is flagged ``not_identified``.

Bootstrap (``bootstrap=K``): *clusters* of runs are resampled with replacement,
a cluster being one (N, D) configuration (all formats and seeds of that
configuration move together), or one ``trunk_id`` when the table has that column
(the runs of one warmup-stable-decay trunk share their noise). Each replicate is a
full refit, the same staged multistart as the point estimate, on two worker
processes; the replicates are drawn from ``seed`` in the parent, so the result
does not depend on the number of workers. Intervals are *expanded* percentile
intervals (:func:`expanded_level`: the 2.5/97.5 percentiles widened for the
number of clusters, 1.1/98.9 for 12); :func:`bootstrap_diagnostics` gives the
bootstrap bias and flags skewed or multi-modal replicate distributions. Prediction intervals
(:meth:`FitResult.predict_interval`) add a resampled residual to each
replicate's prediction, so they include the run-to-run noise.
"""

from __future__ import annotations

import ast
import contextlib
import enum
import math
import operator
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np
import pandas as pd

from raysweep.errors import FitError, short_repr
from raysweep.fit.data import Design, check_share, clean_rows, make_design, table_families
from raysweep.fit.laws import BASE, Frantar, Law, make_law
from raysweep.fit.optimize import DELTA, Objective, multistart, polish

CI_LEVEL = 0.95
WIDE_RATIO = 4.0  # A, B, E, gamma: an interval wider than a factor 4 is "wide"
WIDE_REL = 1.0  # other parameters: an interval wider than the estimate itself is "wide"
EDGE_REL = 1e-4  # a parameter this close to a bound (fraction of its range) is at the bound
CLUSTER_COLUMN = "trunk_id"  # rows sharing a value share their noise: one bootstrap cluster
SKEW_LIMIT = 0.5  # |quantile skewness| of the replicates above this: "skewed"
BIMODAL_LIMIT = 0.62  # Sarle's bimodality coefficient above this (uniform: 5/9): "multimodal"
PI_DRAWS = 20  # residual draws per bootstrap replicate in a prediction interval
# Fewer replicates than this estimate the expanded interval's tails too narrow
# (calibration, docs/benchmarks.md: 40 replicates int.L 0.88, 200 replicates 0.96)
MIN_TAIL_REPLICATES = 200


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
    fixed: dict = field(default_factory=dict)  # reported name -> why it is held fixed
    free: dict = field(default_factory=dict)  # fixed-by-default names left free, and why
    ranges: dict = field(default_factory=dict)  # what the law was fitted on
    bootstrap: dict = field(default_factory=dict)  # clusters, bias, skewed, multimodal
    residuals: tuple = field(default=(), repr=False)  # log residuals, df-inflated

    def to_json(self) -> dict:
        """The ``raysweep fit --json`` contract's fields, then (extensions) ``fixed``,
        ``free``, ``ranges``, and with a bootstrap ``bootstrap`` (diagnostics) and
        ``prediction`` (replicates and residuals: what prediction intervals need)."""
        out = {"law": self.law, "n_points": self.n_points, "params": self.params,
               "capacity": self.capacity, "rho": self.rho, "ci": self.ci,
               "fit_error": self.fit_error, "holdout_error": self.holdout_error,
               "fixed": self.fixed, "free": self.free, "ranges": self.ranges}
        if self.samples:
            out["bootstrap"] = self.bootstrap
            out["prediction"] = {
                "residuals_log": list(self.residuals),
                "replicates": [{"params": self.model.params(t),
                                "capacity": self.model.capacity(t)}
                               for t in np.array(self.samples)]}
        return out

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Predicted losses for the rows of ``df`` (same columns as the fitted table)."""
        design = make_design(df, clean=False, share=self.share)
        return np.exp(self.model.predict(np.array(self.theta), design, jac=False)[0])

    def predict_interval(self, df: pd.DataFrame, level: float = CI_LEVEL,
                         seed: int = 0) -> dict:
        """Predicted loss of each row of ``df`` with a ``level`` prediction interval.

        The interval is that of ``exp(pred_b + r)``: ``pred_b`` the log-loss of
        bootstrap replicate b (the law's uncertainty), ``r`` one of the fit's log
        residuals drawn at random (:data:`PI_DRAWS` per replicate; the residuals are
        inflated by sqrt(n / (n - p)) for the parameters fitted), so it is meant to
        hold a new run, noise included. Returns ``{"loss", "lo", "hi"}`` arrays; a fit
        without a bootstrap is a FitError (there is no law uncertainty to draw from).
        """
        if not self.samples:
            raise FitError("prediction intervals need a bootstrap (bootstrap=K > 0, "
                           "raysweep fit --bootstrap K)")
        design = make_design(df, clean=False, share=self.share)
        point = self.model.predict(np.array(self.theta), design, jac=False)[0]
        reps = np.array([self.model.predict(t, design, jac=False)[0]
                         for t in np.array(self.samples)])
        res = np.asarray(self.residuals, float)
        rng = np.random.default_rng(seed)
        draws = reps[:, None, :] + rng.choice(res, size=(len(reps), PI_DRAWS, 1))
        draws = draws.reshape(-1, design.n)
        q = 50 * (1 - level), 50 * (1 + level)
        lo, hi = np.percentile(draws, q, axis=0)
        return {"loss": np.exp(point), "lo": np.exp(lo), "hi": np.exp(hi)}


def fit_table(df: pd.DataFrame, law: str = "unified", bootstrap: int = 0,
              holdout: str | None = None, seed: int = 0, **opts) -> FitResult:
    """Fit ``law`` to a results table; see the module docstring for the method.

    Options: ``delta`` (Huber, default 1e-3), ``keep`` (L-BFGS-B runs per stage,
    default 8), ``workers`` (bootstrap processes, default 2), ``share`` (a dict
    mapping a family onto another whose capacity curve it shares, e.g.
    ``{"noise": "int"}``), ``capacity_L`` (unified law: ``"auto"``, the default,
    fixes a family's L at 1 unless it has >= 4 GMSE levels including one above 6
    bits; ``"free"``; ``"fixed"``).
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
    unknown = set(opts) - {"delta", "keep", "workers", "share", "capacity_L"}
    if unknown:
        raise FitError(f"fit_table: unknown option(s) {sorted(unknown)}; allowed: delta, keep, "
                       "workers, share, capacity_L")
    capacity_L = opts.get("capacity_L", "auto")
    share = dict(opts.get("share") or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in share.items()):
        raise FitError(f"fit_table: share must map family names to family names, got {share!r}")
    delta = float(opts.get("delta", DELTA))
    df, notes = clean_rows(df)
    if share:
        check_share(share, table_families(df))
    held = _holdout_rows(df, holdout)
    train_df = df[~held]
    design = make_design(train_df, clean=False, share=share)
    clusters = cluster_ids(train_df)
    model = make_law(law, design, capacity_L)
    used = model.rows_used(design)
    if not used.all():
        notes.append(f"{law} law: {int((~used).sum())} row(s) outside its scope left out")
        design = design.take(np.flatnonzero(used))
        clusters = clusters[used]
        model = make_law(law, design, capacity_L)
    _check_size(design, model)
    keep = int(opts.get("keep", 8))
    theta, flags = _staged_fit(model, design, delta, keep)
    flags.update(_identification(model, design, theta))
    samples = np.zeros((0, len(theta)))
    ci: dict = {}
    boot: dict = {}
    if bootstrap > 0:
        samples = _bootstrap(model, design, theta, bootstrap, seed, delta,
                             int(opts.get("workers", 2)), clusters=clusters, keep=keep)
        n_clusters = int(len(np.unique(clusters)))
        ci = _intervals(model, design, theta, samples, n_clusters)
        for name in model.fixed_why:
            ci.pop(name, None)
        for name, why in _wide(model, theta, ci).items():
            flags.setdefault(name, why)  # "at the bound" / "not identified" say more
        if bootstrap < MIN_TAIL_REPLICATES:
            tail = 50 * (1 - expanded_level(CI_LEVEL, n_clusters))
            notes.append(f"{bootstrap} bootstrap replicates: the interval ends (the {tail:.1f}% "
                         f"and {100 - tail:.1f}% percentiles) fall among the few most extreme "
                         "replicates and are too narrow on average; use "
                         f"{MIN_TAIL_REPLICATES}+ for intervals that cover (docs/fit.md)")
        boot = bootstrap_diagnostics(model, design, theta, samples)
        boot.update(replicates=int(bootstrap), clusters=n_clusters,
                    cluster_by=(CLUSTER_COLUMN if any(c.startswith("trunk:") for c in clusters)
                                else "(n_params, tokens)"), method="full staged refit",
                    interval="expanded percentile",
                    percentile_level=round(expanded_level(CI_LEVEL, n_clusters), 4))
    pred, _ = model.predict(theta, design, jac=False)
    resid = _inflated_residuals(design.log_loss - pred, len(model.names) - len(model.fixed))
    hold_err = {"rmse_log": None, "rmse": None, "n": 0}
    if held.any():
        hd = make_design(df[held], clean=False, share=share)
        hold_err = _holdout_error(model, theta, hd, notes)
    status = (FitStatus.NOT_IDENTIFIED if any(v.startswith("not identified") for v in
                                                flags.values())
              else FitStatus.WIDE_INTERVALS if flags else FitStatus.OK)
    res = FitResult(
        law=law, n_points=design.n, params=model.params(theta), capacity=model.capacity(theta),
        rho=_rho_table(model, theta, df, share), ci=ci,
        fit_error=_errors(design.log_loss, pred), holdout_error=hold_err, status=status,
        flags=flags, notes=tuple(notes) + design.notes, theta=tuple(map(float, theta)),
        model=model, samples=tuple(map(tuple, samples)), share=share,
        fixed=dict(model.fixed_why), free=dict(model.free_why),
        ranges=fitted_ranges(design), bootstrap=boot, residuals=tuple(map(float, resid)),
    )
    if held.any() and res.samples:
        _holdout_coverage(res, df[held], hold_err)
    return res


def cluster_ids(df: pd.DataFrame) -> np.ndarray:
    """Bootstrap cluster of each row: its ``trunk_id`` when the table has that column
    (an empty or missing value, a plain run: the row's own (N, D) configuration), else
    its (N, D)."""
    nd = [f"{n!r}/{t!r}" for n, t in zip(df["n_params"], df["tokens"])]
    if CLUSTER_COLUMN in df.columns:
        return np.array([f"nd:{k}" if pd.isna(t) or str(t).strip() == "" else f"trunk:{t}"
                         for t, k in zip(df[CLUSTER_COLUMN], nd)])
    return np.array(nd)


def fitted_ranges(design: Design) -> dict:
    """What the law was fitted on: [min, max] of n_params and tokens, and per family the
    GMSE range of its parts (``raysweep predict --law`` flags extrapolation beyond it)."""
    fams: dict = {}
    for parts in design.row_parts:
        for p in parts:
            lo, hi = fams.get(p.family, (p.gmse, p.gmse))
            fams[p.family] = (min(lo, p.gmse), max(hi, p.gmse))
    n, d = np.exp(design.log_n), np.exp(design.log_d)
    return {"n_params": [float(n.min()), float(n.max())],
            "tokens": [float(d.min()), float(d.max())],
            "gmse": {f: [float(lo), float(hi)] for f, (lo, hi) in sorted(fams.items())}}


def _inflated_residuals(r: np.ndarray, p: int) -> np.ndarray:
    """Log residuals scaled by sqrt(n / (n - p)): a fitted residual is smaller than the
    noise by about that factor (p parameters absorb part of it)."""
    n = len(r)
    return r * math.sqrt(n / max(n - p, 1))


def _holdout_coverage(res: FitResult, held_df: pd.DataFrame, hold_err: dict) -> None:
    """Held-out runs inside their 95% prediction interval (``in_pi95``, ``pi95_coverage``)."""
    ok = []
    for i in range(len(held_df)):
        try:
            pi = res.predict_interval(held_df.iloc[[i]])
        except FitError:  # a format the law cannot predict (counted out in holdout_error)
            continue
        y = float(held_df["loss"].iloc[i])
        ok.append(bool(pi["lo"][0] <= y <= pi["hi"][0]))
    hold_err["in_pi95"] = int(sum(ok))
    hold_err["pi95_coverage"] = float(np.mean(ok)) if ok else None


def _holdout_rows(df: pd.DataFrame, expr: str | None) -> np.ndarray:
    if not expr:
        return np.zeros(len(df), bool)
    held = holdout_mask(df, expr)
    if not held.any():
        raise FitError(f"--holdout {_q(expr)} selects no row; nothing would be scored "
                       f"(columns: {sorted(map(str, df.columns))})")
    if held.all():
        raise FitError(f"--holdout {_q(expr)} selects every row; nothing is left to fit")
    return held


# --holdout EXPR: a small safe parser (never eval, df.query or df.eval: pandas' query
# resolves ``@`` names and calls, so ``@pd.io.common.os.system('...')`` ran a command).
HOLDOUT_FORMS = ("COLUMN OP LITERAL or LITERAL OP COLUMN with OP one of == != < <= > >= "
                 "(chains such as 1e7 < n_params <= 1e8 too), COLUMN in [LITERAL, ...], "
                 "COLUMN not in [LITERAL, ...], a bool column alone, combined with and, or, "
                 "not (or &, |, ~) and parentheses; LITERAL: a number (1e18, 2.5e8, -3) or a "
                 "quoted string; a column name that is not an identifier in `backticks`")
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
        ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_FLIP = {ast.Eq: ast.Eq, ast.NotEq: ast.NotEq, ast.Lt: ast.Gt, ast.LtE: ast.GtE,
         ast.Gt: ast.Lt, ast.GtE: ast.LtE}
_COL = "__raysweep_col{}__"
_MAX_DEPTH = 64


def _q(expr) -> str:
    return short_repr(expr, 200)


class _HoldoutSyntax(Exception):
    """A form outside the grammar (turned into a FitError naming the expression)."""


def holdout_mask(df: pd.DataFrame, expr: str) -> np.ndarray:
    """Boolean mask of the rows ``expr`` selects; see :data:`HOLDOUT_FORMS` for the grammar.

    ``&``, ``|`` and ``~`` (outside quotes) are read as ``and``, ``or`` and ``not``
    with their precedence (as pandas' query does), so ``n_params > 1e8 & tokens < 1e9``
    means what it says. The expression is parsed with :mod:`ast` and only a whitelist
    of node types is evaluated, column by column, against literals.
    """
    if not isinstance(expr, str):
        raise FitError(f"--holdout {_q(expr)}: expected a string; allowed: {HOLDOUT_FORMS}")
    try:
        text, names = _rewrite_holdout(expr)
        tree = ast.parse(text.strip(), mode="eval")
        mask = _HoldoutEval(df, names, expr).mask(tree.body, 0)
    except FitError:
        raise
    except (_HoldoutSyntax, SyntaxError, ValueError, TypeError, RecursionError,
            MemoryError) as exc:
        why = exc.msg if isinstance(exc, SyntaxError) else str(exc) or type(exc).__name__
        raise FitError(f"--holdout {_q(expr)} is not a valid expression ({why}); allowed: "
                       f"{HOLDOUT_FORMS}") from None
    return np.asarray(mask, dtype=bool)


def _rewrite_holdout(expr: str) -> tuple[str, dict]:
    """Outside quoted strings: ``&``/``|``/``~`` -> ``and``/``or``/``not``, and each
    `` `column name` `` -> a placeholder identifier (a column name, never code)."""
    out, names, i, n = [], {}, 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "'\"":
            q = c * 3 if expr.startswith(c * 3, i) else c
            j = i + len(q)
            while j < n and not expr.startswith(q, j):
                j += 2 if expr[j] == "\\" else 1
            if j >= n:
                raise _HoldoutSyntax("unterminated string")
            out.append(expr[i:j + len(q)])
            i = j + len(q)
        elif c == "`":
            j = expr.find("`", i + 1)
            if j < 0:
                raise _HoldoutSyntax("unterminated `column name`")
            key = _COL.format(len(names))
            names[key] = expr[i + 1:j]
            out.append(f" {key} ")
            i = j + 1
        elif c == "@":
            raise _HoldoutSyntax("'@' names are not allowed: only the table's columns")
        else:
            out.append({"&": " and ", "|": " or ", "~": " not "}.get(c, c))
            i += 1
    return "".join(out), names


class _HoldoutEval:
    def __init__(self, df: pd.DataFrame, quoted: dict, expr: str):
        self.df, self.quoted, self.expr = df, quoted, expr

    def mask(self, node: ast.AST, depth: int) -> np.ndarray:
        if depth > _MAX_DEPTH:
            raise _HoldoutSyntax(f"nested deeper than {_MAX_DEPTH}")
        if isinstance(node, ast.BoolOp):
            parts = [self.mask(v, depth + 1) for v in node.values]
            how = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            return how.reduce(parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ~self.mask(node.operand, depth + 1)
        if isinstance(node, ast.Compare):
            out = np.ones(len(self.df), bool)
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                out &= self._compare(left, op, right)
                left = right
            return out
        col = self._column(node)
        if col is not None:
            s = self.df[col]
            if not pd.api.types.is_bool_dtype(s):
                raise _HoldoutSyntax(f"column {col!r} alone is not a condition (it is not "
                                     "a bool column): compare it with a literal")
            return s.fillna(False).to_numpy(dtype=bool)
        raise _HoldoutSyntax(f"{_describe(node)} is not a comparison")

    def _column(self, node: ast.AST) -> str | None:
        """The column a Name node names (None if the node is not a Name)."""
        if not isinstance(node, ast.Name):
            return None
        name = self.quoted.get(node.id, node.id)
        if name not in self.df.columns:
            raise FitError(f"--holdout {_q(self.expr)}: unknown column {name!r}; allowed: the "
                           f"table's columns "
                           f"{sorted(map(str, self.df.columns))} (quote a string value: "
                           "format == 'w3a3')")
        return name

    def _compare(self, a: ast.AST, op: ast.cmpop, b: ast.AST) -> np.ndarray:
        ca, cb = self._column(a), self._column(b)
        if ca is not None and cb is not None:
            raise _HoldoutSyntax(f"{ca!r} compared with {cb!r}: compare a column with a "
                                 "literal")
        if ca is None and cb is None:
            for side in (a, b):
                try:
                    _literal(side, lists=True)
                except _HoldoutSyntax:  # name the call, attribute, arithmetic...
                    raise _HoldoutSyntax(f"{_describe(side)} is neither a column nor a "
                                         "literal") from None
            raise _HoldoutSyntax("a comparison needs a column on one side")
        if isinstance(op, (ast.In, ast.NotIn)):
            if ca is None:
                raise _HoldoutSyntax("'in' needs the column on the left: COLUMN in [...]")
            values = _literal(b, lists=True)
            if not isinstance(values, list):
                raise _HoldoutSyntax("'in' needs a list of literals: COLUMN in [...]")
            got = self.df[ca].isin(values).to_numpy(dtype=bool)
            return ~got if isinstance(op, ast.NotIn) else got
        if type(op) not in _CMP:
            raise _HoldoutSyntax(f"operator {type(op).__name__} is not allowed")
        col, lit = (ca, b) if ca is not None else (cb, a)
        if ca is None:
            op = _FLIP[type(op)]()
        value = _literal(lit, lists=True)
        s = self.df[col]
        if isinstance(value, list):  # pandas: COLUMN == [..] is "in"
            if not isinstance(op, (ast.Eq, ast.NotEq)):
                raise _HoldoutSyntax("a list compares with == or != (or in, not in) only")
            got = s.isin(value).to_numpy(dtype=bool)
            return ~got if isinstance(op, ast.NotEq) else got
        try:
            res = _CMP[type(op)](s, value)
        except TypeError as exc:
            raise FitError(f"--holdout {_q(self.expr)}: column {col!r} ({s.dtype}) cannot be "
                           f"compared with "
                           f"{value!r}: {exc}") from None
        return res.fillna(False).to_numpy(dtype=bool)


def _literal(node: ast.AST, lists: bool = False):
    """A number, string or bool constant (a sign allowed on numbers), or a list/tuple
    of those when ``lists``."""
    if lists and isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal(node.operand)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _HoldoutSyntax("a sign applies to a number only")
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float, str)):
        return node.value
    raise _HoldoutSyntax(f"{_describe(node)} is not a literal")


def _describe(node: ast.AST) -> str:
    kind = {ast.Call: "a call", ast.Attribute: "an attribute access", ast.Subscript:
            "a subscript", ast.BinOp: "arithmetic", ast.Lambda: "a lambda",
            ast.JoinedStr: "an f-string"}.get(type(node), type(node).__name__)
    try:
        return f"{kind} ({short_repr(ast.unparse(node), 60)[1:-1]})"
    except Exception:  # noqa: BLE001 - only for the message
        return kind


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
    for i, (name, x, (lo, hi)) in enumerate(zip(model.names, theta, model.bounds)):
        if i in model.fixed:
            continue
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
    """Worker: full staged refits of bootstrap replicates given as index arrays (module
    level, plain arguments: picklable, so it runs under spawn as under fork)."""
    model, design, delta, keep, index_sets = args
    out = []
    with _one_blas_thread():
        for idx in index_sets:
            x, _ = _staged_fit(model, design.take(idx), delta, keep)
            out.append(x)
    return out


def resample_clusters(clusters: np.ndarray, k: int, seed: int,
                      labels: tuple | None = None) -> list[np.ndarray]:
    """``k`` bootstrap index sets: clusters drawn with replacement, every row of a drawn
    cluster taken. A draw that loses a representation label present in ``labels`` is
    redrawn (up to 20 times): a replicate without a format cannot refit its rho."""
    rng = np.random.default_rng(seed)
    keys, inv = np.unique(clusters, return_inverse=True)
    members = [np.flatnonzero(inv == c) for c in range(len(keys))]
    want = set(labels) if labels is not None else set()
    out = []
    for _ in range(k):
        for _try in range(20):
            pick = rng.integers(0, len(keys), size=len(keys))
            idx = np.concatenate([members[c] for c in pick])
            if not want or {labels[i] for i in idx} >= want:
                break
        out.append(idx)
    return out


def _bootstrap(model, design, theta, k, seed, delta, workers, clusters=None,
               keep: int = 8) -> np.ndarray:
    """``k`` full refits on cluster resamples (clusters: one id per row of ``design``;
    default: its (N, D) configurations); ``theta`` is unused by the refits (kept for the
    callers' signature)."""
    if clusters is None:
        clusters = np.array([f"{a!r}/{b!r}" for a, b in zip(design.log_n, design.log_d)])
    index_sets = resample_clusters(np.asarray(clusters), k, seed, design.labels)
    workers = max(1, min(workers, os.cpu_count() or 1, k))
    chunks = [index_sets[i::workers] for i in range(workers)]
    tasks = [(model, design, delta, keep, c) for c in chunks]
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


def _quantile_skew(x: np.ndarray) -> float:
    """Quantile skewness of the central 95%: (q97.5 + q2.5 - 2 median) / (q97.5 - q2.5),
    in [-1, 1], 0 for a symmetric distribution (Bowley's measure on wider quantiles)."""
    lo, med, hi = np.percentile(x, [2.5, 50, 97.5])
    return 0.0 if hi - lo <= 1e-12 * max(1.0, abs(med)) else float((hi + lo - 2 * med) / (hi - lo))


def _bimodality(x: np.ndarray) -> float:
    """Sarle's bimodality coefficient (g1^2 + 1) / (g2 + 3 (n-1)^2 / ((n-2)(n-3))), with
    g1, g2 the sample skewness and excess kurtosis: 1/3 for a normal, 5/9 for a uniform;
    a two-peaked sample goes above."""
    n = len(x)
    s = x.std()
    if n < 4 or s <= 1e-12 * max(1.0, abs(x.mean())):
        return 0.0
    z = (x - x.mean()) / s
    g1, g2 = float(np.mean(z ** 3)), float(np.mean(z ** 4) - 3.0)
    return (g1 * g1 + 1.0) / (g2 + 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


def bootstrap_diagnostics(model: Law, design: Design, theta: np.ndarray,
                          samples: np.ndarray) -> dict:
    """Bootstrap bias (replicate mean minus estimate) of every reported parameter and rho,
    and the ones whose replicate distribution is ``skewed`` (|quantile skewness| >
    :data:`SKEW_LIMIT`) or ``multimodal`` (bimodality coefficient > :data:`BIMODAL_LIMIT`);
    fixed parameters are left out. Needs 10 replicates or more for the two tests."""
    est = {**_flat(model, theta), **_rho_samples(model, design, theta[None, :])[1]}
    flat, rhos = [_flat(model, s) for s in samples], _rho_samples(model, design, samples)[0]
    bias, skewed, multimodal = {}, {}, {}
    for name, x0 in est.items():
        if name in model.fixed_why:
            continue
        x = (np.array([f[name] for f in flat]) if name in flat[0]
             else np.asarray(rhos[name], float))
        bias[name] = float(np.mean(x) - x0)
        if len(x) < 10:
            continue
        q, bc = _quantile_skew(x), _bimodality(x)
        if abs(q) > SKEW_LIMIT:
            skewed[name] = round(q, 3)
        if bc > BIMODAL_LIMIT:
            multimodal[name] = round(bc, 3)
    return {"bias": bias, "skewed": skewed, "multimodal": multimodal,
            "skew_limit": SKEW_LIMIT, "bimodal_limit": BIMODAL_LIMIT}


def _rho_samples(model: Law, design: Design, samples: np.ndarray) -> tuple[dict, dict]:
    """rho of each compressed label of ``design`` per sample: ({"rho[lab]": array}, the
    first sample's values as {"rho[lab]": float})."""
    labels = sorted(set(design.labels))
    first = {lab: design.labels.index(lab) for lab in labels}
    one = design.take(np.array([first[lab] for lab in labels]))
    rhos = np.array([model.rho(s, one) for s in samples])
    out = {f"rho[{lab}]": rhos[:, j] for j, lab in enumerate(labels)
           if not design.dense[first[lab]]}
    return out, {k: float(v[0]) for k, v in out.items()}


def _flat(model: Law, theta: np.ndarray) -> dict[str, float]:
    """Reported parameters, capacity ones as ``family.NAME``."""
    out = dict(model.params(theta))
    for fam, ps in model.capacity(theta).items():
        out.update({f"{fam}.{k}": v for k, v in ps.items()})
    return out


def expanded_level(level: float, clusters: int) -> float:
    """The percentile level of the *expanded* percentile interval (Hesterberg 2015):
    the plain percentile interval is too narrow with few independent units (a cluster
    bootstrap over G (N, D) configurations has G of them), by about the ratio of the
    normal quantile to ``sqrt(G / (G - 1)) t_{G-1}``; the expanded interval uses the
    level whose normal quantile is that product. For 12 clusters 0.95 becomes 0.978,
    for 50 clusters 0.966; it tends to ``level`` as G grows."""
    from scipy.stats import norm, t

    if clusters < 3:
        return level
    z = math.sqrt(clusters / (clusters - 1)) * t.ppf(0.5 + level / 2, clusters - 1)
    return float(1 - 2 * norm.sf(z))


def _intervals(model, design, theta, samples, clusters: int = 0) -> dict:
    """95% expanded percentile intervals (:func:`expanded_level` for ``clusters``
    resampled units; 0: the plain percentile interval) of every reported parameter and
    of each format's rho."""
    level = expanded_level(CI_LEVEL, clusters) if clusters else CI_LEVEL
    lo_q, hi_q = 50 * (1 - level), 50 * (1 + level)
    samples = np.asarray(samples)
    flat = [_flat(model, s) for s in samples]
    ci = {name: [float(np.percentile([f[name] for f in flat], lo_q)),
                 float(np.percentile([f[name] for f in flat], hi_q))] for name in flat[0]}
    for name, x in _rho_samples(model, design, samples)[0].items():
        ci[name] = [float(np.percentile(x, lo_q)), float(np.percentile(x, hi_q))]
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
