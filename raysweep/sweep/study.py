"""Studies: a YAML file -> frozen dataclasses -> trial configs.

A study says *what* to train (representations on weights and activations), at
*which scales* (model sizes N and token counts D, seeds), *how* (training
hyperparameters, resources per trial, search strategy) and *with which backend*
(``train``: real training; ``simulated``: losses drawn from a known law, for
tests and benchmarks; ``replay``: answers from an existing results table).

Loading is strict, in the spirit of lingua's configs: the YAML is read with
``yaml.safe_load`` semantics (no Python objects, no code execution; duplicate
keys are errors), every unknown key, wrong type and impossible value raises
:class:`~raysweep.errors.StudyError` naming the file, the key path, the bad
value and the allowed values, and the whole study is validated before anything
is started or written. The result is immutable (frozen dataclasses); trial
configs are derived from it by :func:`raysweep.sweep.trials.expand`, never by
mutating it.

Representations can be given three ways, mixed freely in one list::

    representations:
      - {name: dense, weights: bf16, activations: bf16}         # one, explicit
      - product: {weights: [int4, int2], activations: [bf16, int4]}   # W x A
      - grid: {weights: "sparse{s}+int{b}", s: [50, 70], b: [4, 8]}  # template grid

A ``grid`` entry substitutes every combination of its list-valued axes into the
``{axis}`` placeholders of ``weights``, ``activations`` (default ``bf16``) and
``name``. Any entry may override the study's ``sizes``, ``tokens_per_param`` /
``tokens``, ``seeds`` and ``estimator``. The schema, field by field, is in
docs/sweep.md; the run id of a trial is a hash of its resolved config
(:func:`raysweep.results.run_id`), which makes re-running a study idempotent.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysweep.errors import RaysweepError, StudyError
from raysweep.results import format_label
from raysweep.sweep.checks import (
    check_keys,
    err,
    load_yaml,
    read_text,
    req_list,
    req_num,
    req_str,
)
from raysweep.sweep.trials import expand

__all__ = ["Format", "Resources", "Simulated", "Study", "load_study", "parse_study"]

VERSION = 1
BACKENDS = ("train", "simulated", "replay")
STRATEGIES = ("grid", "active")
# Keys of a train() config that a study sets per trial (not under ``training:``).
TRIAL_AXES = ("size", "n_layers", "d_model", "n_heads", "weights", "activations", "tokens",
              "tokens_per_param", "seed", "data", "threads", "checkpoint_dir", "run_id",
              "study", "format", "branches", "trunk_dir", "trunk_id")
TOP_KEYS = ("version", "name", "description", "backend", "data", "vocab", "sizes",
            "tokens_per_param", "tokens", "seeds", "representations", "training",
            "resources", "search", "simulated", "replay", "retries")
REP_OVERRIDES = ("sizes", "tokens_per_param", "tokens", "seeds", "estimator")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# Absurd values are refused with a clear error rather than trained or simulated:
MAX_SEED = 2**63 - 1  # torch.manual_seed's range (numpy's too)
MAX_TOKENS = 1e16  # tokens of one trial (the paper's largest runs train ~1e11)
MAX_TOKENS_PER_PARAM = 1e6
MAX_TRIALS = 100_000  # trials of one study (RAYSWEEP_MAX_TRIALS raises it)


@dataclass(frozen=True)
class Format:
    """One (weights, activations) pair; ``name`` becomes the table's ``format`` label.

    Overrides left ``None`` take the study's value.
    """

    name: str
    weights: str = "bf16"
    activations: str = "bf16"
    estimator: str | None = None
    sizes: tuple[str, ...] | None = None
    tokens_per_param: tuple[float, ...] | None = None
    tokens: tuple[int, ...] | None = None
    seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Resources:
    """Per-trial Ray resources. ``gpu`` is a fraction, 0, or ``"auto"`` (see gpu_fraction)."""

    cpu: float = 1.0
    gpu: float | str = 0.0


@dataclass(frozen=True)
class Simulated:
    """The known law of the ``simulated`` backend (defaults: docs/sweep.md)."""

    law: dict[str, float] = field(default_factory=dict)
    capacity: dict[str, dict[str, float]] = field(default_factory=dict)
    noise: float = 0.01
    sleep_s: float = 0.0
    fail_prob: float = 0.0


@dataclass(frozen=True)
class Study:
    """A validated study. Build with :func:`load_study` or :func:`parse_study`."""

    name: str
    representations: tuple[Format, ...]
    sizes: tuple[str, ...]
    tokens_per_param: tuple[float, ...] | None = None
    tokens: tuple[int, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    version: int = VERSION
    description: str = ""
    backend: str = "train"
    data: str = "stdlib"
    vocab: int = 256
    training: dict[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    search: dict[str, Any] = field(default_factory=lambda: {"strategy": "grid"})
    simulated: Simulated = field(default_factory=Simulated)
    replay: str | None = None
    retries: int = 2
    path: str = "<string>"
    # the search options of an active study, validated at load (raysweep.active.options)
    active: Any = None

    @property
    def strategy(self) -> str:
        return self.search.get("strategy", "grid")

    def to_dict(self) -> dict:
        """The resolved study as plain data (saved as study.yaml next to the results)."""
        d = dataclasses.asdict(self)
        d.pop("path")
        d.pop("active")  # derived from search (and the grid's FLOPs)
        d["representations"] = [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items() if v is not None}
            for r in d["representations"]
        ]
        if not d["representations"]:  # a whole-table replay
            d.pop("representations"), d.pop("seeds")
        for k in ("sizes", "tokens_per_param", "tokens", "seeds"):
            if k not in d:
                continue
            if d[k] is None or (k == "sizes" and not d[k]):
                d.pop(k)
            else:
                d[k] = list(d[k])
        if d["replay"] is None:
            d.pop("replay")
        else:
            d["replay"] = {"table": d["replay"]}
        return d


# ---------------------------------------------------------------- loading


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; raises StudyError naming file and key path."""
    p = Path(path)
    if not p.is_file():
        raise StudyError(f"{path}: no such study file")
    return parse_study(load_yaml(read_text(p), str(p)), str(p))


