"""Training configs: the allowed keys, their defaults, and validation (torch-free).

:meth:`TrainConfig.resolve` turns the dict given to :func:`raysweep.train.loop.train`
into a frozen :class:`TrainConfig` (every default filled in, the size resolved
to layers, width and heads, the default LR computed), or raises a
:class:`~raysweep.errors.RaysweepError` naming the key and its allowed values.
The config is validated once, there, and nothing writes into it afterwards:
what a run derives from it (the device, whether a spec is the identity, the
number of steps) are values of the run, not of the config.
:func:`resolve_config` is the same as a plain dict (``TrainConfig.to_dict()``),
which is what run ids and checkpoint fingerprints hash.

It imports neither torch nor ray, so the sweep can resolve (and hash) trial
configs while planning. Defaults are the CPU recipe of docs/cpu-scale.md and do
not depend on the device, so one config means one run wherever it trains; a GPU
study should set ``batch_size`` / ``seq_len`` itself (e.g. 16 x 512).
"""

from __future__ import annotations

import dataclasses
import math
import re

from raysweep.errors import RaysweepError, as_number, bad_value
from raysweep.kernels import BACKENDS
from raysweep.train.sizes import SIZE_FORMS, default_heads, default_lr, resolve_size

DEFAULT_TOKENS_PER_PARAM = 20.0
ESTIMATOR_RE = re.compile(r"^(auto|ste|trust|mask|rbbm:(0(\.\d*)?|1(\.0*)?|\.\d+))$")

# key -> (kind, default, allowed values in words). kind: int, float, str, bool, num.
KEYS: dict[str, tuple[str, object, str]] = {
    "size": ("size", None, SIZE_FORMS),
    "n_layers": ("int", None, "an integer >= 1"),
    "d_model": ("int", None, "an even integer >= 2"),
    "n_heads": ("int", None, "an integer dividing d_model into an even head dim"),
    "weights": ("str", "bf16", "a representation spec (see `raysweep gmse`)"),
    "activations": ("str", "bf16", "a representation spec (see `raysweep gmse`)"),
    "estimator": ("str", "auto", "auto, ste, trust, mask, rbbm:A with A in [0, 1]"),
    "backend": ("str", "auto", ", ".join(BACKENDS)),
    "tokens": ("int", None, "an integer >= 1 (exclusive with tokens_per_param)"),
    "tokens_per_param": ("float", None, "a number > 0 (default 20)"),
    "seed": ("int", 0, "an integer >= 0"),
    "data": ("str", "stdlib", "stdlib, synthetic, or a dir with train.bin/val.bin/meta.json"),
    "lr": ("float", None, "a number > 0 (default: paper table / 3e-3*sqrt(128/d_model))"),
    "batch_size": ("int", 8, "an integer >= 1"),
    "seq_len": ("int", 128, "an integer >= 1"),
    "warmup_frac": ("float", 0.1, "a number in [0, 1)"),
    "weight_decay": ("float", 0.1, "a number >= 0"),
    "grad_clip": ("float", 1.0, "a number >= 0 (0 disables clipping)"),
    "eval_every": ("int", None, "an integer >= 1 (default: a tenth of the steps)"),
    "eval_batches": ("int", 4, "an integer >= 1"),
    "final_eval_batches": ("int", 16, "an integer >= 1 (batches of 8 windows)"),
    "device": ("str", None, "cpu, cuda, cuda:N (default: cuda when available)"),
    "threads": ("int", 1, "an integer >= 1"),
    "checkpoint_dir": ("str", None, "a directory path"),
    "checkpoint_every": ("int", None, "an integer >= 1 (default: eval_every)"),
    "compile": ("bool", False, "true or false"),
    # labels: copied into the result row untouched
    "run_id": ("str", None, "a string label"),
    "study": ("str", None, "a string label"),
    "format": ("str", None, "a string label"),
}


def describe_allowed() -> str:
    """One line per config key: ``key (default): allowed values``."""
    return "\n".join(f"{k} ({d!r}): {a}" for k, (_, d, a) in KEYS.items())


def _bad(key: str, value, problem: str = "") -> RaysweepError:
    return bad_value(f"config key {key!r}", value, problem, KEYS[key][2])


def _coerce(key: str, value):
    """Type-check one value; ints given as integral floats (YAML 1e6) are accepted."""
    kind = KEYS[key][0]
    if value is None:
        return None
    if kind == "bool":
        if not isinstance(value, bool):
            raise _bad(key, value)
        return value
    if isinstance(value, bool):
        raise _bad(key, value)
    if kind in ("int", "float"):
        value = as_number(value)  # 1e6 read from YAML as a string
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise _bad(key, value)
        return value
    if kind == "float":
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _bad(key, value)
        return float(value)
    if kind == "size":
        if not isinstance(value, (str, int)):
            raise _bad(key, value)
        return str(value)
    if not isinstance(value, str):
        raise _bad(key, value)
    return value


# Upper limits far beyond any run (the paper's largest trains ~1e11 tokens at batch 256 x 2048).
LIMITS = {"tokens": 1e16, "tokens_per_param": 1e6, "batch_size": 1 << 16, "seq_len": 1 << 20,
          "seed": 2**63 - 1, "eval_batches": 1 << 16, "final_eval_batches": 1 << 16,
          "threads": 4096}


