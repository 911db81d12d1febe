"""What a trial does: train a model, draw from a known law, or look up a past result.

Three backends answer a trial config (from :func:`raysweep.sweep.study.expand`) with a
result row (the results-table columns of docs/architecture.md):

``train``
    :func:`raysweep.train.loop.train`, reporting its eval steps to Ray Tune. The
    trial's ``checkpoint_dir`` (``OUT/<study>/checkpoints/<run_id>``) lets a
    retried or resumed trial continue where it stopped; it is deleted once the
    trial finishes (its row is the result).
``simulated``
    no training and no torch: the loss comes from the unified law
    ``L = A (N rho)^-alpha + B D^-beta + E`` with
    ``rho = prod over roles and composed parts of L_f tanh(F_f log_{1/4} GMSE)^C_f``,
    times ``exp(noise * z)`` with ``z ~ N(0, 1)`` seeded by the run id (so a
    re-run draws the same loss). Defaults (:data:`raysweep.fit.laws.EPOCH_CHINCHILLA`,
    :data:`raysweep.fit.laws.PAPER_CAPACITY`): Epoch AI's Chinchilla fit for the dense law and
    the paper's capacity fit (L 1, F 0.41, C 1.39) for every family; noise 0.01
    on log-loss (about the seed-to-seed spread measured on CPU). An optional
    ``sleep_s`` imitates training time, ``fail_prob`` injects failures.
``replay``
    answers from an existing results table, matching rows on
    ``(weights, activations, n_params, tokens, seed)``; no match is an error
    (the trial fails and the registry says why).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from typing import Any

from raysweep.errors import RaysweepError
from raysweep.results import read_table, run_flops


class ReplayMissError(RaysweepError):
    """A replayed trial has no matching row in the replay table."""


def capacity(spec: str, caps: dict[str, dict[str, float]] | None = None) -> float:
    """rho of one role's spec: the product over its ``+``-composed parts (composability).

    Each part's own GMSE enters its family's curve (``sparse50+int4`` ->
    rho_sparse(GMSE sparse50) * rho_int(GMSE int4)); identity parts give 1.
    """
    from raysweep.fit.laws import PAPER_CAPACITY, tanh_capacity
    from raysweep.formats import parse

    caps = caps or {}
    rho = 1.0
    for part in spec.split("+"):
        rep = parse(part)
        if rep.is_identity:
            continue
        c = {**PAPER_CAPACITY, **caps.get("default", {}), **caps.get(rep.family, {})}
        rho *= tanh_capacity(rep.gmse().value, c["L"], c["F"], c["C"])
    return rho


def simulated_loss(cfg: dict) -> float:
    """Noisy loss of a trial under the simulated backend's law (seeded by the run id)."""
    from raysweep.fit.laws import EPOCH_CHINCHILLA, unified_loss

    sim = cfg.get("simulated", {}) or {}
    law = {**EPOCH_CHINCHILLA, **(sim.get("law") or {})}
    caps = sim.get("capacity") or {}
    rho = capacity(cfg["weights"], caps) * capacity(cfg["activations"], caps)
    mean = unified_loss(cfg["n_params"], cfg["tokens"], rho, law)
    z = random.Random(int(cfg["run_id"], 16)).gauss(0.0, 1.0)
    return mean * math.exp(sim.get("noise", 0.01) * z)


def _spec_columns(cfg: dict) -> dict:
    from raysweep.formats import parse

    w, a = parse(cfg["weights"]), parse(cfg["activations"])
    return {"gmse_weights": w.gmse().value, "gmse_activations": a.gmse().value,
            "bits_weights": w.bits_per_element, "bits_activations": a.bits_per_element}


def _labels(cfg: dict) -> dict:
    keys = ("run_id", "study", "format", "weights", "activations", "size", "n_params",
            "n_layers", "d_model", "tokens", "tokens_per_param", "seed")
    # "backend" in a train() row is the kernel backend; the sweep's is "sweep_backend"
    out = {**{k: cfg[k] for k in keys}, "sweep_backend": cfg["backend"]}
    if cfg.get("role"):  # a WSD trunk or branch: trunk_id is the trunk's trial id
        sched = cfg["training"]["schedule"]
        trunk = cfg["role"] == "trunk"
        out.update(role=cfg["role"], trunk_id=cfg["run_id"] if trunk else cfg["trunk"],
                   branch_step=max(cfg["branch_points"]) if trunk else cfg["branch_step"],
                   cooldown=sched["cooldown"], schedule=sched["kind"])
    return out


def run_simulated(cfg: dict) -> dict:
    sim = cfg.get("simulated", {}) or {}
    t0 = time.perf_counter()
    if sim.get("sleep_s"):
        time.sleep(sim["sleep_s"])
    if sim.get("fail_prob") and random.random() < sim["fail_prob"]:
        raise RuntimeError(f"simulated failure (fail_prob={sim['fail_prob']})")
    loss = simulated_loss(cfg)
    if cfg.get("role") == "trunk":  # its branches wait for these (as for a trained trunk's)
        _simulated_trunk_checkpoints(cfg)
    return {**_labels(cfg), "loss": loss, "train_loss": loss, **_spec_columns(cfg),
            "flops": run_flops(cfg["n_params"], cfg["tokens"]), "wall_s": time.perf_counter() - t0,
            "status": "ok", "error": ""}