def parse_study(raw: Any, path: str = "<string>") -> Study:
    """Validate a loaded YAML mapping into a :class:`Study` (everything checked up front)."""
    f = path
    if not isinstance(raw, dict):
        raise err(f, "", raw, "a mapping of study keys", f"top-level keys {list(TOP_KEYS)}")
    check_keys(f, "", raw, TOP_KEYS)
    if isinstance(raw.get("version"), bool) or raw.get("version") != VERSION:
        raise err(f, "version", raw.get("version"), "required, the schema version", [VERSION])
    name = req_str(f, "name", raw.get("name"))
    if not _NAME_RE.match(name):
        raise err(f, "name", name, "letters, digits, '_', '.', '-' (a directory name, at most "
                  "100 characters)")
    backend = raw.get("backend", "train")
    if backend not in BACKENDS:
        raise err(f, "backend", backend, "one of", list(BACKENDS))
    data = req_str(f, "data", raw.get("data", "stdlib"))
    vocab = int(req_num(f, "vocab", raw.get("vocab", 256), lo=2, integer=True))
    # replay without representations: the pool is the replay table's rows (trials.py)
    from_table = backend == "replay" and raw.get("representations") is None
    if from_table:
        for k in ("sizes", "tokens_per_param", "tokens", "seeds"):
            if raw.get(k) is not None:
                raise err(f, k, raw[k], "replaying a whole table (no representations) "
                          "takes its trials from the table", "leave it out, or list "
                          "representations to replay a grid")
    sizes = () if from_table else _sizes(f, "sizes", raw.get("sizes"), vocab, required=True)
    tpp, toks = (None, None) if from_table else _token_axes(f, "", raw, required=True)
    seeds = _seeds(f, "seeds", raw.get("seeds", [0]))
    training = _training(f, raw.get("training", {}) or {}, sizes[0] if sizes else "2x32")
    reps = () if from_table else _representations(f, raw.get("representations"), vocab,
                                                   training.get("estimator"))
    resources = _resources(f, raw.get("resources", {}) or {})
    search = _search(f, raw.get("search", {}) or {})
    simulated = _simulated(f, raw.get("simulated", {}) or {})
    replay = _replay(f, raw.get("replay"), backend)
    retries = int(req_num(f, "retries", raw.get("retries", 2), lo=0, integer=True))
    study = Study(
        name=name, representations=reps, sizes=sizes, tokens_per_param=tpp, tokens=toks,
        seeds=seeds, description=str(raw.get("description", "") or ""), backend=backend,
        data=data, vocab=vocab, training=training, resources=resources, search=search,
        simulated=simulated, replay=replay, retries=retries, path=path,
    )
    _check_size(study)
    _check_schedule(f, study)
    pool = expand(study)  # fails here (not mid-run) on duplicate trials or unknown sizes
    if study.strategy == "active":  # its options too, so plan and run agree
        from raysweep.active.options import parse_options

        try:
            study = dataclasses.replace(study, active=parse_options(dict(study.search), pool))
        except StudyError as exc:
            raise StudyError(f"{f}: {exc}") from None
    return study


