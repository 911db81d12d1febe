"""``train(config, report)``: one training run as a pure function (``raysweep train``: cli.py).

The same function runs in a unit test (``report`` appends to a list), under Ray
Tune (``report=ray.tune.report``) and from the command line. It returns the
result row of the results table (docs/architecture.md "Interfaces": Training).

The recipe (Panferov et al. 2025, training setup; docs/cpu-scale.md for the
tiny-model defaults):

1. AdamW, betas (0.9, 0.95), eps 1e-8; weight decay 0.1 on the weight matrices
   of every linear layer (attention, MLP, and the output head, which is a
   linear map too); none on the embedding and the norm gains.
2. Peak LR from :func:`raysweep.train.sizes.default_lr` (paper table for presets,
   ``3e-3 * sqrt(128 / d_model)`` for tiny sizes) unless ``lr`` is given;
   linear warm-up over ``warmup_frac`` (10%) of the steps, then cosine to peak / 10;
   or warmup-stable-decay (``schedule: {kind: wsd}``, trunks and cooldown branches:
   :mod:`raysweep.train.wsd`).
3. Gradient clipping at global norm 1.0; bf16 autocast on CUDA, fp32 on CPU.
4. D = ``tokens`` or ``tokens_per_param * N`` (default 20 tokens per
   parameter), trained as ``ceil(D / (batch_size * seq_len))`` steps; the row's
   ``tokens`` is what was actually trained (within one batch of D) and
   ``flops = 6 N tokens``. Batch 8 x 128 tokens on CPU (loss is step-limited at
   tiny scale, docs/cpu-scale.md), 16 x 512 on CUDA.
5. Every ``eval_every`` steps (default: a tenth of the run) the mean validation
   loss on ``eval_batches`` fixed batches is reported; the final loss uses
   ``final_eval_batches`` batches of 8 fixed windows (16: 128 windows, 16k
   tokens at seq 128), the same windows whatever the batch size.

The step itself stays lean: no ``.item()`` between evals (the training loss is
summed on the device and read at eval time, which is also where a non-finite
loss is detected: the run then stops with status ``"diverged"``, NaN losses
and a message; it does not raise). With ``checkpoint_dir`` set, model,
optimizer, RNG state and counters are saved to ``state.pt`` (atomically)
every ``checkpoint_every`` steps and a later call resumes from it; batches
depend only on (seed, step), so a resumed CPU run is bit-identical to an
uninterrupted one.

The config is a frozen :class:`~raysweep.train.config.TrainConfig`, resolved
once and never written to; what the run derives from it lives in the run's own
objects. :func:`train` is a sequence of named phases: :func:`_setup` (corpus,
threads, device, representations), :func:`_build` (model, optimizer, step
plan), :func:`_restore` (the checkpoint, if any), :func:`_step_loop` (training
steps, with :func:`_at_sync` at every eval / checkpoint step),
:func:`_final_eval`, :func:`_result_row` and the final :func:`_done_report`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

from raysweep.atomic import atomic_write
from raysweep.errors import RaysweepError
from raysweep.results import run_flops, run_id
from raysweep.train.config import TrainConfig
from raysweep.train.wsd import branch_checkpoint, branch_step, wsd_lr

ROW_KEYS = ("n_params", "n_layers", "d_model", "tokens", "tokens_per_param", "seed", "weights",
            "activations", "loss", "train_loss", "gmse_weights", "gmse_activations",
            "bits_weights", "bits_activations", "flops", "wall_s", "tokens_per_s", "status",
            "error", "data_hash", "trunk_id", "branch_step", "cooldown", "schedule", "role")

COMPILE_WARMUP_STEPS = 3  # steps of a compiled run left out of its tokens/s
FINAL_EVAL_BATCH = 8  # windows per final-eval batch (independent of batch_size)

# config keys a checkpoint may differ in and still be resumed (where and how often)
_UNFINGERPRINTED = frozenset({"checkpoint_dir", "checkpoint_every", "threads", "device",
                              "run_id", "study", "format", "eval_every", "eval_batches",
                              "trunk_dir", "trunk_id"})
# ... and the keys a trunk's branch-point checkpoint may differ in from its branches
_BRANCH_FREE = frozenset({"tokens", "tokens_per_param", "branches"})

__all__ = ["ROW_KEYS", "TrainConfig", "train"]


# --------------------------------------------------------------------------- helpers


def rep_info(spec: str) -> tuple[float, float, bool]:
    """(gmse, bits_per_element, is_identity) of a spec via :func:`raysweep.formats.parse`."""
    from raysweep.formats import parse

    rep = parse(spec)
    return float(rep.gmse().value), float(rep.bits_per_element), bool(rep.is_identity)


def lr_at(step: int, steps: int, peak: float, warmup: int, final_frac: float = 0.1) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine to ``peak * final_frac``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on linear weight matrices (incl. the head), none elsewhere."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 2 and not name.startswith("embed.") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@dataclasses.dataclass(frozen=True)
class Reps:
    """What a run needs to know of its two representation specs (:func:`rep_info`)."""

    gmse_weights: float
    bits_weights: float
    w_identity: bool
    gmse_activations: float
    bits_activations: float
    a_identity: bool

    @classmethod
    def of(cls, cfg: TrainConfig) -> Reps:
        return cls(*rep_info(cfg.weights), *rep_info(cfg.activations))

    @property
    def dense(self) -> bool:
        """Both specs are the identity: the model keeps its plain linears."""
        return self.w_identity and self.a_identity


def _fingerprint(cfg: TrainConfig, reps: Reps) -> dict:
    """The config keys that must match for a checkpoint to be resumed.

    The resolved config's keys (less :data:`_UNFINGERPRINTED`) in order, then
    ``_w_identity`` and ``_a_identity``: the dict checkpoints have always held.
    """
    fp = {k: v for k, v in cfg.to_dict().items() if k not in _UNFINGERPRINTED}
    fp["_w_identity"], fp["_a_identity"] = reps.w_identity, reps.a_identity
    return fp


def _branch_fingerprint(cfg: TrainConfig, reps: Reps) -> dict:
    """What a branch and its trunk share: :func:`_fingerprint` less D and the branch list."""
    return {k: v for k, v in _fingerprint(cfg, reps).items() if k not in _BRANCH_FREE}


def _differing(a: dict, b: dict) -> str:
    return ", ".join(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))


def _save(path: str, state: dict) -> None:
    import torch

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def resolve_device(name: str | None) -> str:
    """The torch device name of the ``device`` key: cuda when available unless given."""
    import torch

    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RaysweepError(f"config key 'device': {name!r} but torch sees no GPU; "
                            "allowed here: cpu")
    return name


def build_model(cfg: TrainConfig, vocab: int, device, dense: bool | None = None):
    """The model of ``cfg`` on ``device``, with compressed linears unless ``dense``.

    ``dense`` (both specs the identity) is worked out from ``cfg`` when not given.
    """
    import torch

    from raysweep.train.model import GPT, is_compressible

    if dense is None:
        dense = Reps.of(cfg).dense
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.n_layers, cfg.d_model, cfg.n_heads, vocab).to(device)
    if not dense:
        from raysweep.train.layers import convert_linears

        convert_linears(model, cfg.weights, cfg.activations, filter_fn=is_compressible,
                        estimator=cfg.estimator, backend=cfg.backend)
    return model


def evaluate(model, batches, device, autocast) -> float:
    """Mean loss over fixed batches (one sync at the end)."""
    import torch

    model.eval()
    total = torch.zeros((), device=device)
    with torch.no_grad(), autocast():
        for x, y in batches:
            total += model(x, y).float()
    model.train()
    return float(total) / len(batches)


# --------------------------------------------------------------------------- run state


@dataclasses.dataclass(frozen=True)
class Plan:
    """The step budget of a run: D tokens as steps, warm-up, eval and checkpoint period.

    WSD (:mod:`raysweep.train.wsd`): ``decay_start`` is the step where the
    cooldown starts (the branch point); a trunk trains ``steps = decay_start``
    steps of its D at constant LR and saves a checkpoint at each of its
    ``branch_points``; a branch starts at ``decay_start`` from its trunk's.
    """

    n_params: int
    steps: int
    warmup: int
    eval_every: int
    ckpt_every: int
    decay_start: int | None = None  # WSD only
    decay: str = ""
    branch_points: tuple[int, ...] = ()  # a trunk's
    role: str = "run"

    @classmethod
    def of(cls, cfg: TrainConfig, n_params: int) -> Plan:
        tps = cfg.batch_size * cfg.seq_len
        tokens_target = cfg.tokens or int(round(cfg.tokens_per_param * n_params))
        steps = max(1, math.ceil(tokens_target / tps))
        if not cfg.wsd:
            eval_every = cfg.eval_every or max(1, steps // 10)
            return cls(n_params, steps, int(cfg.warmup_frac * steps), eval_every,
                       cfg.checkpoint_every or eval_every)
        sched = cfg.schedule
        start = branch_step(steps, sched["cooldown"])
        if "warmup_tokens" in sched:
            warmup = sched["warmup_tokens"] // tps
        else:
            warmup = int(cfg.warmup_frac * steps)
        role, points = ("branch" if cfg.trunk_dir or cfg.trunk_id else "run"), ()
        if cfg.branches is not None:
            if cfg.checkpoint_dir is None:  # checked here: a trunk is priced without one
                raise RaysweepError(f"config key 'branches': got {list(cfg.branches)}: a trunk "
                                    "needs checkpoint_dir (where its branch-point checkpoints "
                                    "go); allowed: branches with checkpoint_dir")
            if cfg.branches[-1] > tokens_target:
                raise RaysweepError(f"config key 'branches': got {list(cfg.branches)}: more "
                                    f"than the trunk's {tokens_target} tokens; allowed: "
                                    f"token counts <= {tokens_target}")
            points = tuple(sorted({branch_step(max(1, math.ceil(d / tps)), sched["cooldown"])
                                   for d in cfg.branches} | {start}))
            if start < 1:
                raise RaysweepError(f"config key 'schedule.cooldown': a trunk of {steps} steps "
                                    "has no constant-LR phase; allowed: a cooldown leaving "
                                    "at least one step")
            role, steps = "trunk", start
        if warmup > min(points or (start,)):
            raise RaysweepError(f"config key 'schedule.warmup_tokens': the warm-up ({warmup} "
                                f"steps) outlasts the constant phase (the cooldown starts at "
                                f"step {min(points or (start,))}); allowed: a shorter warm-up")
        eval_every = cfg.eval_every or max(1, steps // 10)
        return cls(n_params, steps, warmup, eval_every, cfg.checkpoint_every or eval_every,
                   start, sched["decay"], points, role)

    def lr(self, step: int, peak: float) -> float:
        """The scheduled LR of 0-based ``step``: :func:`lr_at` (cosine) or :func:`wsd_lr`."""
        if self.decay_start is None:
            return lr_at(step, self.steps, peak, self.warmup)
        return wsd_lr(step, peak, self.warmup, self.decay_start, self.steps, self.decay)


@dataclasses.dataclass(frozen=True)
class _Run:
    """What a run set up: fixed for its duration (the model's weights change, not the objects)."""

    cfg: TrainConfig
    t_start: float
    corpus: Any
    device: Any
    reps: Reps
    model: Any = None
    fwd: Any = None
    opt: Any = None
    plan: Plan | None = None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def ckpt(self) -> str | None:
        d = self.cfg.checkpoint_dir
        return os.path.join(d, "state.pt") if d else None

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.seq_len

    def autocast(self):
        if self.cuda:
            import torch

            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def wall_s(self, prev_wall: float) -> float:
        return prev_wall + time.perf_counter() - self.t_start


@dataclasses.dataclass
class _Progress:
    """What changes as a run trains: counters, loss accumulators, status."""

    loss_sum: Any  # a 0-d tensor on the device: summed without a sync
    step: int = 0
    prev_wall: float = 0.0  # wall seconds of the runs before a resume
    loss_n: int = 0
    last_train: float = float("nan")
    status: str = "ok"
    error: str | None = None
    train_time: float = 0.0  # seconds in training steps (not evals), this call
    t_mark: float = 0.0  # train_time at the last report
    tok_mark: int = 0  # step at the last report
    step0: int = 0  # step this call started from (after a compiled model's warm-up)
    sync_pending: bool = False  # a branch starts on a step its twin from scratch synced at
    trunk_id: str | None = None  # a branch's trunk (from the trunk's checkpoint)


# --------------------------------------------------------------------------- phases


def _setup(cfg: TrainConfig, t_start: float) -> _Run:
    """Phase 1: the corpus (checked against seq_len), threads, device, representations."""
    import torch

    from raysweep.train.data import check_lengths, load_corpus

    corpus = load_corpus(cfg.data)
    check_lengths(corpus, cfg.seq_len)
    torch.set_num_threads(cfg.threads)
    device = torch.device(resolve_device(cfg.device))
    return _Run(cfg, t_start, corpus, device, Reps.of(cfg))


def _build(run: _Run) -> _Run:
    """Phase 2: the model (compiled if asked), the step plan and AdamW."""
    import torch

    cfg = run.cfg
    model = build_model(cfg, run.corpus.vocab, run.device, dense=run.reps.dense)
    # compile: True (inductor's default mode) or "reduce-overhead" (CUDA graphs on a GPU)
    fwd = (torch.compile(model, mode=cfg.compile if isinstance(cfg.compile, str) else None)
           if cfg.compile else model)
    plan = Plan.of(cfg, model.param_counts()["non_embedding"])
    opt = torch.optim.AdamW(optimizer_groups(model, cfg.weight_decay), lr=cfg.lr,
                            betas=(0.9, 0.95), eps=1e-8, fused=run.cuda or None)
    return dataclasses.replace(run, model=model, fwd=fwd, opt=opt, plan=plan)


def _restore(run: _Run) -> _Progress:
    """Phase 3: fresh counters, or those of the checkpoint (model, optimizer, RNG too)."""
    import torch

    p = _Progress(loss_sum=torch.zeros((), device=run.device))
    state = _load_checkpoint(run.ckpt) if run.ckpt and os.path.exists(run.ckpt) else None
    if state is None:
        return _restore_branch(run, p) if run.plan.role == "branch" else p
    mine, theirs = _fingerprint(run.cfg, run.reps), state.get("fingerprint")
    if theirs != mine:
        raise RaysweepError(f"checkpoint_dir: {run.ckpt} was written by a different config "
                            f"(keys differ: {_differing(theirs or {}, mine)}); use a fresh "
                            "checkpoint_dir")
    _load_state(run, p, state)
    p.prev_wall = state["wall_s"]
    return p


def _load_state(run: _Run, p: _Progress, state: dict) -> None:
    """Model, optimizer, RNG, step and loss accumulators of a checkpoint into the run."""
    import torch

    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optim"])
    torch.set_rng_state(state["rng_cpu"])
    if run.cuda and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"])
    p.step = state["step"]
    p.loss_sum.copy_(state["loss_sum"].to(run.device))
    p.loss_n, p.last_train = state["loss_n"], state["last_train"]
    p.tok_mark = p.step0 = p.step
    p.trunk_id = state.get("trunk_id")


def _restore_branch(run: _Run, p: _Progress) -> _Progress:
    """A branch's start: its trunk's checkpoint at the branch point (an error if missing).

    The trunk saved it right after the branch point's step, before any sync of
    its own; if the branch's twin from scratch syncs at that step, the branch
    does too (``sync_pending``), so the two stay bit-identical. The branch's
    ``wall_s`` counts its own time only.
    """
    import torch

    cfg, start = run.cfg, run.plan.decay_start
    if start == 0:  # no constant-LR phase: the branch is its own run from scratch
        return p
    if cfg.trunk_dir is None:
        raise RaysweepError(f"config key 'trunk_dir': missing; a branch (trunk_id "
                            f"{cfg.trunk_id!r}) resumes its trunk's checkpoint at step {start}; "
                            "allowed: the trunk's checkpoint_dir")
    path = branch_checkpoint(cfg.trunk_dir, start)
    if not os.path.exists(path):
        raise RaysweepError(f"config key 'trunk_dir': no trunk checkpoint at this branch's "
                            f"branch point (step {start}): {path} does not exist (the trunk "
                            f"has not reached it yet, diverged before, or trains other "
                            f"branches); allowed: "
                            f"the checkpoint_dir of a WSD trunk whose branches include "
                            f"{cfg.tokens or 'these'} tokens")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        missing = [k for k in (*CHECKPOINT_KEYS, "branch_fingerprint", "warmup") if k not in state]
        if missing:
            raise ValueError(f"missing {missing}")
    except Exception as exc:  # noqa: BLE001 - zip, pickle, EOF and our own errors alike
        why = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise RaysweepError(f"config key 'trunk_dir': trunk checkpoint {path} could not be "
                            f"loaded ({type(exc).__name__}: {why}); allowed: a trunk "
                            "checkpoint_dir written by raysweep") from None
    mine = _branch_fingerprint(cfg, run.reps)
    if state["branch_fingerprint"] != mine:
        raise RaysweepError(f"config key 'trunk_dir': {path} was written by a trunk of a "
                            f"different config (keys differ: "
                            f"{_differing(state['branch_fingerprint'], mine)}); allowed: the "
                            "trunk of this run's config")
    if state["warmup"] != run.plan.warmup or state["step"] != start:
        raise RaysweepError(f"config key 'schedule.warmup_tokens': the trunk warmed up over "
                            f"{state['warmup']} steps, this branch would over "
                            f"{run.plan.warmup}; allowed: the trunk's warm-up (give "
                            "schedule.warmup_tokens, as raysweep.train.wsd.wsd_configs does)")
    _load_state(run, p, state)
    p.sync_pending = not (start % run.plan.eval_every and start % run.plan.ckpt_every)
    return p


CHECKPOINT_KEYS = ("fingerprint", "step", "model", "optim", "rng_cpu", "loss_sum", "loss_n",
                   "last_train", "wall_s")


def _load_checkpoint(path: str) -> dict | None:
    """The checkpoint's state, or None after moving a corrupt one aside (with a warning).

    A truncated or garbled ``state.pt`` (a full disk, a killed copy) would fail its
    trial on every attempt and every re-run; it is renamed ``state.pt.corrupt-<time>``
    (kept for inspection, not deleted) and the run starts from scratch.
    """
    import warnings

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        missing = [k for k in CHECKPOINT_KEYS if k not in state]
        if missing:
            raise ValueError(f"missing {missing}")
    except Exception as exc:  # noqa: BLE001 - zip, pickle, EOF and our own errors alike
        aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(path, aside)
        why = " ".join(str(exc).split())[:160] or type(exc).__name__
        warnings.warn(f"checkpoint {path} could not be loaded ({type(exc).__name__}: {why}); "
                      f"moved aside to {aside}, training this run from scratch", stacklevel=2)
        return None
    return state


def _batch_source(run: _Run) -> Callable:
    """``step -> (x, y)``: gathered on the GPU under CUDA, drawn on the host otherwise."""
    from raysweep.train.data import DeviceBatches, train_batch

    cfg = run.cfg
    if run.cuda:
        return DeviceBatches(run.corpus, cfg.seed, cfg.batch_size, cfg.seq_len, run.device)

    def next_batch(i):
        return train_batch(run.corpus, i, cfg.seed, cfg.batch_size, cfg.seq_len)

    return next_batch


def _train_step(run: _Run, p: _Progress, next_batch: Callable) -> None:
    """One optimizer step at the scheduled LR; the loss is summed on the device (no sync)."""
    import torch

    cfg, opt = run.cfg, run.opt
    for g in opt.param_groups:
        g["lr"] = run.plan.lr(p.step, cfg.lr)
    x, y = next_batch(p.step)
    with run.autocast():
        loss = run.fwd(x, y)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip, foreach=True)
    opt.step()
    opt.zero_grad(set_to_none=True)
    p.loss_sum += loss.detach().float()
    p.loss_n += 1
    p.step += 1


