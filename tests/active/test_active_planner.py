"""The planned design: the relaxed budgeted V-optimal solver, its rounding, its use."""

import itertools

import numpy as np
import pytest

from raysweep.active.acquisition import ActiveDesign, run_in_process
from raysweep.active.planner import (
    Misspecified,
    discrepancy_kernel,
    relaxed_design,
    robust_plan,
    round_plan,
    v_value,
)


def line_problem():
    """y = t0 + t1 x at x in {-1, -0.5, 0, 0.5, 1}, unit costs, target: the slope."""
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    info = np.column_stack([np.ones_like(x), x])
    return info, np.eye(2) * 1e-9, np.array([[0.0, 1.0]])


def test_known_optimum_slope_of_a_line():
    """The V-optimal design for a line's slope with two runs: both ends, Var = 1/2."""
    info, m0, grad = line_problem()
    plan = relaxed_design(info, m0, grad, np.ones(5), budget=2.0, iters=500, tol=1e-6)
    assert plan.weights[[0, 4]] == pytest.approx([1.0, 1.0], abs=1e-3)
    assert plan.weights[1:4].sum() < 1e-2
    assert plan.value == pytest.approx(0.5, rel=1e-3)
    assert 0.5 * (1 - 1e-3) <= plan.lower_bound <= plan.value
    assert round_plan(plan.weights, np.ones(5), 2.0, n=4) in ([0, 4], [4, 0])


def test_budget_is_in_flops_not_in_runs():
    """Two runs carry the same information; only the cheap one fits the budget whole."""
    info = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    cost = np.array([1.0, 10.0, 1.0])
    plan = relaxed_design(info, np.eye(2) * 1e-2, np.eye(2), cost, budget=2.0, iters=300)
    assert plan.weights[0] == pytest.approx(1.0, abs=1e-2)
    assert plan.weights[2] == pytest.approx(1.0, abs=1e-2)
    assert plan.weights[1] < 1e-2
    assert plan.weights @ cost <= 2.0 + 1e-9


def test_lower_bound_is_below_every_integer_design():
    rng = np.random.default_rng(3)
    info = rng.standard_normal((8, 3))
    cost = rng.uniform(0.5, 3.0, 8)
    m0, grad, budget = np.eye(3) * 0.1, rng.standard_normal((2, 3)), 4.0
    plan = relaxed_design(info, m0, grad, cost, budget, iters=400, tol=1e-6)
    best = min(v_value(info, np.array(s, float), m0, grad)
               for s in itertools.product((0, 1), repeat=8) if np.dot(s, cost) <= budget)
    assert plan.lower_bound <= best + 1e-12
    assert plan.lower_bound <= plan.value
    assert plan.value <= best * 1.01  # the relaxed optimum is below every integer design
    picks = round_plan(plan.weights, cost, budget, n=8)
    assert cost[picks].sum() <= budget and len(set(picks)) == len(picks)


def random_criterion(seed=0, amp=0.02, scale=1.0, n=30, p=4, t=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + t, 2))
    return Misspecified(rng.normal(size=(n, p)), rng.normal(size=(t, p)), x[:n], x[n:],
                        amp, scale, 0.01, np.eye(p) * 1e-4)


def test_discrepancy_kernel_is_the_squared_exponential():
    x = np.array([[0.0, 0.0], [1.0, 1.0]])
    k = discrepancy_kernel(x, x, 0.02, 2.0)
    assert k[0, 0] == pytest.approx(4e-4)
    assert k[0, 1] == pytest.approx(4e-4 * np.exp(-2.0 / 8.0))
    assert np.all(discrepancy_kernel(x, x, 0.0, 2.0) == 0)


def test_rank_one_update_matches_the_direct_mse():
    crit = random_criterion()
    chosen, cand = [0, 1, 2, 3, 4, 5], [7, 8, 9, 20]
    direct = [crit.mse(chosen + [c]).mean() for c in cand]
    assert crit.mse_added(chosen, cand) == pytest.approx(direct, rel=1e-9)