def _simulated_trunk_checkpoints(cfg: dict) -> None:
    """Empty stand-ins of a trunk's branch-point checkpoints (simulated branches read none)."""
    import os

    from raysweep.train.wsd import branch_checkpoint

    os.makedirs(cfg["checkpoint_dir"], exist_ok=True)
    for step in cfg["branch_points"]:
        with open(branch_checkpoint(cfg["checkpoint_dir"], step), "ab"):
            pass


_REPLAY_CACHE: dict[str, Any] = {}
_REPLAY_KEY = ("weights", "activations", "n_params", "tokens", "seed")


def _replay_index(path: str) -> dict[tuple, dict]:
    """The replay table indexed by (weights, activations, n_params, tokens, seed), per process."""
    if path not in _REPLAY_CACHE:
        df = read_table(path)
        missing = [c for c in _REPLAY_KEY + ("loss",) if c not in df.columns]
        if missing:
            raise RaysweepError(f"replay.table: {path} lacks columns {missing}; "
                                f"allowed: a results table with {list(_REPLAY_KEY)} and loss")
        index = {}
        for row in df.to_dict("records"):
            index.setdefault(_replay_key(row), row)
        _REPLAY_CACHE[path] = index
    return _REPLAY_CACHE[path]


def _replay_key(row: dict) -> tuple:
    return (str(row["weights"]), str(row["activations"]), int(row["n_params"]),
            int(round(float(row["tokens"]))), int(row["seed"]))


def run_replay(cfg: dict) -> dict:
    row = _replay_index(cfg["replay"]).get(_replay_key(cfg))
    if row is None:
        raise ReplayMissError(
            f"replay: no row in {cfg['replay']} with weights={cfg['weights']} "
            f"activations={cfg['activations']} n_params={cfg['n_params']} "
            f"tokens={cfg['tokens']} seed={cfg['seed']}")
    out = {**row, **_labels(cfg)}
    out.setdefault("status", "ok")
    e = out.get("error")
    out["error"] = "" if e is None or (isinstance(e, float) and math.isnan(e)) else e
    return out


def run_train(cfg: dict, report: Callable[[dict], None] | None = None) -> dict:
    from raysweep.sweep.trials import train_config
    from raysweep.train.loop import train

    ckpt = cfg.get("checkpoint_dir")
    tc = train_config(cfg, ckpt, threads=int(cfg.get("threads", 1)))
    row = train(tc, report)
    # finished: the row is the result; a 200M model's state is gigabytes (a WSD trunk's
    # directory holds its branch points: the sweep deletes it once its branches are done)
    if ckpt and cfg.get("role") != "trunk":
        shutil.rmtree(ckpt, ignore_errors=True)
    return {**row, **_labels(cfg), "n_params": row.get("n_params", cfg["n_params"])}


def run_trial(cfg: dict, report: Callable[[dict], None] | None = None) -> dict:
    """Answer one trial config with its result row (any backend; no Ray needed)."""
    backend = cfg["backend"]
    if backend == "simulated":
        return run_simulated(cfg)
    if backend == "replay":
        return run_replay(cfg)
    if backend == "train":
        return run_train(cfg, report)
    raise RaysweepError(f"backend: {backend!r}; allowed: train, simulated, replay")


def trainable(config: dict, done_rows: dict | None = None) -> None:
    """The Ray Tune function trainable: one trial, its row reported once as ``row_json``.

    Intermediate eval steps of the ``train`` backend are reported too (without
    ``row_json``) so Tune and the dashboard show progress. ``done_rows`` (run id
    -> row, via ``tune.with_parameters``) answers trials an active searcher
    proposes again after a resume, without recomputing them.
    """
    from ray import tune

    if done_rows and config["run_id"] in done_rows:
        row = done_rows[config["run_id"]]
    else:
        def _report(d: dict) -> None:
            if not d.get("done"):
                tune.report({k: v for k, v in d.items() if isinstance(v, (int, float))})

        try:
            row = run_trial(config, _report if config["backend"] == "train" else None)
        except ReplayMissError as exc:  # deterministic: retrying cannot help, and raising
            # would cost an actor restart (~2 s); report the failure as a result instead
            tune.report({"failed_json": json.dumps({"run_id": config["run_id"],
                                                    "error": str(exc)}), "done": True})
            return
    # done=True ends the trial at once; without it Tune waits for the function's thread to
    # finish and polls for a late error (up to ~0.5 s per trial, measured)
    tune.report({"loss": _float_or_nan(row.get("loss")),
                 "row_json": json.dumps(row, default=_jsonable), "done": True})


def _float_or_nan(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)