def _check_size(study: Study) -> None:
    """Refuse a grid too large to plan (counted before it is expanded)."""
    import os

    cap = int(os.environ.get("RAYSWEEP_MAX_TRIALS") or MAX_TRIALS)
    n = 0
    for rep in study.representations:
        if rep.tokens is not None or rep.tokens_per_param is not None:
            toks = rep.tokens_per_param or rep.tokens
        else:
            toks = study.tokens_per_param or study.tokens
        n += len(rep.sizes or study.sizes) * len(toks) * len(rep.seeds or study.seeds)
    if n > cap:
        raise err(study.path, "representations", f"{n} trials", "the grid is too large to "
                  "plan", f"at most {cap} trials (set RAYSWEEP_MAX_TRIALS to raise the cap)")


def _sizes(f, key, value, vocab, required=False):
    if value is None and not required:
        return None
    items = req_list(f, key, value)
    from raysweep.train import sizes as sz

    out = []
    for i, s in enumerate(items):
        if not isinstance(s, (str, int)) or isinstance(s, bool):
            raise err(f, f"{key}[{i}]", s, "a size string", sz.SIZE_FORMS)
        try:
            sz.resolve_size(str(s), vocab)
        except RaysweepError as exc:
            raise err(f, f"{key}[{i}]", s, str(exc), sz.SIZE_FORMS) from None
        out.append(str(s))
    return tuple(out)


def _token_axes(f, prefix, raw, required):
    """``tokens_per_param`` (list of ratios D/N) or ``tokens`` (list of counts D), not both."""
    p = f"{prefix}." if prefix else ""
    has_r, has_t = raw.get("tokens_per_param") is not None, raw.get("tokens") is not None
    if has_r and has_t:
        raise err(f, f"{p}tokens", raw["tokens"], "give tokens_per_param or tokens, not both")
    if not has_r and not has_t:
        if required:
            raise err(f, f"{p}tokens_per_param", None, "required (or tokens)",
                      "a list of positive numbers, e.g. [20, 40]")
        return None, None
    if has_r:
        vals = req_list(f, f"{p}tokens_per_param", raw["tokens_per_param"])
        return tuple(req_num(f, f"{p}tokens_per_param[{i}]", v, lo=1e-9,
                             hi=MAX_TOKENS_PER_PARAM) for i, v in enumerate(vals)), None
    vals = req_list(f, f"{p}tokens", raw["tokens"])
    return None, tuple(int(req_num(f, f"{p}tokens[{i}]", v, lo=1, hi=MAX_TOKENS, integer=True))
                       for i, v in enumerate(vals))


def _seeds(f, key, value):
    vals = req_list(f, key, value)
    return tuple(int(req_num(f, f"{key}[{i}]", v, lo=0, hi=MAX_SEED, integer=True))
                 for i, v in enumerate(vals))