def _check_ranges(c: dict) -> None:
    positive = ("n_layers", "tokens", "batch_size", "seq_len", "eval_every", "eval_batches",
                "final_eval_batches", "threads", "checkpoint_every", "lr", "tokens_per_param")
    for key in positive:
        if c.get(key) is not None and c[key] <= 0:
            raise _bad(key, c[key])
    for key in ("seed", "weight_decay", "grad_clip"):
        if c[key] < 0:
            raise _bad(key, c[key])
    for key, hi in LIMITS.items():  # absurd values fail here, not as an out-of-memory crash
        if c.get(key) is not None and c[key] > hi:
            raise _bad(key, c[key], f"out of range (at most {hi:g})")
    if not 0.0 <= c["warmup_frac"] < 1.0:
        raise _bad("warmup_frac", c["warmup_frac"])
    if not ESTIMATOR_RE.match(c["estimator"].strip().lower()):
        raise _bad("estimator", c["estimator"])
    if c["backend"] not in BACKENDS:
        raise _bad("backend", c["backend"])
    if c["device"] is not None and not re.match(r"^(auto|cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$",
                                                c["device"]):
        raise _bad("device", c["device"])


def _resolve_shape(c: dict, vocab: int) -> None:
    """Fill n_layers, d_model, n_heads and size from ``size`` or the explicit keys."""
    if c["size"] is not None:
        if c["n_layers"] is not None or c["d_model"] is not None:
            raise RaysweepError("config key 'size': give either size or n_layers/d_model, "
                                "not both")
        n_layers, d_model, n_heads = resolve_size(c["size"], vocab)
        c["n_heads"] = c["n_heads"] or n_heads
    elif c["n_layers"] is not None and c["d_model"] is not None:
        n_layers, d_model = c["n_layers"], c["d_model"]
        if d_model < 2 or d_model % 2:
            raise _bad("d_model", d_model)
        c["n_heads"] = c["n_heads"] or default_heads(d_model)
        c["size"] = f"{n_layers}x{d_model}"
    else:
        raise RaysweepError(f"config key 'size': missing; give size ({SIZE_FORMS}) "
                            "or both n_layers and d_model")
    if c["n_heads"] < 1 or d_model % c["n_heads"] or (d_model // c["n_heads"]) % 2:
        raise _bad("n_heads", c["n_heads"], f"not valid for d_model={d_model}")
    c["n_layers"], c["d_model"] = n_layers, d_model


def _resolve_dict(config: dict, vocab: int) -> dict:
    """Validate ``config`` into a complete dict of every key (``config`` is not changed)."""
    if not isinstance(config, dict):
        raise RaysweepError("config: expected a dict of training keys, got "
                            f"{type(config).__name__}")
    unknown = sorted(k for k in config if k not in KEYS)
    if unknown:
        raise RaysweepError(f"config key {unknown[0]!r}: unknown; allowed keys: "
                            f"{', '.join(KEYS)}")
    c = {k: _coerce(k, config.get(k)) for k in KEYS}
    for k, (_, default, _) in KEYS.items():
        if c[k] is None and default is not None:
            c[k] = default
    if c["tokens"] is not None and c["tokens_per_param"] is not None:
        raise RaysweepError("config key 'tokens': give tokens or tokens_per_param, not both")
    if c["tokens"] is None and c["tokens_per_param"] is None:
        c["tokens_per_param"] = DEFAULT_TOKENS_PER_PARAM
    _resolve_shape(c, vocab)
    _check_ranges(c)
    if c["lr"] is None:
        c["lr"] = default_lr(c["size"], c["d_model"])
    return c


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A complete, validated training config; frozen (assigning a field raises).

    One field per key of :data:`KEYS`, in that order; build it with
    :meth:`resolve`, derive a changed one with ``dataclasses.replace`` (which
    does not validate again: use it only for keys the caller has checked).
    """

    size: str
    n_layers: int
    d_model: int
    n_heads: int
    weights: str
    activations: str
    estimator: str
    backend: str
    tokens: int | None
    tokens_per_param: float | None
    seed: int
    data: str
    lr: float
    batch_size: int
    seq_len: int
    warmup_frac: float
    weight_decay: float
    grad_clip: float
    eval_every: int | None
    eval_batches: int
    final_eval_batches: int
    device: str | None
    threads: int
    checkpoint_dir: str | None
    checkpoint_every: int | None
    compile: bool
    run_id: str | None
    study: str | None
    format: str | None

    @classmethod
    def resolve(cls, config: dict | TrainConfig, vocab: int = 256) -> TrainConfig:
        """Validate a dict of training keys (``config`` is not changed); a TrainConfig as is."""
        if isinstance(config, cls):
            return config
        return cls(**_resolve_dict(config, vocab))

    def to_dict(self) -> dict:
        """Every key, in :data:`KEYS` order: the dict :func:`resolve_config` returns."""
        return {k: getattr(self, k) for k in KEYS}


if tuple(f.name for f in dataclasses.fields(TrainConfig)) != tuple(KEYS):  # pragma: no cover
    raise AssertionError("TrainConfig's fields must be the keys of KEYS, in order")


def resolve_config(config: dict, vocab: int = 256) -> dict:
    """The complete, validated training config as a new dict (``config`` is not changed).

    The same as ``TrainConfig.resolve(config, vocab).to_dict()``: every key of
    :data:`KEYS` in order, the dict run ids and checkpoint fingerprints hash.
    """
    return TrainConfig.resolve(config, vocab).to_dict()
