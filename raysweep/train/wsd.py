"""Warmup-stable-decay (WSD) schedules, trunks and cooldown branches (torch-free).

A WSD run of D tokens trains ``S = ceil(D / (batch_size * seq_len))`` steps:
linear warm-up over ``W`` steps, the peak LR until the *branch point*
``B = S - round(cooldown * S)``, then a decay over the last ``C = S - B`` steps
to 0 (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond
Fixed Training Durations": linear or 1-sqrt cooldowns to zero). Up to ``B`` the
schedule does not depend on D, so one *trunk* trained at constant LR to the
branch point of the largest D can be *branched* at the branch point of every
smaller D: a branch resumes the trunk's checkpoint at its own ``B`` and decays
for its ``C`` steps, and ends bit-exact (on CPU) where a WSD run of its D from
scratch would. That needs a warm-up that does not depend on D either:
:func:`wsd_configs` writes it as ``schedule.warmup_tokens`` (the warm-up
fraction of the shortest D), the same in the trunk, every branch and the
from-scratch twin.

This module holds the schedule's arithmetic (:func:`cooldown_steps`,
:func:`branch_step`, :func:`decay_factor`, :func:`wsd_lr`), the row roles
(:data:`ROLES`; the schedule names live with the config keys in
:mod:`raysweep.train.config` and are re-exported here), the trunk's checkpoint
file names (:func:`branch_checkpoint`) and :func:`wsd_configs`, which expands
one (format, N, seed) and a list of D into a trunk config and branch configs,
with run ids, branch points and FLOPs both ways (the sweep prices and expands
studies with it). docs/training.md, "Warmup-stable-decay", is the contract.
"""

from __future__ import annotations

import dataclasses
import math
import os

from raysweep.errors import RaysweepError
from raysweep.results import ROLES, run_flops, run_id
from raysweep.train.config import (
    DECAYS,
    DEFAULT_COOLDOWN,
    DEFAULT_DECAY,
    SCHEDULE_KINDS,
    TrainConfig,
)
from raysweep.train.sizes import count_params

__all__ = ["DECAYS", "DEFAULT_COOLDOWN", "DEFAULT_DECAY", "ROLES", "SCHEDULE_KINDS", "Leg",
           "WsdFamily", "branch_checkpoint", "branch_step", "cooldown_steps", "decay_factor",
           "wsd_configs", "wsd_lr"]
# a row's role: :data:`raysweep.results.ROLES` (run, trunk, branch)


def cooldown_steps(steps: int, cooldown: float) -> int:
    """``C``: the decay's steps in a WSD run of ``steps`` steps, ``round(cooldown * steps)``.

    Rounded half up (``floor(x + 0.5)``), so the count does not depend on
    Python's round-half-to-even.
    """
    return min(steps, int(math.floor(cooldown * steps + 0.5)))


def branch_step(steps: int, cooldown: float) -> int:
    """``B = steps - C``: the step where the cooldown of a WSD run of ``steps`` steps starts."""
    return steps - cooldown_steps(steps, cooldown)


def decay_factor(u: float, decay: str) -> float:
    """The LR multiplier at cooldown progress ``u`` in [0, 1]: 1 at u = 0, 0 at u = 1.

    ``linear``: 1 - u; ``sqrt``: 1 - sqrt(u); ``cosine``: (1 + cos(pi u)) / 2.
    """
    if decay == "linear":
        return 1.0 - u
    if decay == "sqrt":
        return 1.0 - math.sqrt(u)
    if decay == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * u))
    raise RaysweepError(f"config key 'schedule.decay': got {decay!r}; allowed: "
                        f"{', '.join(DECAYS)}")


def wsd_lr(step: int, peak: float, warmup: int, decay_start: int, steps: int,
           decay: str) -> float:
    """The WSD learning rate of 0-based ``step``.

    Linear warm-up ``peak * (step + 1) / warmup`` for ``step < warmup`` (as the
    cosine schedule's), ``peak`` until ``decay_start``, then
    ``peak * decay_factor((step - decay_start + 1) / (C + 1))`` with
    ``C = steps - decay_start``: every cooldown step trains below the peak and
    above 0, and the LR would reach 0 one step after the last.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    if step < decay_start:
        return peak
    return peak * decay_factor((step - decay_start + 1) / (steps - decay_start + 1), decay)


def branch_checkpoint(trunk_dir: str, step: int) -> str:
    """The path of a trunk's branch-point checkpoint at ``step`` (kept, never overwritten)."""
    return os.path.join(trunk_dir, f"branch-{step:09d}.pt")


# ----------------------------------------------------------------- trunk and branches


