"""Composite specs: each part's GMSE enters its own family; marginal products."""

import math

import pandas as pd
import pytest

import raysweep.fit.data as fitdata
from raysweep.fit import fit_table, make_design
from raysweep.fit.compose import composability
from raysweep.fit.data import Part
from raysweep.fit.synthetic import FAMILIES, unified_rho

SPARSE50 = FAMILIES["sparse"]["sparse50"][0]
INT4 = FAMILIES["int"]["int4"][0]
PARTS = {  # what raysweep.formats.parse(spec).parts would give
    "sparse50": [("sparse", SPARSE50, 9.0, 0.5)],
    "int4": [("int", INT4, 4.0, math.nan)],
    "int2": [("int", 0.11885, 2.0, math.nan)],
    "sparse50+int4": [("sparse", SPARSE50, 9.0, 0.5), ("int", INT4, 4.0, math.nan)],
    "sparse50+int2": [("sparse", SPARSE50, 9.0, 0.5), ("int", 0.11885, 2.0, math.nan)],
}


def fake_spec_parts(spec, role):
    if spec in ("bf16", "none"):
        return ()
    return tuple(Part(role, spec if len(PARTS[spec]) == 1 else spec.split("+")[i], f, g, b, s)
                 for i, (f, g, b, s) in enumerate(PARTS[spec]))


@pytest.fixture()
def table(monkeypatch):
    monkeypatch.setattr(fitdata, "spec_parts", fake_spec_parts)
    rows = []
    for spec in ["bf16", "sparse50", "int4", "int2", "sparse50+int4", "sparse50+int2"]:
        rho = math.prod(unified_rho(f, g) for f, g, _, _ in (PARTS.get(spec) or []))
        for n in (1e7, 4e7, 1.6e8, 6.4e8):
            for r in (40, 100, 250):
                loss = 400 * (n * rho) ** -0.3 + 2000 * (n * r) ** -0.35 + 1.8
                rows.append({"weights": spec, "activations": "bf16", "n_params": n,
                             "tokens": n * r, "loss": loss})
    return pd.DataFrame(rows)


def test_part_gmse_enters_each_family(table):
    res = fit_table(table, law="unified")
    want = unified_rho("sparse", SPARSE50) * unified_rho("int", INT4)
    assert res.rho["sparse50+int4|bf16"] == pytest.approx(want, rel=2e-3)
    assert set(res.capacity) == {"sparse", "int"}


def test_composability_of_exact_products_is_zero(table):
    dec = fit_table(table, law="decoupled")
    comp = composability(make_design(table), dec.rho, dec.ci)
    assert comp["n_combinations"] == 2 and not comp["missing_marginals"]
    assert comp["max_abs_error"] < 1e-3
    (m,) = comp["matrices"]
    assert m["kind"] == "weights: first x second part"
    assert m["rows"] == ["W:sparse50"] and m["cols"] == ["W:int2", "W:int4"]


def test_missing_marginal_is_reported(table):
    table = table[table["weights"] != "int2"]
    dec = fit_table(table, law="decoupled")
    comp = composability(make_design(table), dec.rho)
    assert comp["missing_marginals"][0]["lacking"] == ["W:int2"]
    assert "lack a marginal" in comp["note"]


def test_frantar_reads_sparsity_from_parts(table):
    res = fit_table(table, law="frantar")
    assert res.n_points == 24  # dense + sparse50 only
    assert any("outside its scope" in n for n in res.notes)


def test_real_spec_columns_through_formats_parse():
    from raysweep import formats

    rows = []
    truth = {"int": (1.0, 0.41, 1.39), "sparse": (0.95, 0.8, 1.0)}
    for spec in ["bf16", "int2", "int3", "int4", "sparse30", "sparse50", "sparse70",
                 "sparse50+int4"]:
        parts = formats.parse(spec).parts or (formats.parse(spec),)
        rho = math.prod(unified_rho(p.family, p.gmse().value, truth)
                        for p in parts if not p.is_identity)
        for n in (1e7, 4e7, 1.6e8, 6.4e8):
            for r in (40, 250):
                rows.append({"weights": spec, "activations": "bf16", "n_params": n,
                             "tokens": n * r,
                             "loss": 400 * (n * rho) ** -0.3 + 2000 * (n * r) ** -0.35 + 1.8})
    # sparse's truth has L = 0.95 (3 levels: fixed at 1 by default), so L is left free
    res = fit_table(pd.DataFrame(rows), law="unified", capacity_L="free")
    assert res.capacity["int"]["F"] == pytest.approx(0.41, rel=1e-2)
    assert res.capacity["sparse"]["C"] == pytest.approx(1.0, rel=1e-2)
    assert "sparse50+int4|bf16" in res.rho
