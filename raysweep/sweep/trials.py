"""A study's trials: expansion into flat trial configs and train() configs.

:mod:`raysweep.sweep.study` says what a study may contain, this module what
trials it means; a trial's id is :func:`raysweep.results.run_id` of its config.

Warmup-stable-decay studies (``training: {schedule: {kind: wsd, ...}}``) expand
each (format, N, seed) into a *trunk* trial (role ``trunk``: constant LR to the
last branch point, no row in the results table) and one *branch* trial per D
(role ``branch``: resumes the trunk's checkpoint at its branch point and decays;
its row is a run of that D). :func:`raysweep.train.wsd.wsd_configs` computes the
legs; a branch records its trunk's trial id (``trunk``) and branch point
(``branch_step``), and ``train_tokens`` (what the trial itself trains: the
trunk to its last branch point, a branch its cooldown), which prices it.
"""

from __future__ import annotations

import dataclasses
import itertools

from raysweep.errors import StudyError
from raysweep.results import format_label, read_table, run_flops, run_id


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
            shape = (n_layers, d_model, n_heads)
            if is_wsd(study):
                cfgs = [c for seed in seeds
                        for c in _wsd_trials(study, rep, size, shape, n, [t for _, t in ds],
                                             seed)]
            else:
                cfgs = [_trial(study, rep, size, shape, n, tokens, ratio, seed)
                        for (ratio, tokens), seed in itertools.product(ds, seeds)]
            for cfg in cfgs:
                tokens, seed = cfg["tokens"], cfg["seed"]
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


def is_wsd(study) -> bool:
    """Whether the study trains warmup-stable-decay trunks and branches."""
    return (study.training.get("schedule") or {}).get("kind") == "wsd"


def trial_tokens(cfg: dict) -> int:
    """Tokens the trial itself trains (a WSD trunk or branch: its own share; else D)."""
    return int(cfg.get("train_tokens", cfg["tokens"]))


def trial_flops(cfg: dict) -> float:
    """FLOPs the trial itself spends (6 N x its own tokens)."""
    return run_flops(cfg["n_params"], trial_tokens(cfg))


def _wsd_trials(study, rep, size, shape, n, tokens: list[int], seed: int) -> list[dict]:
    """The trunk and branch trials of one (format, N, seed) over the study's D."""
    from raysweep.train.config import resolve_config
    from raysweep.train.wsd import wsd_configs

    resolved = resolve_config({"size": size, **study.training}, study.vocab)
    sched = resolved["schedule"]  # {kind: wsd, cooldown, decay}, numbers as numbers
    base = {k: v for k, v in study.training.items() if k != "schedule"}
    if rep.estimator is not None:
        base["estimator"] = rep.estimator
    fam = wsd_configs({"size": size, "weights": rep.weights, "activations": rep.activations,
                       "seed": int(seed), "data": study.data, **base},
                      tokens, cooldown=sched["cooldown"], decay=sched["decay"],
                      warmup=resolved["warmup_frac"], vocab=study.vocab)
    trunk_leg = fam.trunk
    trunk = _trial(study, rep, size, shape, n, trunk_leg.tokens, trunk_leg.tokens / n, seed,
                   training=_leg_training(study, trunk_leg.config),
                   extra={"role": "trunk", "train_tokens": _own_tokens(trunk_leg, n),
                          "branch_points": sorted({b.branch_step for b in fam.branches})})
    out = [trunk]
    for leg in fam.branches:
        out.append(_trial(study, rep, size, shape, n, leg.tokens, leg.tokens / n, seed,
                          training=_leg_training(study, leg.config),
                          extra={"role": "branch", "trunk": trunk["run_id"],
                                 "branch_step": leg.branch_step,
                                 "train_tokens": _own_tokens(leg, n)}))
    return out


def _own_tokens(leg, n: int) -> int:
    """The tokens a leg trains itself, from its FLOPs (6 N x tokens)."""
    return int(round(leg.flops / (6.0 * n)))


# train() keys of a WSD leg that the sweep sets per trial (the rest is the study's training)
_LEG_KEYS = ("schedule", "branches", "trunk_id")


def _leg_training(study, leg_config: dict) -> dict:
    out = {k: v for k, v in study.training.items() if k != "schedule"}
    out.update({k: (list(v) if isinstance(v, tuple) else v)
                for k, v in leg_config.items() if k in _LEG_KEYS})
    return out


def _trial(study, rep, size, shape, n, tokens, ratio, seed, training: dict | None = None,
           extra: dict | None = None) -> dict:
    cfg = {
        "study": study.name, "backend": study.backend, "format": rep.name,
        "weights": rep.weights, "activations": rep.activations, "size": size,
        "n_layers": shape[0], "d_model": shape[1], "n_heads": shape[2], "n_params": n,
        "tokens": int(tokens), "tokens_per_param": float(ratio), "seed": int(seed),
        "data": study.data,
        "training": dict(study.training) if training is None else dict(training),
        **(extra or {}),
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