@dataclasses.dataclass(frozen=True)
class Leg:
    """One run of a WSD family: the trunk, a branch, or a from-scratch twin.

    ``config`` is a train() config; ``run_id`` its id (:func:`run_id` of the
    resolved config, as ``raysweep train`` labels it); ``steps`` the steps its
    schedule plans (a trunk's: its last branch point); ``branch_step`` where
    its cooldown starts; ``flops`` what it trains itself (a branch: its
    cooldown only), ``flops_equivalent`` the FLOPs of a run of its D (a trunk:
    its own).
    """

    role: str
    tokens: int
    config: dict
    run_id: str
    steps: int
    branch_step: int
    flops: float
    flops_equivalent: float


@dataclasses.dataclass(frozen=True)
class WsdFamily:
    """A trunk, its branches (by increasing D) and the separate runs they stand for.

    ``flops``: trunk plus the branches' cooldowns; ``flops_separate``: the same
    D trained as separate runs from scratch (each ``6 N D``); ``saving``:
    ``1 - flops / flops_separate``.
    """

    n_params: int
    trunk: Leg
    branches: tuple[Leg, ...]
    separate: tuple[Leg, ...]

    @property
    def flops(self) -> float:
        return self.trunk.flops + sum(b.flops for b in self.branches)

    @property
    def flops_separate(self) -> float:
        return sum(s.flops for s in self.separate)

    @property
    def saving(self) -> float:
        return 1.0 - self.flops / self.flops_separate


def wsd_configs(config: dict, tokens: list[int], cooldown: float = DEFAULT_COOLDOWN,
                decay: str = DEFAULT_DECAY, warmup: float | None = None,
                trunk_dir: str | None = None, vocab: int = 256) -> WsdFamily:
    """The trunk, branch and from-scratch configs of one (format, N, seed) over ``tokens``.

    ``config`` is a train() config without ``tokens`` / ``tokens_per_param`` /
    ``schedule`` (its size, specs, seed, data, batch and the rest are shared);
    ``tokens`` the D to branch at; ``warmup`` the warm-up fraction of the
    shortest D (default: the config's ``warmup_frac``), written as
    ``schedule.warmup_tokens`` so every leg warms up alike. The trunk gets
    ``tokens = max(D)``, ``branches`` = the other D and ``checkpoint_dir =
    trunk_dir``; each branch ``trunk_dir`` and ``trunk_id`` (the trunk's run id).
    Run ids (:func:`run_id` of the resolved config, as ``raysweep train`` labels a
    run) leave ``trunk_dir`` and ``checkpoint_dir`` out: where, not what.
    """
    for key in ("tokens", "tokens_per_param", "schedule", "branches", "trunk_dir", "trunk_id"):
        if key in config:
            raise RaysweepError(f"wsd_configs: config key {key!r} is set by wsd_configs; "
                                "allowed: a config without it")
    if not tokens:
        raise RaysweepError("wsd_configs: tokens: got an empty list; allowed: token counts "
                            ">= 1")
    ds = sorted({int(d) for d in tokens})
    base = TrainConfig.resolve({**config, "tokens": ds[-1]}, vocab)
    frac = base.warmup_frac if warmup is None else warmup
    schedule = {"kind": "wsd", "cooldown": cooldown, "decay": decay,
                "warmup_tokens": int(math.floor(frac * ds[0] + 0.5))}
    tps = base.batch_size * base.seq_len
    n = count_params(base.n_layers, base.d_model, base.n_heads, vocab)

    def leg(role, d, cfg, steps_run, b):
        rid = run_id(TrainConfig.resolve(cfg, vocab).to_dict())
        s = math.ceil(d / tps)
        own = (steps_run - b) if role == "branch" else steps_run
        return Leg(role, d, cfg, rid, steps_run, b, run_flops(n, own * tps),
                   run_flops(n, (steps_run if role == "trunk" else s) * tps))

    common = {**config, "schedule": schedule}
    steps = {d: math.ceil(d / tps) for d in ds}
    bsteps = {d: branch_step(steps[d], cooldown) for d in ds}
    trunk_cfg = {**common, "tokens": ds[-1]}
    if len(ds) > 1:
        trunk_cfg["branches"] = ds[:-1]
    if trunk_dir is not None:
        trunk_cfg["checkpoint_dir"] = trunk_dir
    trunk = leg("trunk", ds[-1], trunk_cfg, bsteps[ds[-1]], bsteps[ds[-1]])
    branches, separate = [], []
    for d in ds:
        bcfg = {**common, "tokens": d, "trunk_id": trunk.run_id}
        if trunk_dir is not None:
            bcfg["trunk_dir"] = trunk_dir
        branches.append(leg("branch", d, bcfg, steps[d], bsteps[d]))
        separate.append(leg("run", d, {**common, "tokens": d}, steps[d], bsteps[d]))
    return WsdFamily(n, trunk, tuple(branches), tuple(separate))