def _estimator(f, key, value):
    """A per-representation estimator, checked as the trainer checks it."""
    from raysweep.train.config import KEYS, resolve_config

    e = req_str(f, key, value)
    try:
        resolve_config({"size": "2x32", "estimator": e})
    except RaysweepError:
        raise err(f, key, e, "not an estimator", KEYS["estimator"][2]) from None
    return e


def _training(f, raw, size):
    """Training hyperparameters: train()'s own keys and checks (raysweep.train.config).

    A key left out keeps train()'s default (docs/training.md), so the run ids of a
    study that does not set it follow the trainer's recipe.
    """
    from raysweep.train.config import KEYS, resolve_config

    allowed = [k for k in KEYS if k not in TRIAL_AXES]
    if not isinstance(raw, dict):
        raise err(f, "training", raw, "a mapping", allowed)
    check_keys(f, "training", raw, allowed)
    out = {k: v for k, v in raw.items() if v is not None}
    for k, v in out.items():
        try:
            resolve_config({"size": size, k: v})
        except RaysweepError as exc:
            raise err(f, f"training.{k}", v, str(exc).split("; allowed")[0],
                      KEYS[k][2]) from None
    return out


def _spec(f, key, value):
    s = req_str(f, key, value)
    from raysweep.formats import parse

    try:
        parse(s)
    except RaysweepError as exc:
        raise err(f, key, s, f"not a valid representation spec ({exc})",
                  "docs/formats.md, e.g. bf16, int4, fp4, sparse50, 2:4, vq2x8, noise2") from None
    return s


def _rep_overrides(f, key, raw, vocab):
    out = {}
    if "sizes" in raw:
        out["sizes"] = _sizes(f, f"{key}.sizes", raw["sizes"], vocab)
    tpp, toks = _token_axes(f, key, raw, required=False)
    if tpp is not None or toks is not None:
        out["tokens_per_param"], out["tokens"] = tpp, toks
    if "seeds" in raw:
        out["seeds"] = _seeds(f, f"{key}.seeds", raw["seeds"])
    if raw.get("estimator") is not None:
        out["estimator"] = _estimator(f, f"{key}.estimator", raw["estimator"])
    return out


def _representations(f, raw, vocab, default_estimator):
    items = req_list(f, "representations", raw)
    reps: list[Format] = []
    for i, entry in enumerate(items):
        key = f"representations[{i}]"
        if not isinstance(entry, dict):
            raise err(f, key, entry, "a mapping",
                      "{name, weights, activations} | {product: ...} | {grid: ...}")
        if "product" in entry:
            check_keys(f, key, entry, ("product",) + REP_OVERRIDES)
            reps += _product(f, f"{key}.product", entry["product"],
                             _rep_overrides(f, key, entry, vocab))
        elif "grid" in entry:
            check_keys(f, key, entry, ("grid",) + REP_OVERRIDES)
            reps += _grid(f, f"{key}.grid", entry["grid"], _rep_overrides(f, key, entry, vocab))
        else:
            check_keys(f, key, entry, ("name", "weights", "activations") + REP_OVERRIDES)
            w = _spec(f, f"{key}.weights", entry.get("weights", "bf16"))
            a = _spec(f, f"{key}.activations", entry.get("activations", "bf16"))
            name = entry.get("name")
            name = format_label(w, a) if name is None else req_str(f, f"{key}.name", name)
            reps.append(Format(name, w, a, **_rep_overrides(f, key, entry, vocab)))
    seen: dict[str, int] = {}
    for j, r in enumerate(reps):
        if r.name in seen:
            raise err(f, "representations", r.name,
                      f"duplicate representation name (entries {seen[r.name]} and {j} "
                      "after expansion)", "unique names")
        seen[r.name] = j
    return tuple(reps)