def test_without_discrepancy_the_mse_is_the_laplace_variance():
    """amp 0: the law is exact, and the error of the fit is its linearized variance."""
    crit = random_criterion(amp=0.0)
    s = list(range(12))
    js = crit.jac[s] / crit.sigma
    var = np.diag(crit.grad @ np.linalg.solve(crit.prior + js.T @ js, crit.grad.T))
    assert crit.mse(s) == pytest.approx(var, rel=1e-3)


def line_with_a_bend():
    """Intercept + slope in x; runs at x = 0..9 (cost grows with x), the target at x = 12;
    the misspecification is correlated over 2 units of x."""
    x = np.arange(10.0)
    jac = np.column_stack([np.ones(10), x])
    xs = np.r_[x, 12.0][:, None]
    return x, jac, xs


def test_misspecification_keeps_the_plan_off_cheap_far_runs():
    """An exact law takes a cheap run near the start to pin the intercept; a law that
    bends does not (its error there is not the target's) and leaves budget unspent."""
    x, jac, xs = line_with_a_bend()
    cost = np.exp(x / 3)
    g = np.array([[1.0, 12.0]])

    def plan(amp):
        crit = Misspecified(jac, g, xs[:10], xs[10:], amp, 2.0, 0.01, np.eye(2) * 1e-6)
        return robust_plan(crit, [0, 1], range(2, 10), cost, budget=30.0), crit

    exact, _ = plan(0.0)
    wrong, crit = plan(0.05)
    assert wrong.mse_after < wrong.mse_now and exact.mse_after < exact.mse_now
    assert exact.picks[0] == wrong.picks[0] == 9  # the run nearest the target first
    assert min(exact.picks) == 2 and min(wrong.picks) > 2
    assert cost[wrong.picks].sum() < cost[exact.picks].sum() <= 30.0
    # the plan's value is the criterion of what it bought
    assert crit.mse([0, 1] + wrong.picks).mean() == pytest.approx(wrong.mse_after)


def test_a_far_run_can_only_hurt_a_wrong_law_so_the_plan_stops():
    """Runs at the far end add bias the plain fit cannot tell from signal: the plan
    leaves them unbought and the budget unspent."""
    x, jac, xs = line_with_a_bend()
    crit = Misspecified(jac, np.array([[1.0, 12.0]]), xs[:10], xs[10:], 0.05, 3.0, 0.001,
                        np.eye(2) * 1e-6)
    plan = robust_plan(crit, [8, 9], [0, 1], np.ones(10), budget=2.0)
    assert plan.picks == []
    assert np.all(crit.mse_added([8, 9], [0, 1]) > crit.mse([8, 9]).mean())


RHO = {"dense": 1.0, "w4": 0.8, "w2": 0.4}
SPEC = {"dense": "bf16", "w4": "int4", "w2": "int2"}


def pool_rows():
    return [{"run_id": f"{f}-{n:g}-{r}", "format": f, "weights": SPEC[f],
             "activations": "bf16", "n_params": n, "tokens": r * n}
            for f in RHO for n in (2e6, 4e6, 8e6, 16e6) for r in (10, 20, 40)]


def truth(r):
    return 400 * (r["n_params"] * RHO[r["format"]]) ** -0.34 + 1800 * r["tokens"] ** -0.37 + 1.8


