"""A study's trials: expansion into flat trial configs and train() configs.

:mod:`raysweep.sweep.study` says what a study may contain, this module what
trials it means; a trial's id is :func:`raysweep.results.run_id` of its config.
"""

from __future__ import annotations

import dataclasses
import itertools

from raysweep.errors import StudyError
from raysweep.results import format_label, read_table, run_id


def expand(study) -> list[dict]:
    """The study's trials as flat config dicts (the grid; also the active-search pool).

    Each dict holds the train() config keys plus the labels of the results table
    (``run_id``, ``study``, ``format``, ``n_params``, ``tokens_per_param``,
    ``backend``). Tokens are resolved to an integer count ``round(r * N)`` so the
    run id does not depend on how D was written.
    """
    from raysweep.train import sizes as sz

    if study.backend == "replay" and not study.representations:
        return _expand_table(study)
    trials, seen = [], {}
    for rep in study.representations:
        rsizes = rep.sizes or study.sizes
        if rep.tokens is not None or rep.tokens_per_param is not None:
            tpp, toks = rep.tokens_per_param, rep.tokens
        else:
            tpp, toks = study.tokens_per_param, study.tokens
        seeds = rep.seeds or study.seeds
        for size in rsizes:
            n_layers, d_model, n_heads = sz.resolve_size(size, study.vocab)
            n = sz.count_params(n_layers, d_model, n_heads, study.vocab)
            ds = [(r, max(1, round(r * n))) for r in tpp] if tpp else [(t / n, t) for t in toks]
            for (ratio, tokens), seed in itertools.product(ds, seeds):
                cfg = _trial(study, rep, size, (n_layers, d_model, n_heads), n, tokens, ratio, seed)
                if cfg["run_id"] in seen:
                    raise StudyError(
                        f"{study.path}: representations: got trial {rep.name} size={size} "
                        f"tokens={tokens} seed={seed} twice (sizes or entries that resolve "
                        f"to the same model; also as {seen[cfg['run_id']]}); allowed: each "
                        "trial once")
                seen[cfg["run_id"]] = rep.name
                trials.append(cfg)
    return trials


def _expand_table(study) -> list[dict]:
    """Whole-table replay: one trial per distinct (weights, activations, N, D, seed) row.

    A past sweep re-run under another strategy (issue 6): the pool is exactly
    what the table can answer. Shapes come from ``n_layers`` / ``d_model`` when
    the table has them (the size is then ``LxD``), else they are left 0.
    """
    from raysweep.train.sizes import default_heads

    df = read_table(study.replay)
    trials, seen = [], set()
    for row in df.to_dict("records"):
        w, a = str(row["weights"]), str(row["activations"])
        n, d, seed = int(row["n_params"]), int(round(float(row["tokens"]))), int(row["seed"])
        if (w, a, n, d, seed) in seen:
            continue
        seen.add((w, a, n, d, seed))
        layers, width = (_int(row.get(k)) for k in ("n_layers", "d_model"))
        fmt = format_label(w, a, row.get("format"))
        cfg = {
            "study": study.name, "backend": "replay", "format": fmt, "weights": w,
            "activations": a, "size": f"{layers}x{width}", "n_layers": layers,
            "d_model": width, "n_heads": default_heads(width) if width >= 2 else 0,
            "n_params": n, "tokens": d, "tokens_per_param": d / n, "seed": seed,
            "data": study.data, "training": {}, "replay": study.replay,
        }
        cfg["run_id"] = run_id(cfg)
        trials.append(cfg)
    return trials


def _int(x) -> int:
    try:
        return int(x)
    except (TypeError, ValueError):
        return 0


def _trial(study, rep, size, shape, n, tokens, ratio, seed) -> dict:
    cfg = {
        "study": study.name, "backend": study.backend, "format": rep.name,
        "weights": rep.weights, "activations": rep.activations, "size": size,
        "n_layers": shape[0], "d_model": shape[1], "n_heads": shape[2], "n_params": n,
        "tokens": int(tokens), "tokens_per_param": float(ratio), "seed": int(seed),
        "data": study.data, "training": dict(study.training),
    }
    if rep.estimator is not None:
        cfg["training"]["estimator"] = rep.estimator
    if study.backend == "simulated":
        cfg["simulated"] = dataclasses.asdict(study.simulated)
    if study.backend == "replay":
        cfg["replay"] = study.replay
    cfg["run_id"] = run_id(cfg)
    return cfg


def train_config(cfg: dict, checkpoint_dir: str | None = None, threads: int = 1) -> dict:
    """The dict handed to :func:`raysweep.train.loop.train` for a trial config."""
    out = {
        "size": cfg["size"], "weights": cfg["weights"], "activations": cfg["activations"],
        "tokens": cfg["tokens"], "seed": cfg["seed"], "data": cfg["data"], "threads": threads,
        **cfg.get("training", {}),
    }
    if checkpoint_dir:
        out["checkpoint_dir"] = checkpoint_dir
    return out