def _step_loop(run: _Run, p: _Progress, report: Callable[[dict], None] | None) -> None:
    """Phase 4: train to the planned step, syncing only at eval / checkpoint steps."""
    from raysweep.train.data import val_batches

    cfg, plan = run.cfg, run.plan
    val_eval = [(x.to(run.device), y.to(run.device))
                for x, y in val_batches(run.corpus, cfg.eval_batches, cfg.batch_size,
                                        cfg.seq_len)]
    next_batch = _batch_source(run)
    if p.sync_pending:  # a branch, on the branch point's sync
        p.sync_pending = False
        if not _at_sync(run, p, val_eval, report):
            return
    # a compiled model's first steps compile (and record CUDA graphs): not throughput
    warm = COMPILE_WARMUP_STEPS if cfg.compile and plan.steps - p.step > 2 * COMPILE_WARMUP_STEPS \
        else 0
    while p.step < plan.steps:
        t0 = time.perf_counter()
        _train_step(run, p, next_batch)
        if warm:
            warm -= 1
            p.step0 = p.tok_mark = p.step
        else:
            p.train_time += time.perf_counter() - t0
        if p.step % plan.eval_every and p.step % plan.ckpt_every and p.step != plan.steps \
                and p.step not in plan.branch_points:
            continue
        if not _at_sync(run, p, val_eval, report):
            break


