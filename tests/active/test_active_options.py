"""Options of ``search: {strategy: active}``: defaults, and errors that name the key."""

import subprocess
import sys

import pytest

from raysweep.active.options import DEFAULT_FRACTION, parse_options, pool_flops
from raysweep.errors import StudyError

POOL = [{"run_id": f"r{i}", "format": "dense", "n_params": 1e6 * (i + 1), "tokens": 2e7}
        for i in range(4)]


def test_defaults_take_a_tenth_of_the_grid():
    o = parse_options({"strategy": "active"}, POOL)
    assert o.budget_flops == pytest.approx(DEFAULT_FRACTION * pool_flops(POOL))
    assert pool_flops(POOL) == pytest.approx(6 * 2e7 * 1e6 * (1 + 2 + 3 + 4))
    assert (o.batch, o.cost_exponent, o.target, o.storage) == (4, 1.0, None, None)


def test_explicit_options():
    o = parse_options({"strategy": "active", "budget_flops": 1e15, "batch": 2,
                       "target": {"n_params": 3e8, "tokens": 6e9}, "cost_exponent": 0.5,
                       "seed": 3, "storage": "sqlite:///x.db"}, POOL)
    assert o.budget_flops == 1e15 and o.batch == 2 and o.seed == 3
    assert o.target == ((3e8, 6e9),)
    assert o.design_kwargs()["cost_exponent"] == 0.5


@pytest.mark.parametrize("search, key", [
    ({"budget": 1}, "search.budget"),
    ({"budget_flops": 1e9, "budget_fraction": 0.1}, "search.budget_fraction"),
    ({"budget_fraction": 1.5}, "search.budget_fraction"),
    ({"budget_flops": -1}, "search.budget_flops"),
    ({"batch": 0}, "search.batch"),
    ({"batch": 1.5}, "search.batch"),
    ({"target": "biggest"}, "search.target"),
    ({"target": {"n_params": 1e8}}, "search.target"),
    ({"storage": "active.db"}, "search.storage"),
    ({"ensemble": 2}, "search.ensemble"),
    ({"cost_exponent": True}, "search.cost_exponent"),
])
def test_bad_options_name_the_key(search, key):
    with pytest.raises(StudyError, match=key.replace(".", r"\.") + ".*allowed"):
        parse_options({"strategy": "active", **search}, POOL)


def test_target_rho_needs_a_dense_reference():
    assert parse_options({"strategy": "active", "target": "rho"}, POOL).target == "rho"
    assert parse_options({"target": "largest"}, POOL).target is None
    quantized = [{**r, "format": "w4", "weights": "int4", "activations": "bf16"} for r in POOL]
    with pytest.raises(StudyError,
                       match=r"search\.target: got 'rho'; allowed: .*dense representation"):
        parse_options({"strategy": "active", "target": "rho"}, quantized)


def test_import_is_light():
    code = ("import sys, raysweep.active.options; "
            "print(any(m in sys.modules for m in ('optuna', 'ray', 'torch', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
