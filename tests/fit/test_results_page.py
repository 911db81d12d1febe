"""docs/results.md cannot drift from the committed reference studies.

1. Every committed study under data/reference/ is refitted from its results.csv
   and must give the rho, fit error, cross-family fit and composability its
   fit.json states.
2. docs/results.md's generated blocks must be exactly what fit.json renders to.
3. The renderer itself: blocks replaced, the text around them kept, stale blocks
   reported by --check, missing or malformed fit.json a one-line error.
"""

import json
from pathlib import Path

import pytest

from raysweep.fit import fit_table, make_design
from raysweep.fit import results_page as refdoc
from raysweep.fit.compose import composability
from raysweep.fit.data import clean_rows
from raysweep.results import read_table

ROOT = Path(__file__).resolve().parents[2]
STUDIES = sorted(p.parent for p in (ROOT / "data" / "reference").glob("*/fit.json"))


def test_reference_studies_are_committed():
    names = {p.name for p in STUDIES}
    assert "quickstart" in names, names
    for study in STUDIES:
        for f in ("study.yaml", "results.csv", "fit.json", "report.md"):
            assert (study / f).is_file(), study / f


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_refit_matches_committed_fit_json(study):
    stated = json.loads((study / "fit.json").read_text())
    df, _ = clean_rows(read_table(study / "results.csv"))
    assert len(df) == stated["n_points"]
    uni = fit_table(df, law="unified")
    dec = fit_table(df, law="decoupled")
    assert uni.fit_error["rmse_log"] == pytest.approx(stated["fit_error"]["rmse_log"], rel=0.02)
    assert dec.fit_error["rmse_log"] == pytest.approx(
        stated["decoupled"]["fit_error"]["rmse_log"], rel=0.02)
    for lab, f in stated["formats"].items():
        assert uni.rho[lab] == pytest.approx(f["rho_unified"], abs=0.01), lab
        assert dec.rho[lab] == pytest.approx(f["rho_free"], abs=0.01), lab
    for name in ("alpha", "beta"):
        assert uni.params[name] == pytest.approx(stated["params"][name], rel=0.05), name
    cross = stated.get("cross_family")
    if cross and "formats" in cross:
        shared = fit_table(df, law="unified", share=cross["share"])
        assert shared.fit_error["rmse_log"] == pytest.approx(cross["rmse_log"], rel=0.02)
        for lab, r in cross["formats"].items():
            assert shared.rho[lab] == pytest.approx(r["rho_shared_curve"], abs=0.01), lab
    comp = composability(make_design(df, clean=False), dec.rho)
    for got, want in zip(comp["entries"], stated["composability"]["entries"], strict=True):
        assert got["format"] == want["format"]
        assert got["error"] == pytest.approx(want["error"], abs=0.01)


def test_docs_results_blocks_are_up_to_date():
    doc = ROOT / "docs" / "results.md"
    text = doc.read_text()
    names = {m.group("name") for m in refdoc.BLOCK.finditer(text)}
    assert names == {p.name for p in STUDIES}, "every reference study has a block"
    assert refdoc.update(doc, ROOT, check=True) == [], (
        "docs/results.md is stale: run `python -m raysweep.fit.results_page`")