def _at_sync(run: _Run, p: _Progress, val_eval: list, report) -> bool:
    """An eval / checkpoint / branch-point step: read the training loss (stop if
    non-finite), save, report.

    A trunk's branch-point checkpoint is saved first, with the loss accumulators
    as they are (a branch's twin from scratch need not sync at that step).
    """
    plan, step = run.plan, p.step
    mean = float(p.loss_sum) / max(1, p.loss_n)  # one sync per eval / checkpoint
    if not math.isfinite(mean):
        p.last_train = mean
        p.status = "diverged"
        p.error = (f"non-finite training loss by step {step} of {plan.steps} "
                   f"(lr={run.cfg.lr:.3g}); stopped")
        return False
    if step in plan.branch_points:
        _save_state(run, p, branch_checkpoint(run.cfg.checkpoint_dir, step))
    if step % plan.eval_every and step % plan.ckpt_every and step != plan.steps:
        return True  # a branch point only
    p.last_train = mean
    p.loss_sum.zero_()
    p.loss_n = 0
    if run.ckpt and (step % plan.ckpt_every == 0 or step == plan.steps):
        _save_state(run, p)
    if step % plan.eval_every == 0 and step != plan.steps and report is not None:
        val = evaluate(run.fwd, val_eval, run.device, run.autocast)
        tps = (step - p.tok_mark) * run.tokens_per_step / max(1e-9, p.train_time - p.t_mark)
        p.t_mark, p.tok_mark = p.train_time, step
        report({"step": step, "tokens": step * run.tokens_per_step,
                "train_loss": p.last_train, "val_loss": val, "tokens_per_s": tps})
    return True


