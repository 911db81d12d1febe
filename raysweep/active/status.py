"""What ``raysweep status`` says about an active search: budget, and the targets now.

:func:`active_status` reads the runs the registry holds (no Optuna, no Ray), fits
them with ``raysweep fit``'s estimator (as the plan does) and returns the
budget spent and left and the predicted loss at every target with its 95%
interval (Laplace, log-normal; rho with ``target: rho``).
"""

from __future__ import annotations

import math


def active_status(opts, pool: list[dict], state: dict, spent: float) -> dict:
    """``opts``: the study's :class:`raysweep.active.options.ActiveOptions`; ``pool``: its
    trials; ``state``: the registry's {run_id: record}; ``spent``: FLOPs committed.

    Returns ``active_left_flops`` and ``active_targets`` ({target: {loss, lo, hi}}, or
    {} with ``active_targets_note`` saying why there is no fit yet).
    """
    from raysweep.active.acquisition import FIT_ERRORS, ActiveDesign

    observed = {}
    for i, t in enumerate(pool):
        rec = state.get(t["run_id"]) or {}
        loss = (rec.get("row") or {}).get("loss")
        if rec.get("status") == "ok" and isinstance(loss, (int, float)) and math.isfinite(loss):
            observed[i] = float(loss)
    out = {"active_left_flops": max(opts.budget_flops - spent, 0.0), "active_targets": {}}
    try:
        design = ActiveDesign(pool, opts.budget_flops, **opts.design_kwargs())
        iv = design.target_intervals(observed) if observed else None
    except FIT_ERRORS as exc:
        iv, why = None, str(exc)
    else:
        why = "no finished run yet"
    if iv is None:
        out["active_targets_note"] = f"no fit yet ({len(observed)} finished run(s)): {why}"
        return out
    out["active_targets"] = {k: {"loss": c, "lo": lo, "hi": hi} for k, (c, lo, hi) in iv.items()}
    return out
