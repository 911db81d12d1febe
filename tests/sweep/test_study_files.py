"""Every study in studies/ validates and plans; the quickstart fits its CPU budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysweep.sweep.run import plan_rows, plan_summary
from raysweep.sweep.study import load_study
from raysweep.sweep.trials import expand

ROOT = Path(__file__).resolve().parents[2]
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))


def test_there_are_studies():
    names = {p.stem for p in STUDIES}
    assert "quickstart" in names and len(names) >= 6


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_validates_and_plans(path, capsys):
    study = load_study(path)
    assert study.name == path.stem
    trials = expand(study)
    assert trials and len({t["run_id"] for t in trials}) == len(trials)
    s = plan_summary(study, plan_rows(study))
    assert s["n_trials"] == len(trials) and s["total_flops"] > 0 and s["device_hours"] > 0
    from raysweep.cli import main

    assert main(["plan", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_trials"] == len(trials)


def test_quickstart_shape_and_budget():
    study = load_study(ROOT / "studies" / "quickstart.yaml")
    trials = expand(study)
    fmts = {t["format"] for t in trials}
    assert {"dense", "w4a4", "w2a2", "w4", "s50", "noise2"} <= fmts
    assert len({t["tokens"] for t in trials if t["format"] == "dense"}) >= 2
    assert study.resources.gpu == 0 and study.backend == "train"
    # planned CPU-core-hours over 2 workers: within the 10-minute target with margin
    s = plan_summary(study, plan_rows(study))
    assert s["device_hours"] * 3600 / 2 < 8 * 60


def test_gpu_studies_cover_the_paper_grids():
    specs = set()
    for p in STUDIES:
        st = load_study(p)
        if p.stem.startswith("paper_"):
            assert st.resources.gpu != 0 and {"30M", "50M"} <= set(st.sizes)
            specs |= {t["weights"] for t in expand(st)} | {t["activations"] for t in expand(st)}
    assert {"int1", "int8", "sparse10", "sparse90", "sparse50+int4", "fp4", "vq2x8",
            "int4@g32", "int4@absmax"} <= specs