def test_planned_search_spends_within_budget_and_brackets_the_truth():
    rows = pool_rows()
    total = sum(6 * r["n_params"] * r["tokens"] for r in rows)
    target = [(6.4e7, 1.28e9)]
    assert ActiveDesign(rows, total).design == "plan"
    for kind in ("plan", "vopt"):
        design = ActiveDesign(rows, 0.3 * total, target=target, design=kind)
        rng = np.random.default_rng(0)
        observed = run_in_process(
            design, lambda i, rng=rng: truth(rows[i]) * np.exp(0.005 * rng.standard_normal()),
            batch=3)
        assert design.spent(observed) <= 0.3 * total
        assert len(observed) < len(rows)
        assert design.last_plan is not None  # the plan, not the fallback, chose runs
        if kind == "vopt":
            assert design.last_plan.lower_bound <= design.last_plan.value
        else:
            assert design.last_plan.mse_after <= design.last_plan.mse_now
        check_intervals(design, observed, target)


def check_intervals(design, observed, target):
    iv = design.target_intervals(observed)
    assert len(iv) == len(RHO)
    for lab in RHO:
        key = next(k for k in iv if k.startswith(lab + "@"))
        true = truth({"format": lab, "n_params": target[0][0], "tokens": target[0][1]})
        centre, lo, hi = iv[key]
        assert lo < centre < hi and abs(centre - true) / true < 0.05


def test_pending_runs_change_the_next_pick():
    """A run in flight adds its information to the plan: the next pick differs."""
    rows = pool_rows()
    total = sum(6 * r["n_params"] * r["tokens"] for r in rows)
    design = ActiveDesign(rows, 0.5 * total, target=[(6.4e7, 1.28e9)])
    observed = {i: truth(rows[i]) for i in range(len(rows)) if rows[i]["n_params"] <= 4e6}
    first = design.propose(observed, n=1)
    assert first.reason == "acquired" and first.picks
    second = design.propose(observed, pending=first.picks, n=1)
    assert second.picks and second.picks[0] not in first.picks


def test_status_reports_budget_left_and_the_targets_with_intervals():
    from raysweep.active.options import parse_options
    from raysweep.active.status import active_status

    rows = pool_rows()
    opts = parse_options({"strategy": "active", "budget_fraction": 0.4}, rows)
    assert opts.design == "plan" and opts.design_kwargs()["discrepancy"] == opts.discrepancy
    done = [r for r in rows if r["n_params"] <= 8e6]
    state = {r["run_id"]: {"status": "ok", "row": {"loss": truth(r)}} for r in done}
    state[rows[-1]["run_id"]] = {"status": "failed", "row": None}
    spent = sum(6 * r["n_params"] * r["tokens"] for r in done)
    s = active_status(opts, rows, state, spent)
    assert s["active_left_flops"] == pytest.approx(max(opts.budget_flops - spent, 0.0))
    assert len(s["active_targets"]) == len(RHO)  # every format at the grid's largest (N, D)
    for key, v in s["active_targets"].items():
        lab = key.split("@")[0]
        true = truth({"format": lab, "n_params": 16e6, "tokens": 40 * 16e6})
        assert v["lo"] < v["loss"] < v["hi"] and abs(v["loss"] - true) / true < 0.02
    empty = active_status(opts, rows, {}, 0.0)
    assert empty["active_targets"] == {} and "no fit yet" in empty["active_targets_note"]


def test_design_option_is_validated():
    from raysweep.active.options import parse_options
    from raysweep.errors import StudyError

    with pytest.raises(StudyError, match=r"search\.design.*allowed.*'plan'"):
        parse_options({"strategy": "active", "design": "smart"}, pool_rows())
    with pytest.raises(StudyError, match=r"search\.discrepancy"):
        parse_options({"strategy": "active", "discrepancy": -1}, pool_rows())
    with pytest.raises(StudyError, match=r"search\.discrepancy_scale"):
        parse_options({"strategy": "active", "discrepancy_scale": 0}, pool_rows())
    opts = parse_options({"design": "vopt", "discrepancy": "0.05", "discrepancy_scale": 1},
                         pool_rows())
    assert (opts.design, opts.discrepancy, opts.discrepancy_scale) == ("vopt", 0.05, 1.0)
    assert parse_options({"design": "greedy"}, pool_rows()).design == "greedy"