def _fit_json():
    return {
        "n_points": 3, "params": {"A": 400.0, "alpha": 0.3}, "ci": {"alpha": [0.25, 0.35]},
        "flags": {}, "capacity": {"int": {"L": 1.0, "F": 0.4, "C": 1.4}},
        "laws": {"unified": {"n_points": 3, "rmse_log": 0.0123, "rmse": 0.05,
                             "status": "ok"}},
        "decoupled": {"params": {"A": 410.0, "alpha": 0.31}, "ci": {}},
        "formats": {
            "bf16|bf16": {"parts": [], "runs": 1},
            "int4|bf16": {"parts": [{"role": "weights", "spec": "int4", "gmse": 0.011543}],
                          "runs": 2, "rho_free": 0.8123, "rho_free_ci": [0.7, 0.9],
                          "rho_unified": 0.8, "rho_paper": 0.8196}},
        "single_run_rho": [{"label": "int4|bf16", "rho": 0.5}, {"label": "int4|bf16",
                                                                 "rho": 0.7}],
        "composability": {"note": "no combined representations"},
        "cross_family": {"share": {"noise": "int"}, "rmse_log": 0.02, "rmse_log_separate": 0.019,
                         "n_params": 8, "n_params_separate": 11,
                         "formats": {"noise2|bf16": {"rho_shared_curve": 0.41,
                                                     "rho_own_curve": 0.4, "rho_free": 0.39}}},
    }


def test_render_replaces_blocks_and_keeps_the_text(tmp_path, capsys):
    study = tmp_path / "data" / "reference" / "toy"
    study.mkdir(parents=True)
    (study / "fit.json").write_text(json.dumps(_fit_json()))
    doc = tmp_path / "results.md"
    doc.write_text("# Title\nprose 1\n<!-- refdoc:toy -->\nstale\n<!-- /refdoc:toy -->\n"
                   "prose 2\n")
    args = [str(doc), "--root", str(tmp_path)]
    assert refdoc.main([*args, "--check"]) == 1
    assert "out of date: toy" in capsys.readouterr().out
    assert "stale" in doc.read_text()  # --check writes nothing
    assert refdoc.main(args) == 0
    text = doc.read_text()
    assert text.startswith("# Title\nprose 1\n<!-- refdoc:toy -->\n")
    assert text.endswith("<!-- /refdoc:toy -->\nprose 2\n") and "stale" not in text
    assert "| int4\\|bf16 | W:int4 0.0115 | 2 | 0.812 | [0.7, 0.9] | 0.8 | 0.82 | 0.6 |" in text
    assert "| alpha | 0.3 | [0.25, 0.35] | - | 0.31 |  |" in text
    assert "| unified | 3 | 0.0123 | 0.05 | ok |" in text
    assert "no combined representations" in text
    assert "Intervals: 95% bootstrap, full refits of (N, D)-cluster resamples." in text
    assert "No intervals" in refdoc.render({**_fit_json(), "ci": {}}, "toy")
    assert "Cross-family (noise=int: one capacity curve): RMSE of log-loss 0.02 with 8" in text
    assert "| noise2\\|bf16 | 0.41 | 0.4 | 0.39 |" in text
    assert refdoc.main([*args, "--check"]) == 0


def test_missing_or_malformed_fit_json_is_a_clean_error(tmp_path, capsys):
    doc = tmp_path / "results.md"
    original = "<!-- refdoc:nope -->\nx\n<!-- /refdoc:nope -->\n"
    doc.write_text(original)
    assert refdoc.main([str(doc), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raysweep: error:") and "nope" in err and "raysweep report" in err
    study = tmp_path / "data" / "reference" / "nope"
    study.mkdir(parents=True)
    (study / "fit.json").write_text('{"formats": 3}')
    assert refdoc.main([str(doc), "--root", str(tmp_path)]) == 2
    assert "not a fit.json" in capsys.readouterr().err
    assert doc.read_text() == original



def test_ordering_line_counts_pairs_against_the_paper_law():
    def fmt(paper, free):
        return {"parts": [{}], "rho_paper": paper, "rho_free": free}

    line = refdoc.gmse_ordering({"a": fmt(0.9, 0.8), "b": fmt(0.5, 0.85), "c": fmt(0.1, 0.05),
                             "dense": {"parts": []}})
    assert "a 0.8, b 0.85, c 0.05" in line
    assert "2 of 3 pairs in the paper law's order; out of order: a below b." in line
    assert refdoc.gmse_ordering({"a": fmt(0.9, 0.8)}).startswith("Ordering: fewer than two")