def _product(f, key, raw, over):
    if not isinstance(raw, dict):
        raise err(f, key, raw, "a mapping", "{weights: [...], activations: [...]}")
    check_keys(f, key, raw, ("weights", "activations"))
    ws = [_spec(f, f"{key}.weights[{i}]", s)
          for i, s in enumerate(req_list(f, f"{key}.weights", raw.get("weights", ["bf16"])))]
    acts = [_spec(f, f"{key}.activations[{i}]", s)
            for i, s in enumerate(req_list(f, f"{key}.activations",
                                           raw.get("activations", ["bf16"])))]
    return [Format(format_label(w, a), w, a, **over) for w in ws for a in acts]


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _grid(f, key, raw, over):
    """Template grid: every combination of the list-valued axes substituted into the templates."""
    if not isinstance(raw, dict):
        raise err(f, key, raw, "a mapping",
                  "{weights: 'int{b}', activations: 'int{b}', b: [2, 3, 4]}")
    templates = {k: raw.get(k) for k in ("name", "weights", "activations")}
    axes = {k: v for k, v in raw.items() if k not in templates}
    if not axes:
        raise err(f, key, raw, "a grid needs at least one axis (a list, e.g. bits: [2, 4])")
    for ax, vals in axes.items():
        if not re.match(r"^\w+$", ax):
            raise err(f, f"{key}.{ax}", ax, "axis names are identifiers",
                      "name, weights, activations, or an axis")
        req_list(f, f"{key}.{ax}", vals)
    used = set()
    for t, tmpl in templates.items():
        if tmpl is None:
            continue
        tmpl = req_str(f, f"{key}.{t}", tmpl)
        _check_template(f, f"{key}.{t}", tmpl, axes)
        for ph in _PLACEHOLDER.findall(tmpl):
            if ph not in axes:
                raise err(f, f"{key}.{t}", tmpl, f"placeholder {{{ph}}} is not an axis",
                          sorted(axes))
            used.add(ph)
    unused = sorted(set(axes) - used)
    if unused:
        raise err(f, f"{key}.{unused[0]}", axes[unused[0]], "axis used by no template",
                  "a placeholder {" + unused[0] + "} in weights/activations/name")
    out = []
    names = list(axes)
    for combo in itertools.product(*(axes[n] for n in names)):
        env = {n: _fmt(v) for n, v in zip(names, combo)}
        w = _spec(f, f"{key}.weights", (templates["weights"] or "bf16").format(**env))
        a = _spec(f, f"{key}.activations", (templates["activations"] or "bf16").format(**env))
        nm = templates["name"].format(**env) if templates["name"] else format_label(w, a)
        out.append(Format(nm, w, a, **over))
    return out


def _check_template(f, key, tmpl, axes) -> None:
    """Only ``{axis}`` placeholders: no ``{}``, stray braces, format specs or attributes."""
    import string

    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(tmpl)
                  if name is not None]
    except ValueError as exc:
        raise err(f, key, tmpl, f"not a template ({exc}; write a literal brace as {{{{ or }}}})",
                  "text with {axis} placeholders, e.g. 'int{b}'") from None
    for name, spec, conv in fields:
        if not re.fullmatch(r"\w+", name) or spec or conv:
            raise err(f, key, tmpl, f"placeholder {{{name}}} is not a plain axis name",
                      sorted(axes) or "an axis, e.g. {b}")


def _fmt(v):
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _check_schedule(f, study) -> None:
    """A WSD study (trunks and branches) needs trained or simulated grid trials."""
    sched = study.training.get("schedule") or {}
    if sched.get("kind") != "wsd":
        return
    key = "training.schedule"
    if study.backend not in ("train", "simulated"):
        raise err(f, "backend", study.backend, "a WSD schedule trains trunks and branches",
                  ["train", "simulated"])
    if study.strategy != "grid":
        raise err(f, "search.strategy", study.strategy, "a WSD study runs as a grid (the "
                  "active search does not choose branch points yet)", ["grid"])
    if sched.get("warmup_tokens") is not None:
        raise err(f, f"{key}.warmup_tokens", sched["warmup_tokens"], "set by the sweep (the "
                  "warm-up fraction of each trunk's shortest D)", "schedule.warmup: F")


