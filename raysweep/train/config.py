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
# learning-rate schedules (warmup-stable-decay: raysweep.train.wsd, docs/training.md)
SCHEDULE_KINDS = ("cosine", "wsd")
DECAYS = ("linear", "sqrt", "cosine")  # the WSD cooldown's shapes
DEFAULT_COOLDOWN = 0.2
DEFAULT_DECAY = "sqrt"  # 1 - sqrt: the best of Hägele et al. 2024's cooldown shapes
ESTIMATOR_RE = re.compile(r"^(auto|ste|trust|mask|rbbm:(0(\.\d*)?|1(\.0*)?|\.\d+))$")

# key -> (kind, default, allowed values in words). kind: int, float, str, bool, num, compile.
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
    "compile": ("compile", False, "true, false or reduce-overhead"),
    # labels: copied into the result row untouched
    "run_id": ("str", None, "a string label"),
    "study": ("str", None, "a string label"),
    "format": ("str", None, "a string label"),
    # warmup-stable-decay (docs/training.md): left out of to_dict() while unset, so
    # the run ids and checkpoints of cosine configs are what they were without them
    "schedule": ("schedule", None, "a mapping {kind: cosine|wsd, warmup: F, "
                 "warmup_tokens: T, cooldown: F, decay: linear|sqrt|cosine} "
                 "(default: cosine, warm-up warmup_frac)"),
    "branches": ("branches", None, "a list of token counts >= 1, each at most the run's "
                 "tokens (a WSD trunk: needs schedule kind wsd and checkpoint_dir)"),
    "trunk_dir": ("str", None, "the checkpoint_dir of the WSD trunk this run branches from"),
    "trunk_id": ("str", None, "a string label: the run id of the trunk (hashed: a branch's id "
                 "differs from its twin's from scratch)"),
}

# Keys of :data:`KEYS` that to_dict() leaves out while they are None (added after
# run ids and checkpoint fingerprints were first hashed).
OPTIONAL_KEYS = ("schedule", "branches", "trunk_dir", "trunk_id")

# schedule sub-keys -> allowed values in words
SCHEDULE_KEYS = {
    "kind": ", ".join(SCHEDULE_KINDS) + " (default cosine)",
    "warmup": "a number in [0, 1): the warm-up's fraction of the run's steps (= warmup_frac)",
    "warmup_tokens": "an integer >= 0: the warm-up in tokens, whatever D is (kind wsd; "
                     "exclusive with warmup)",
    "cooldown": f"a number in [0, 1): the decay's fraction of the run's steps (kind wsd; "
                f"default {DEFAULT_COOLDOWN})",
    "decay": ", ".join(DECAYS) + f" (kind wsd; default {DEFAULT_DECAY})",
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
    if kind == "compile":  # true / false stay bools (run ids unchanged), or the one mode
        if isinstance(value, bool) or value == "reduce-overhead":
            return value
        raise _bad(key, value)
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
    if kind == "schedule":
        if not isinstance(value, dict):
            raise _bad(key, value, "not a mapping")
        return dict(value)
    if kind == "branches":
        return _coerce_branches(value)
    if not isinstance(value, str):
        raise _bad(key, value)
    return value


def _coerce_branches(value) -> tuple[int, ...]:
    """A trunk's branch token counts: a list of integers >= 1, sorted, duplicates dropped."""
    if not isinstance(value, (list, tuple)):
        raise _bad("branches", value, "not a list")
    out = set()
    for v in value:
        n = as_number(v)
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) \
                or not float(n).is_integer() or n < 1 or n > LIMITS["tokens"]:
            raise _bad("branches", value, f"item {v!r} is not a token count")
        out.add(int(n))
    return tuple(sorted(out))


def _sched_bad(sub: str, value, problem: str = "") -> RaysweepError:
    return bad_value(f"config key 'schedule.{sub}'", value, problem, SCHEDULE_KEYS[sub])


def _fraction(sub: str, value) -> float:
    """A schedule fraction in [0, 1) (YAML strings such as '0.2' accepted)."""
    v = as_number(value)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or not 0.0 <= v < 1.0:
        raise _sched_bad(sub, value)
    return float(v)