def _save_state(run: _Run, p: _Progress, path: str | None = None) -> None:
    """The resume checkpoint (``state.pt``), or a trunk's branch-point one at ``path``.

    Both hold :data:`CHECKPOINT_KEYS` (and ``rng_cuda``); a WSD run's also its
    trunk's id, the branch fingerprint and the warm-up steps a branch checks.
    """
    import torch

    state = {"fingerprint": _fingerprint(run.cfg, run.reps), "step": p.step,
             "model": run.model.state_dict(), "optim": run.opt.state_dict(),
             "rng_cpu": torch.get_rng_state(),
             "rng_cuda": torch.cuda.get_rng_state() if run.cuda else None,
             "loss_sum": p.loss_sum, "loss_n": p.loss_n, "last_train": p.last_train,
             "wall_s": run.wall_s(p.prev_wall)}
    if run.cfg.wsd:
        state.update(trunk_id=_trunk_id(run, p), warmup=run.plan.warmup,
                     branch_fingerprint=_branch_fingerprint(run.cfg, run.reps))
    _save(path or run.ckpt, state)


def _trunk_id(run: _Run, p: _Progress) -> str:
    """The trunk's run id: a trunk's own (its label, else the hash of its config), a
    branch's from its config or its trunk's checkpoint, "" for other runs."""
    cfg = run.cfg
    if run.plan.role == "trunk":
        return cfg.run_id or run_id(cfg.to_dict())
    if run.plan.role == "branch":
        return cfg.trunk_id or p.trunk_id or ""
    return ""


