"""Active search options: the ``search:`` block of a study, validated once.

``search: {strategy: active, ...}`` in a study replaces the full grid by a
sequence of batches chosen one at a time (docs/active.md). The parts:

- :mod:`raysweep.active.surrogate`: the surrogate, an ensemble of decoupled-law fits
  (randomized maximum likelihood, multi-start), giving a spread of predicted
  losses at every candidate and target;
- :mod:`raysweep.active.acquisition`: the pool, the initial design and the
  acquisition (expected reduction of target variance per FLOP, ensemble-Kalman
  form, pending runs handled as "kriging believers");
- :mod:`raysweep.active.sampler`: the acquisition as an Optuna sampler over a
  categorical ``candidate`` parameter, on a persistent RDB study (SQLite in
  the output directory by default) so an interrupted search resumes;
- :mod:`raysweep.active.searcher`: the Ray Tune ``Searcher`` the sweep plugs in.

This module holds the option parsing (the sweep's entry point is
:func:`raysweep.active.searcher.make_searcher`); it imports neither optuna nor
ray, so ``raysweep plan`` validates a study's search options cheaply.

Options (``study.search``; all optional except that at most one budget is given):

=================  ===========================================================
``budget_flops``   FLOPs (6 N D summed over runs) to spend; or
``budget_fraction`` fraction of the full grid's FLOPs (default 0.1)
``batch``          runs in flight at once (default 4)
``target``         ``largest`` (default: every representation at the grid's
                   largest (N, D)) or ``{n_params: N, tokens: D}`` or a list;
                   or ``rho``: the capacity of every non-dense representation
``cost_exponent``  ``design: greedy`` only: candidates are scored per
                   (6 N D)^cost_exponent (default 1); the plan uses true costs
``seed``           seed of the ensemble's randomness (default 0)
``storage``        SQLAlchemy URL of the Optuna study (default: SQLite file
                   ``active.db`` in the study's output directory)
``ensemble``       ensemble size K (default 48, at least 4)
``noise``          prior noise of log-loss (default 0.01)
``target_std``     stop when every target's sd (loss units; rho units for
                   ``target: rho``) is below this
                   (default 0: only the budget stops the search)
``max_failures``   failures after which a candidate is never proposed again
                   (default 1)
``design``         ``plan`` (default): each round plans the remaining budget
                   under the expected error of ``raysweep fit`` at the targets,
                   noise *and* the law's misspecification included, and runs
                   the plan's first picks (:func:`raysweep.active.planner.robust_plan`);
                   ``vopt``: the relaxed budgeted V-optimal design (Frank-Wolfe,
                   the law taken as exact); ``greedy``: candidates scored one
                   by one per (6 N D)^cost_exponent (the earlier acquisition)
``discrepancy``    ``design: plan``: sd of the law's misspecification in
                   log-loss (default 0.02; 0 = the law is exact)
``discrepancy_scale`` ``design: plan``: its correlation length in e-folds of N
                   and of D (default 2); both chosen on the Chinchilla and
                   Farseer replays (docs/active.md, "Method")
=================  ===========================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from raysweep.errors import StudyError, bad_value, check_number
from raysweep.results import row_is_dense, run_flops

OPTIONS = ("strategy", "budget_flops", "budget_fraction", "batch", "target", "cost_exponent",
           "seed", "storage", "ensemble", "noise", "target_std", "max_failures", "design",
           "discrepancy", "discrepancy_scale")
DEFAULT_FRACTION = 0.1
# How a round picks its runs: "plan" plans the remaining budget under the bias-
# plus-variance criterion (raysweep.active.planner.robust_plan), "vopt" solves the
# relaxed budgeted V-optimal design, "greedy" scores candidates one by one per
# (6 N D)^cost_exponent.
DESIGNS = ("plan", "vopt", "greedy")
# The plan's model of the law's misspecification (raysweep.active.planner.
# discrepancy_kernel): sd in log-loss and correlation length in e-folds of N and D,
# chosen on the Chinchilla and Farseer replays (docs/active.md, "Method").
DISCREPANCY = 0.02
DISCREPANCY_SCALE = 2.0


@dataclass(frozen=True)
class ActiveOptions:
    """Validated ``search`` options of the active strategy (defaults in the module doc)."""

    budget_flops: float
    batch: int = 4
    # None = grid's largest (N, D); "rho" = every non-dense capacity
    target: tuple[tuple[float, float], ...] | str | None = None
    cost_exponent: float = 1.0
    seed: int = 0
    storage: str | None = None
    ensemble: int = 48
    noise: float = 0.01
    target_std: float = 0.0
    max_failures: int = 1
    design: str = "plan"
    discrepancy: float = DISCREPANCY
    discrepancy_scale: float = DISCREPANCY_SCALE

    def design_kwargs(self) -> dict:
        """Keyword arguments of :class:`raysweep.active.acquisition.ActiveDesign`."""
        return {"target": self.target, "cost_exponent": self.cost_exponent,
                "ensemble": self.ensemble, "noise": self.noise, "target_std": self.target_std,
                "max_failures": self.max_failures, "seed": self.seed,
                "design": self.design, "discrepancy": self.discrepancy,
                "discrepancy_scale": self.discrepancy_scale}


def _bad(key: str, value: Any, allowed: str) -> StudyError:
    return bad_value(f"search.{key}", value, "", allowed, StudyError)


def _num(search: dict, key: str, default, lo: float, hi: float = math.inf, *,
         integer: bool = False, open_lo: bool = False):
    return check_number(f"search.{key}", search.get(key, default), lo, hi, integer, open_lo,
                        StudyError)


TARGET_ALLOWED = ("'largest', 'rho', {n_params: N, tokens: D} with N, D > 0, "
                  "or a non-empty list of such mappings")


def _target(v, pool: list[dict]) -> tuple[tuple[float, float], ...] | str | None:
    if v is None or v == "largest":
        return None
    if v == "rho":
        if not any(row_is_dense(r) for r in pool):
            raise _bad("target", v, "'rho' only with a dense representation in the grid "
                                    "(bf16 weights and activations: rho is measured against "
                                    "it); otherwise 'largest' or {n_params, tokens} points")
        return "rho"
    items = v if isinstance(v, list) else [v]
    out = []
    for t in items:
        if not (isinstance(t, dict) and set(t) == {"n_params", "tokens"}
                and all(isinstance(t[k], (int, float)) and not isinstance(t[k], bool)
                        and t[k] > 0 for k in t)):
            raise _bad("target", v, TARGET_ALLOWED)
        out.append((float(t["n_params"]), float(t["tokens"])))
    if not out:
        raise _bad("target", v, TARGET_ALLOWED)
    return tuple(out)


def pool_flops(pool: list[dict]) -> float:
    """FLOPs of the full grid: sum of 6 N D over the pool."""
    return float(sum(run_flops(r["n_params"], r["tokens"]) for r in pool))


def parse_options(search: dict, pool: list[dict]) -> ActiveOptions:
    """Validate ``study.search`` for the active strategy; raise StudyError naming the key."""
    if not isinstance(search, dict):
        raise StudyError(f"search: got {search!r}; allowed: a mapping {{strategy: active, ...}}")
    unknown = sorted(set(search) - set(OPTIONS))
    if unknown:
        raise _bad(unknown[0], search[unknown[0]], "one of " + ", ".join(OPTIONS))
    if search.get("strategy", "active") != "active":
        raise _bad("strategy", search.get("strategy"), "active")
    if not pool:
        raise StudyError("search: the study expands to no trials; allowed: a non-empty grid")
    if "budget_flops" in search and "budget_fraction" in search:
        raise _bad("budget_fraction", search["budget_fraction"],
                   "either budget_flops or budget_fraction, not both")
    if "budget_flops" in search:
        budget = _num(search, "budget_flops", None, 0, open_lo=True)
    else:
        budget = _num(search, "budget_fraction", DEFAULT_FRACTION, 0, 1, open_lo=True)
        budget *= pool_flops(pool)
    storage = search.get("storage")
    if storage is not None and not (isinstance(storage, str) and "://" in storage):
        raise _bad("storage", storage, "a SQLAlchemy URL such as sqlite:///path/active.db "
                                       "or postgresql://user@host/db")
    return ActiveOptions(
        budget_flops=budget,
        batch=_num(search, "batch", 4, 1, integer=True),
        target=_target(search.get("target"), pool),
        cost_exponent=_num(search, "cost_exponent", 1.0, 0, 4),
        seed=_num(search, "seed", 0, 0, integer=True),
        storage=storage,
        ensemble=_num(search, "ensemble", 48, 4, 1024, integer=True),
        noise=_num(search, "noise", 0.01, 0, 1, open_lo=True),
        target_std=_num(search, "target_std", 0.0, 0),
        max_failures=_num(search, "max_failures", 1, 1, integer=True),
        design=_design(search.get("design", "plan")),
        discrepancy=_num(search, "discrepancy", DISCREPANCY, 0, 1),
        discrepancy_scale=_num(search, "discrepancy_scale", DISCREPANCY_SCALE, 0, 100,
                               open_lo=True),
    )


def _design(v) -> str:
    if v not in DESIGNS:
        raise _bad("design", v, " or ".join(repr(d) for d in DESIGNS))
    return v