def _resolve_schedule(c: dict, raw: dict) -> None:
    """Validate ``schedule`` (and the WSD keys that need it) in place.

    A cosine schedule resolves to ``None`` (so cosine configs hash as they did),
    its ``warmup`` written into ``warmup_frac``; a WSD one to ``{kind, cooldown,
    decay}`` plus ``warmup_tokens`` when given (the warm-up fraction, if any,
    lives in ``warmup_frac``).
    """
    s = c["schedule"]
    if s is not None:
        unknown = sorted(k for k in s if k not in SCHEDULE_KEYS)
        if unknown:
            raise RaysweepError(f"config key 'schedule.{unknown[0]}': unknown; allowed keys: "
                                f"{', '.join(SCHEDULE_KEYS)}")
        kind = s.get("kind", "cosine")
        if kind not in SCHEDULE_KINDS:
            raise _sched_bad("kind", kind)
        if s.get("warmup") is not None:
            w = _fraction("warmup", s["warmup"])
            if raw.get("warmup_frac") is not None and c["warmup_frac"] != w:
                raise _sched_bad("warmup", s["warmup"], f"differs from warmup_frac="
                                 f"{c['warmup_frac']:g} (give the warm-up once)")
            c["warmup_frac"] = w
        if kind == "cosine":
            extra = [k for k in ("warmup_tokens", "cooldown", "decay") if s.get(k) is not None]
            if extra:
                raise _sched_bad(extra[0], s[extra[0]], "only with schedule kind wsd")
            s = None
        else:
            out = {"kind": "wsd",
                   "cooldown": _fraction("cooldown", s.get("cooldown", DEFAULT_COOLDOWN)),
                   "decay": s.get("decay", DEFAULT_DECAY)}
            if out["decay"] not in DECAYS:
                raise _sched_bad("decay", out["decay"])
            if s.get("warmup_tokens") is not None:
                if s.get("warmup") is not None:
                    raise _sched_bad("warmup_tokens", s["warmup_tokens"],
                                     "give warmup or warmup_tokens, not both")
                t = as_number(s["warmup_tokens"])
                if isinstance(t, bool) or not isinstance(t, (int, float)) \
                        or not math.isfinite(t) or not float(t).is_integer() or t < 0 \
                        or t > LIMITS["tokens"]:
                    raise _sched_bad("warmup_tokens", s["warmup_tokens"])
                out["warmup_tokens"] = int(t)
            elif c["warmup_frac"] + out["cooldown"] >= 1.0:
                raise _sched_bad("cooldown", out["cooldown"], f"warm-up ({c['warmup_frac']:g})"
                                 " + cooldown must be < 1")
            s = out
        c["schedule"] = s
    wsd = s is not None
    if c["branches"] is not None:
        if not wsd:
            raise _bad("branches", list(c["branches"]), "only with schedule kind wsd")
        if c["trunk_dir"] is not None or c["trunk_id"] is not None:
            raise _bad("branches", list(c["branches"]), "a run is a trunk (branches) or a "
                       "branch (trunk_dir, trunk_id), not both")
        if c["tokens"] is not None and c["branches"][-1] > c["tokens"]:
            raise _bad("branches", list(c["branches"]), f"more than the trunk's tokens "
                       f"({c['tokens']})")
    for key in ("trunk_dir", "trunk_id"):
        if c[key] is not None and not wsd:
            raise _bad(key, c[key], "only with schedule kind wsd")


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
    _resolve_schedule(c, config)
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
    compile: bool | str
    run_id: str | None
    study: str | None
    format: str | None
    schedule: dict | None = None  # None: cosine; else {kind: wsd, cooldown, decay[, warmup_tokens]}
    branches: tuple[int, ...] | None = None
    trunk_dir: str | None = None
    trunk_id: str | None = None

    @classmethod
    def resolve(cls, config: dict | TrainConfig, vocab: int = 256) -> TrainConfig:
        """Validate a dict of training keys (``config`` is not changed); a TrainConfig as is."""
        if isinstance(config, cls):
            return config
        return cls(**_resolve_dict(config, vocab))

    def to_dict(self) -> dict:
        """Every key in :data:`KEYS` order (:data:`OPTIONAL_KEYS` only when set).

        The dict :func:`resolve_config` returns; a ``schedule`` is a fresh copy.
        """
        out = {k: getattr(self, k) for k in KEYS
               if k not in OPTIONAL_KEYS or getattr(self, k) is not None}
        if out.get("schedule") is not None:
            out["schedule"] = dict(out["schedule"])
        return out

    @property
    def wsd(self) -> bool:
        """Whether the schedule is warmup-stable-decay (else cosine)."""
        return self.schedule is not None


if tuple(f.name for f in dataclasses.fields(TrainConfig)) != tuple(KEYS):  # pragma: no cover
    raise AssertionError("TrainConfig's fields must be the keys of KEYS, in order")


def resolve_config(config: dict, vocab: int = 256) -> dict:
    """The complete, validated training config as a new dict (``config`` is not changed).

    The same as ``TrainConfig.resolve(config, vocab).to_dict()``: every key of
    :data:`KEYS` in order, the dict run ids and checkpoint fingerprints hash.
    """
    return TrainConfig.resolve(config, vocab).to_dict()