def _final_eval(run: _Run, p: _Progress) -> float:
    """Phase 5: the validation loss of a finished run (NaN, train loss too, if it diverged)."""
    from raysweep.train.data import val_batches

    if p.status != "ok":
        p.last_train = float("nan")
        return float("nan")
    # fixed batches of 8 windows whatever batch_size is: every run of a study
    # (and every batch size) is scored on the same windows
    final = val_batches(run.corpus, run.cfg.final_eval_batches, FINAL_EVAL_BATCH,
                        run.cfg.seq_len)
    loss = evaluate(run.fwd, [(x.to(run.device), y.to(run.device)) for x, y in final],
                    run.device, run.autocast)
    if not math.isfinite(loss):
        p.status = "diverged"
        p.error = f"non-finite validation loss after {run.plan.steps} steps"
        loss = float("nan")
    return loss


def _result_row(run: _Run, p: _Progress, loss: float) -> dict:
    """Phase 6: the result row (:data:`ROW_KEYS`, extras, and the config's labels)."""
    cfg, reps, n_params = run.cfg, run.reps, run.plan.n_params
    # what was trained: a diverged run stopped at ``step`` (resumed steps included),
    # so tokens, tokens_per_param and flops count those steps, not the planned ones
    tokens = p.step * run.tokens_per_step
    row = {
        "n_params": n_params, "n_layers": cfg.n_layers, "d_model": cfg.d_model,
        "tokens": tokens,
        "tokens_per_param": tokens / n_params,
        "seed": cfg.seed, "weights": cfg.weights, "activations": cfg.activations,
        "loss": loss, "train_loss": p.last_train,
        "gmse_weights": reps.gmse_weights, "gmse_activations": reps.gmse_activations,
        "bits_weights": reps.bits_weights, "bits_activations": reps.bits_activations,
        "flops": run_flops(n_params, tokens),
        "wall_s": run.wall_s(p.prev_wall),
        "tokens_per_s": (p.step - p.step0) * run.tokens_per_step / max(1e-9, p.train_time),
        "status": p.status, "error": p.error, "data_hash": run.corpus.hash,
        # WSD (raysweep.train.wsd); a trunk's row is at constant LR: role "trunk"
        "trunk_id": _trunk_id(run, p),
        "branch_step": run.plan.decay_start if run.plan.role == "branch" else None,
        "cooldown": cfg.schedule["cooldown"] if cfg.wsd else None,
        "schedule": "wsd" if cfg.wsd else "cosine", "role": run.plan.role,
        # extras (not part of the contract, handy in tables)
        "n_heads": cfg.n_heads, "size": cfg.size, "data": cfg.data, "steps": p.step,
        "steps_planned": run.plan.steps, "tokens_per_param_target": cfg.tokens_per_param,
        "lr": cfg.lr, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
        "device": str(run.device), "estimator": cfg.estimator, "backend": cfg.backend,
        # what this run trained itself: a branch only its cooldown (flops: a run of its D)
        "flops_own": run_flops(n_params, (p.step - (run.plan.decay_start or 0)
                                          if run.plan.role == "branch" else p.step)
                               * run.tokens_per_step),
    }
    for k in ("run_id", "study", "format"):
        if getattr(cfg, k) is not None:
            row[k] = getattr(cfg, k)
    return row


def _done_report(row: dict, p: _Progress) -> dict:
    """Phase 7: the last ``report()`` of a run (``done=True``)."""
    return {"step": p.step, "tokens": row["tokens"], "train_loss": p.last_train,
            "val_loss": row["loss"], "tokens_per_s": row["tokens_per_s"], "loss": row["loss"],
            "status": p.status, "done": True}


# --------------------------------------------------------------------------- train


def train(config: dict | TrainConfig, report: Callable[[dict], None] | None = None) -> dict:
    """Train one model as ``config`` says; return the result row (see module docstring).

    ``config`` is a dict of training keys or a :class:`TrainConfig`; it is
    resolved once (bad keys fail before any work) and never written to.
    """
    t_start = time.perf_counter()
    cfg = TrainConfig.resolve(config)
    run = _build(_setup(cfg, t_start))
    progress = _restore(run)
    _step_loop(run, progress, report)
    loss = _final_eval(run, progress)
    row = _result_row(run, progress, loss)
    if report is not None:
        report(_done_report(row, progress))
    return row
