"""``train(config, report)``: one training run as a pure function, and ``raysweep train``.

The same function runs in a unit test (``report`` appends to a list), under Ray
Tune (``report=ray.tune.report``) and from the command line. It returns the
result row of the results table (architecture.md "Interfaces": Training).

The recipe (paper.md §4; cpu-scale.md for the tiny-model defaults):

1. AdamW, betas (0.9, 0.95), eps 1e-8; weight decay 0.1 on the weight matrices
   of every linear layer (attention, MLP, and the output head, which is a
   linear map too); none on the embedding and the norm gains.
2. Peak LR from :func:`raysweep.train.sizes.default_lr` (paper table for presets,
   ``3e-3 * sqrt(128 / d_model)`` for tiny sizes) unless ``lr`` is given;
   linear warm-up over ``warmup_frac`` (10%) of the steps, then cosine to peak / 10.
3. Gradient clipping at global norm 1.0; bf16 autocast on CUDA, fp32 on CPU.
4. D = ``tokens`` or ``tokens_per_param * N`` (default 20 tokens per
   parameter), trained as ``ceil(D / (batch_size * seq_len))`` steps; the row's
   ``tokens`` is what was actually trained (within one batch of D) and
   ``flops = 6 N tokens``. Batch 8 x 128 tokens on CPU (loss is step-limited at
   tiny scale, cpu-scale.md), 16 x 512 on CUDA.
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
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable

from raysweep.atomic import atomic_write
from raysweep.errors import RaysweepError
from raysweep.results import run_flops
from raysweep.train.config import resolve_config

ROW_KEYS = ("n_params", "n_layers", "d_model", "tokens", "tokens_per_param", "seed", "weights",
            "activations", "loss", "train_loss", "gmse_weights", "gmse_activations",
            "bits_weights", "bits_activations", "flops", "wall_s", "tokens_per_s", "status",
            "error", "data_hash")

FINAL_EVAL_BATCH = 8  # windows per final-eval batch (independent of batch_size)

__all__ = ["ROW_KEYS", "train"]


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


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on linear weight matrices (incl. the head), none elsewhere."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 2 and not name.startswith("embed.") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _fingerprint(cfg: dict) -> dict:
    """The config keys that must match for a checkpoint to be resumed."""
    skip = {"checkpoint_dir", "checkpoint_every", "threads", "device", "run_id", "study",
            "format", "eval_every", "eval_batches"}
    return {k: v for k, v in cfg.items() if k not in skip}


def _save(path: str, state: dict) -> None:
    import torch

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(state, tmp))


@contextlib.contextmanager
def _timer(acc: list[float]):
    t0 = time.perf_counter()
    yield
    acc[0] += time.perf_counter() - t0


# --------------------------------------------------------------------------- train


def build_model(cfg: dict, vocab: int, device):
    """The model of ``cfg`` on ``device``, with compressed linears when a spec is not identity."""
    import torch

    from raysweep.train.model import GPT, is_compressible

    torch.manual_seed(cfg["seed"])
    model = GPT(cfg["n_layers"], cfg["d_model"], cfg["n_heads"], vocab).to(device)
    if not (cfg["_w_identity"] and cfg["_a_identity"]):
        from raysweep.train.layers import convert_linears

        convert_linears(model, cfg["weights"], cfg["activations"], filter_fn=is_compressible,
                        estimator=cfg["estimator"], backend=cfg["backend"])
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


def train(config: dict, report: Callable[[dict], None] | None = None) -> dict:
    """Train one model as ``config`` says; return the result row (see module docstring)."""
    import torch

    from raysweep.train.data import (
        DeviceBatches,
        check_lengths,
        load_corpus,
        train_batch,
        val_batches,
    )

    t_start = time.perf_counter()
    cfg = resolve_config(config)  # bad keys fail before any work
    corpus = load_corpus(cfg["data"])
    check_lengths(corpus, cfg["seq_len"])
    torch.set_num_threads(cfg["threads"])
    if cfg["device"] in (None, "auto"):
        cfg["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg["device"].startswith("cuda") and not torch.cuda.is_available():
        raise RaysweepError(f"config key 'device': {cfg['device']!r} but torch sees no GPU; "
                            "allowed here: cpu")
    device = torch.device(cfg["device"])
    gw, bw, cfg["_w_identity"] = rep_info(cfg["weights"])
    ga, ba, cfg["_a_identity"] = rep_info(cfg["activations"])
    model = build_model(cfg, corpus.vocab, device)
    fwd = torch.compile(model) if cfg["compile"] else model
    n_params = model.param_counts()["non_embedding"]
    bsz, seq, seed = cfg["batch_size"], cfg["seq_len"], cfg["seed"]
    tokens_target = cfg["tokens"] or int(round(cfg["tokens_per_param"] * n_params))
    steps = max(1, math.ceil(tokens_target / (bsz * seq)))
    warmup = int(cfg["warmup_frac"] * steps)
    eval_every = cfg["eval_every"] or max(1, steps // 10)
    ckpt_every = cfg["checkpoint_every"] or eval_every
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(param_groups(model, cfg["weight_decay"]), lr=cfg["lr"],
                            betas=(0.9, 0.95), eps=1e-8, fused=cuda or None)

    def autocast():
        if cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    ckpt = os.path.join(cfg["checkpoint_dir"], "state.pt") if cfg["checkpoint_dir"] else None
    step, prev_wall = 0, 0.0
    loss_sum = torch.zeros((), device=device)
    loss_n, last_train = 0, float("nan")
    if ckpt and os.path.exists(ckpt):
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != _fingerprint(cfg):
            diff = sorted(k for k in set(state.get("fingerprint", {})) | set(_fingerprint(cfg))
                          if state.get("fingerprint", {}).get(k) != _fingerprint(cfg).get(k))
            raise RaysweepError(f"checkpoint_dir: {ckpt} was written by a different config "
                                f"(keys differ: {', '.join(diff)}); use a fresh checkpoint_dir")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        torch.set_rng_state(state["rng_cpu"])
        if cuda and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"])
        step, prev_wall = state["step"], state["wall_s"]
        loss_sum.copy_(state["loss_sum"].to(device))
        loss_n, last_train = state["loss_n"], state["last_train"]

    val_eval = [(x.to(device), y.to(device))
                for x, y in val_batches(corpus, cfg["eval_batches"], bsz, seq)]
    status, error = "ok", None
    if cuda:
        next_batch = DeviceBatches(corpus, seed, bsz, seq, device)
    else:
        def next_batch(i):
            return train_batch(corpus, i, seed, bsz, seq)
    train_time, t_mark, tok_mark, step0 = [0.0], 0.0, step, step
    while step < steps:
        with _timer(train_time):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, cfg["lr"], warmup)
            x, y = next_batch(step)
            with autocast():
                loss = fwd(x, y)
            loss.backward()
            if cfg["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"], foreach=True)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += loss.detach().float()
            loss_n += 1
            step += 1
        if step % eval_every and step % ckpt_every and step != steps:
            continue
        last_train = float(loss_sum) / max(1, loss_n)  # one sync per eval / checkpoint
        if not math.isfinite(last_train):
            status = "diverged"
            error = (f"non-finite training loss by step {step} of {steps} "
                     f"(lr={cfg['lr']:.3g}); stopped")
            break
        loss_sum.zero_()
        loss_n = 0
        if ckpt and (step % ckpt_every == 0 or step == steps):
            _save(ckpt, {"fingerprint": _fingerprint(cfg), "step": step,
                         "model": model.state_dict(), "optim": opt.state_dict(),
                         "rng_cpu": torch.get_rng_state(),
                         "rng_cuda": torch.cuda.get_rng_state() if cuda else None,
                         "loss_sum": loss_sum, "loss_n": loss_n, "last_train": last_train,
                         "wall_s": prev_wall + time.perf_counter() - t_start})
        if step % eval_every == 0 and step != steps and report is not None:
            val = evaluate(fwd, val_eval, device, autocast)
            tps = (step - tok_mark) * bsz * seq / max(1e-9, train_time[0] - t_mark)
            t_mark, tok_mark = train_time[0], step
            report({"step": step, "tokens": step * bsz * seq, "train_loss": last_train,
                    "val_loss": val, "tokens_per_s": tps})

    loss = float("nan")
    if status == "ok":
        # fixed batches of 8 windows whatever batch_size is: every run of a study
        # (and every batch size) is scored on the same windows
        final = val_batches(corpus, cfg["final_eval_batches"], FINAL_EVAL_BATCH, seq)
        loss = evaluate(fwd, [(x.to(device), y.to(device)) for x, y in final], device, autocast)
        if not math.isfinite(loss):
            status, error = "diverged", f"non-finite validation loss after {steps} steps"
            loss = float("nan")
    else:
        last_train = float("nan")
    # what was trained: a diverged run stopped at ``step`` (resumed steps included),
    # so tokens, tokens_per_param and flops count those steps, not the planned ones
    tokens = step * bsz * seq
    row = {
        "n_params": n_params, "n_layers": cfg["n_layers"], "d_model": cfg["d_model"],
        "tokens": tokens,
        "tokens_per_param": tokens / n_params,
        "seed": seed, "weights": cfg["weights"], "activations": cfg["activations"],
        "loss": loss, "train_loss": last_train,
        "gmse_weights": gw, "gmse_activations": ga, "bits_weights": bw, "bits_activations": ba,
        "flops": run_flops(n_params, tokens),
        "wall_s": prev_wall + time.perf_counter() - t_start,
        "tokens_per_s": (step - step0) * bsz * seq / max(1e-9, train_time[0]),
        "status": status, "error": error, "data_hash": corpus.hash,
        # extras (not part of the contract, handy in tables)
        "n_heads": cfg["n_heads"], "size": cfg["size"], "data": cfg["data"], "steps": step,
        "steps_planned": steps, "tokens_per_param_target": cfg["tokens_per_param"],
        "lr": cfg["lr"], "batch_size": bsz, "seq_len": seq, "device": str(device),
        "estimator": cfg["estimator"], "backend": cfg["backend"],
    }
    for k in ("run_id", "study", "format"):
        if cfg.get(k) is not None:
            row[k] = cfg[k]
    if report is not None:
        report({"step": step, "tokens": step * bsz * seq, "train_loss": last_train,
                "val_loss": loss, "tokens_per_s": row["tokens_per_s"], "loss": loss,
                "status": status, "done": True})
    return row