def _resources(f, raw):
    if not isinstance(raw, dict):
        raise err(f, "resources", raw, "a mapping", ["cpu", "gpu"])
    check_keys(f, "resources", raw, ("cpu", "gpu"))
    cpu = req_num(f, "resources.cpu", raw.get("cpu", 1), lo=0)
    gpu = raw.get("gpu", 0)
    if gpu != "auto":
        gpu = req_num(f, "resources.gpu", gpu, lo=0)
        if gpu > 1 and not float(gpu).is_integer():
            raise err(f, "resources.gpu", gpu, "a fraction <= 1 or a whole number of GPUs",
                      "0, 0.25, 0.5, 1, 2, ... or auto")
    if cpu == 0 and gpu in (0, 0.0):
        raise err(f, "resources.cpu", cpu, "a trial needs some cpu or gpu", "cpu > 0")
    return Resources(cpu=float(cpu), gpu=gpu if gpu == "auto" else float(gpu))


def _search(f, raw):
    if not isinstance(raw, dict):
        raise err(f, "search", raw, "a mapping", "{strategy: grid | active, ...}")
    strategy = raw.get("strategy", "grid")
    if strategy not in STRATEGIES:
        raise err(f, "search.strategy", strategy, "one of", list(STRATEGIES))
    if strategy == "grid" and set(raw) - {"strategy"}:
        extra = sorted(set(raw) - {"strategy"})[0]
        raise err(f, f"search.{extra}", raw[extra], "grid search takes no options",
                  ["strategy"])
    # Options of the active strategy are validated by raysweep.active.options (its owner).
    return {"strategy": strategy, **{k: v for k, v in raw.items() if k != "strategy"}}


def _simulated(f, raw):
    if not isinstance(raw, dict):
        raise err(f, "simulated", raw, "a mapping",
                  ["law", "capacity", "noise", "sleep_s", "fail_prob"])
    check_keys(f, "simulated", raw, ("law", "capacity", "noise", "sleep_s", "fail_prob"))
    law = raw.get("law", {}) or {}
    if not isinstance(law, dict):
        raise err(f, "simulated.law", law, "a mapping", ["A", "alpha", "B", "beta", "E"])
    check_keys(f, "simulated.law", law, ("A", "alpha", "B", "beta", "E"))
    law = {k: req_num(f, f"simulated.law.{k}", v, lo=0, hi=1e6) for k, v in law.items()}
    cap = raw.get("capacity", {}) or {}
    if not isinstance(cap, dict):
        raise err(f, "simulated.capacity", cap, "a mapping family -> {L, F, C}",
                  "int, fp, sparse, vq, noise, default, ...")
    caps = {}
    for fam, v in cap.items():
        k = f"simulated.capacity.{fam}"
        if not isinstance(v, dict):
            raise err(f, k, v, "a mapping", ["L", "F", "C"])
        check_keys(f, k, v, ("L", "F", "C"))
        caps[str(fam)] = {p: req_num(f, f"{k}.{p}", x, lo=0, hi=1e3) for p, x in v.items()}
    # the sd of log-loss: 1 already scatters losses by a factor e; more is no simulation
    noise = req_num(f, "simulated.noise", raw.get("noise", 0.01), lo=0, hi=1)
    sleep_s = req_num(f, "simulated.sleep_s", raw.get("sleep_s", 0.0), lo=0)
    fail = req_num(f, "simulated.fail_prob", raw.get("fail_prob", 0.0), lo=0, hi=1)
    return Simulated(law=law, capacity=caps, noise=noise, sleep_s=sleep_s, fail_prob=fail)


def _replay(f, raw, backend):
    if backend != "replay":
        if raw is not None:
            raise err(f, "replay", raw, "only with backend: replay", list(BACKENDS))
        return None
    if not isinstance(raw, dict):
        raise err(f, "replay", raw, "required with backend: replay", "{table: PATH}")
    check_keys(f, "replay", raw, ("table",))
    table = req_str(f, "replay.table", raw.get("table"))
    p = Path(table)
    if not p.is_absolute() and f != "<string>":
        p = Path(f).resolve().parent / p
    if not p.is_file() or p.suffix not in (".csv", ".parquet"):
        raise err(f, "replay.table", table, "an existing results table", ".csv or .parquet")
    return str(p)
