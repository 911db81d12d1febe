"""studies/hardware_fp4.yaml: the formats GPUs train in, on weights and activations; a
CPU-sized copy of it runs through the simulated runner (no Ray, no torch training)."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from raysweep.sweep.run import plan_rows, plan_summary
from raysweep.sweep.runners import run_trial
from raysweep.sweep.study import load_study, parse_study
from raysweep.sweep.trials import expand

PATH = Path(__file__).resolve().parents[2] / "studies" / "hardware_fp4.yaml"
REQUIRED = {"int4", "intz4", "fp4", "mxfp4", "mxfp4@q", "nvfp4", "nvfp4@46", "int4@sr",
            "mxfp4@sr", "nvfp4@sr", "int4@rh128", "mxfp4@rh32", "nvfp4@rh16"}


def test_the_study_covers_the_hardware_formats_on_a_gpu():
    study = load_study(PATH)
    trials = expand(study)
    fmts = {t["weights"] for t in trials if t["weights"] == t["activations"]}
    assert REQUIRED | {"bf16"} == fmts                 # weights and activations alike
    assert study.resources.gpu != 0 and study.backend == "train"
    assert study.training["device"] == "cuda"
    s = plan_summary(study, plan_rows(study))          # `raysweep plan` prices it
    assert s["n_trials"] == len(trials) == 3 * (3 + len(REQUIRED)) and s["device_hours"] > 0


def test_a_cpu_sized_copy_runs_through_the_simulated_runner():
    raw = yaml.safe_load(PATH.read_text())
    raw.update(name="hardware_fp4_cpu", backend="simulated", sizes=["2x32", "2x64"],
               tokens_per_param=[10], simulated={"noise": 0.0, "sleep_s": 0.0},
               resources={"cpu": 1, "gpu": 0})
    raw.pop("training")
    raw["representations"][0]["tokens_per_param"] = [5, 10]
    study = parse_study(raw, "<hardware_fp4_cpu>")
    rows = [run_trial(t) for t in expand(study)]
    assert len(rows) == 2 * (2 + len(REQUIRED)) and all(r["status"] == "ok" for r in rows)
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    by = {(r["format"], r["size"]): r for r in rows if r["tokens_per_param"] == 10}
    from raysweep.formats import parse

    for spec in REQUIRED:
        r = by[(spec, "2x64")]
        rep = parse(spec)
        assert r["bits_weights"] == rep.bits_per_element == r["bits_activations"]
        assert r["gmse_weights"] == rep.gmse().value > 0
        # the simulated law: more GMSE, less capacity, higher loss than dense
        assert r["loss"] > by[("dense", "2x64")]["loss"]
    # stochastic rounding costs GMSE, so loss, against round to nearest
    for spec in ["int4", "mxfp4", "nvfp4"]:
        assert by[(spec + "@sr", "2x64")]["loss"] > by[(spec, "2x64")]["loss"]
