"""Zero-shot prediction: the loss a representation would reach, from its GMSE alone.

``predict(specs, law="paper", n=None, d=None, budget_bits=None, budget_flops=None,
role="both")`` returns one dict (the ``raysweep predict --json`` object): for each
spec its GMSE, bits per element, family, capacity ``rho`` (product over the
spec's ``+``-parts, each part on its own family's tanh curve
``rho = L tanh(F log_{1/4} GMSE)^C``; squared for ``role="both"``, since the same
spec is then applied to weights and activations), the predicted loss
``A (N rho)^-alpha + B D^-beta + E`` and its excess over a dense model at the same
(N, D); a ranking by loss and the Pareto front of (loss, bits).

The law is ``"paper"`` (the published capacity curve, :data:`PAPER_CAPACITY`, for
every family, with Epoch AI's dense law :data:`EPOCH_CHINCHILLA`) or a fit.json
(``raysweep fit --json`` / ``raysweep report``): its ``params`` and per-family
``capacity``. A fitted law only knows the families it was fitted on: a spec of
another family is predicted on the paper's curve and flagged, and so is a GMSE
outside the fitted range (``ranges.gmse`` of the fit.json, or failing that the
report's ``formats`` section) and an N or D outside the fitted data
(``ranges.n_params``, ``ranges.tokens``; ``raysweep fit --json`` and the report
write them). A fit.json with a bootstrap (its ``prediction`` section: the
replicates' laws and the fit's log residuals) gives each loss a 95% prediction
interval ``loss_pi95``: the loss under every replicate's law, plus a resampled
residual (:meth:`raysweep.fit.FitResult.predict_interval` does the same from Python).

Budgets (N, D at equal cost, per format):

- none: every format at (N, D), N = ``n`` (default 1e8), D = ``d`` (default 20 N);
- ``budget_bits`` B (memory of the weights): N = B / bits per weight element
  (16 for ``role="activations"``, whose weights stay bf16), D = ``d`` or, by
  default, 20 x B / 16 (Chinchilla-optimal for the dense model of that memory),
  the same for every format;
- ``budget_flops`` C (compute, 6 N D): with ``n`` given D = C / (6 N); without,
  N and D from the Chinchilla split D = 20 N (N = sqrt(C / 120)).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from raysweep.errors import RaysweepError, bad_value, check_number

DEFAULT_N = 1e8
TOKENS_PER_PARAM = 20.0
ROLES = ("weights", "activations", "both")
LAW_KEYS = ("A", "alpha", "B", "beta", "E")
CAP_KEYS = ("L", "F", "C")
# families the paper's tanh curve was fitted on (scalar quantization)
PAPER_FAMILIES = ("int", "fp")


def load_law(law: str | dict | None) -> dict:
    """``"paper"``, a fit.json path or its parsed dict -> a normalized law description.

    Returns ``{"name", "source", "fit_law", "params", "capacity", "gmse_range",
    "n_range", "tokens_range", "notes"}``; a missing or malformed file is a
    :class:`~raysweep.errors.RaysweepError`.
    """
    from raysweep.fit.laws import EPOCH_CHINCHILLA, PAPER_CAPACITY

    if law is None or law == "paper":
        return {"name": "paper", "source": "PAPER_CAPACITY + EPOCH_CHINCHILLA",
                "fit_law": "unified", "params": dict(EPOCH_CHINCHILLA),
                "capacity": {"*": dict(PAPER_CAPACITY)}, "gmse_range": None,
                "n_range": None, "tokens_range": None, "notes": []}
    source = "<dict>"
    if isinstance(law, (str, Path)):
        source = str(law)
        path = Path(law)
        if not path.is_file():
            raise bad_value("--law", source, "no such file" if not path.exists()
                            else "not a file", "paper or a fit.json path")
        try:
            law = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problem = f"not a readable JSON file ({type(exc).__name__})"
            raise bad_value("--law", source, problem, "paper or a fit.json path") from exc
    if not isinstance(law, dict):
        raise bad_value("--law", source, "not a JSON object", "a fit.json")
    params = law.get("params")
    if not isinstance(params, dict) or any(k not in params for k in LAW_KEYS):
        raise bad_value(f"{source}: params", params, "missing law parameters",
                        "an object with " + ", ".join(LAW_KEYS))
    params = {k: check_number(f"{source}: params.{k}", params[k], 0.0) for k in LAW_KEYS}
    notes = []
    fit_law = str(law.get("law", "unified"))
    capacity = {}
    raw_cap = law.get("capacity") or {}
    if not isinstance(raw_cap, dict):
        raise bad_value(f"{source}: capacity", raw_cap, "not an object", "{family: {L, F, C}}")
    for fam, ps in raw_cap.items():
        if isinstance(ps, dict) and all(k in ps for k in CAP_KEYS):
            capacity[str(fam)] = {k: check_number(f"{source}: capacity.{fam}.{k}", ps[k], 0.0)
                                  for k in CAP_KEYS}
    if fit_law != "unified":
        notes.append(f"fitted law is {fit_law!r}, not 'unified': only its A, alpha, B, beta, E "
                     "are used; capacity from the paper's curve")
        capacity = {}
    replicates, residuals = _replicates(law, source, fit_law == "unified")
    return {"name": "fit", "source": source, "fit_law": fit_law, "params": params,
            "capacity": capacity, "gmse_range": _gmse_range(law),
            "n_range": _range(law, "n_params"), "tokens_range": _range(law, "tokens"),
            "notes": notes, "replicates": replicates, "residuals": residuals}


def _replicates(fit: dict, source: str, use_capacity: bool) -> tuple[list, list]:
    """The bootstrap replicates' laws (``[{"params", "capacity"}]``) and log residuals of
    a fit.json's ``prediction`` section; ``([], [])`` when it has none."""
    pred = fit.get("prediction")
    if not isinstance(pred, dict):
        return [], []
    reps, res = pred.get("replicates"), pred.get("residuals_log")
    if not isinstance(reps, list) or not isinstance(res, list) or not reps or not res:
        raise bad_value(f"{source}: prediction", "...", "needs non-empty 'replicates' and "
                        "'residuals_log' lists", "the prediction section raysweep fit writes")
    out = []
    for i, r in enumerate(reps):
        ps = r.get("params") if isinstance(r, dict) else None
        if not isinstance(ps, dict) or any(k not in ps for k in LAW_KEYS):
            raise bad_value(f"{source}: prediction.replicates[{i}].params", ps,
                            "missing law parameters", "an object with " + ", ".join(LAW_KEYS))
        cap = {}
        for fam, c in ((r.get("capacity") or {}).items() if use_capacity else ()):
            if isinstance(c, dict) and all(k in c for k in CAP_KEYS):
                cap[str(fam)] = {k: float(c[k]) for k in CAP_KEYS}
        out.append({"params": {k: float(ps[k]) for k in LAW_KEYS}, "capacity": cap})
    resid = [check_number(f"{source}: prediction.residuals_log[{i}]", v)
             for i, v in enumerate(res)]
    return out, resid


def _gmse_range(fit: dict) -> dict[str, tuple[float, float]] | None:
    """Per-family [min, max] GMSE of the fitted parts: ``ranges.gmse`` (exact, the rows
    fitted), else the report's ``formats`` section; None when neither is there."""
    ranges = fit.get("ranges")
    exact = ranges.get("gmse") if isinstance(ranges, dict) else None
    if isinstance(exact, dict):
        try:
            return {str(f): (float(v[0]), float(v[1])) for f, v in exact.items()}
        except (TypeError, ValueError, IndexError, KeyError):
            pass
    formats = fit.get("formats")
    if not isinstance(formats, dict):
        return None
    out: dict[str, list[float]] = {}
    for f in formats.values():
        for p in (f.get("parts") or []) if isinstance(f, dict) else []:
            try:
                fam, g = str(p["family"]), float(p["gmse"])
            except (KeyError, TypeError, ValueError):
                continue
            lo, hi = out.get(fam, (g, g))
            out[fam] = [min(lo, g), max(hi, g)]
    return {k: (v[0], v[1]) for k, v in out.items()} or None


def _range(fit: dict, key: str) -> tuple[float, float] | None:
    """``fit["ranges"][key]`` as (lo, hi) when recorded, else None."""
    r = (fit.get("ranges") or {}).get(key) if isinstance(fit.get("ranges"), dict) else None
    try:
        lo, hi = float(r[0]), float(r[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return (lo, hi)


def _parts(rep) -> list:
    return [p for p in (getattr(rep, "parts", None) or (rep,))
            if not getattr(p, "is_identity", False)]


def spec_capacity(rep, law: dict) -> tuple[float, list[str]]:
    """rho of one role's representation under ``law`` (product over parts), and flags."""
    from raysweep.fit.laws import PAPER_CAPACITY, tanh_capacity

    rho, flags = 1.0, []
    fitted = law["name"] == "fit"
    for part in _parts(rep):
        fam, g = str(part.family), float(part.gmse().value)
        spec = getattr(part, "spec", fam)
        cap = law["capacity"].get(fam) or law["capacity"].get("*")
        if cap is None:
            cap = PAPER_CAPACITY
            known = ", ".join(sorted(law["capacity"])) or "none"
            flags.append(f"unknown_family: {spec}: family {fam!r} is not in the fit "
                         f"(fitted: {known}); the paper's curve is used")
        elif fitted and law["gmse_range"] is not None:
            lo, hi = law["gmse_range"].get(fam, (None, None))
            if lo is not None and not (lo * (1 - 1e-9) <= g <= hi * (1 + 1e-9)):
                flags.append(f"gmse_extrapolation: {spec}: GMSE {g:.4g} outside the fitted "
                             f"range [{lo:.4g}, {hi:.4g}] of family {fam!r}")
        if not fitted and fam not in PAPER_FAMILIES:
            flags.append(f"paper_curve_family: {spec}: the paper's curve was fitted on scalar "
                         f"quantization (int, fp), not family {fam!r}")
        r = tanh_capacity(g, cap["L"], cap["F"], cap["C"])
        if r <= 0.0:
            flags.append(f"zero_capacity: {spec}: GMSE {g:.4g} >= 1 carries nothing (rho 0)")
        rho *= r
    return rho, flags


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise bad_value("--role", role, "unknown role", ROLES)
    return role


def _pareto(rows: dict[str, dict]) -> set[str]:
    """Specs no other spec beats on both loss and bits (ties on both: all kept)."""
    front = set()
    for s, r in rows.items():
        dominated = any(o["loss"] <= r["loss"] and o["bits_per_element"] <= r["bits_per_element"]
                        and (o["loss"] < r["loss"] or o["bits_per_element"] < r["bits_per_element"])
                        for t, o in rows.items() if t != s)
        if not dominated:
            front.add(s)
    return front


def predict(specs: list[str], law: str | dict | None = "paper", n: float | None = None,
            d: float | None = None, budget_bits: float | None = None,
            budget_flops: float | None = None, role: str = "both") -> dict:
    """The ``raysweep predict --json`` object for ``specs`` (see the module docstring)."""
    from raysweep.fit.laws import unified_loss
    from raysweep.formats import parse

    if not specs:
        raise bad_value("SPEC", list(specs), "no spec given", "one or more specs, e.g. int4")
    role = _check_role(role)
    n = None if n is None else check_number("--n", n, 0.0, open_lo=True)
    d = None if d is None else check_number("--d", d, 0.0, open_lo=True)
    if budget_bits is not None and budget_flops is not None:
        raise RaysweepError("--budget-bits and --budget-flops: give one budget, not both")
    if budget_bits is not None:
        budget_bits = check_number("--budget-bits", budget_bits, 0.0, open_lo=True)
        if n is not None:
            raise bad_value("--n", n, "not allowed with --budget-bits (N = B / bits)", None)
    if budget_flops is not None:
        budget_flops = check_number("--budget-flops", budget_flops, 0.0, open_lo=True)
        if d is not None:
            raise bad_value("--d", d, "not allowed with --budget-flops (D = C / (6 N))", None)
    reps = {s: parse(s) for s in dict.fromkeys(specs)}  # parse all before any GMSE
    L = load_law(law)
    p = L["params"]

    budget = None
    if budget_bits is not None:
        tokens = d if d is not None else TOKENS_PER_PARAM * budget_bits / 16.0
        budget = {"kind": "bits", "value": budget_bits,
                  "dense_bf16_loss": unified_loss(budget_bits / 16.0, tokens, 1.0, p)}
    elif budget_flops is not None:
        if n is None:
            n = math.sqrt(budget_flops / (6.0 * TOKENS_PER_PARAM))
        tokens = budget_flops / (6.0 * n)
        budget = {"kind": "flops", "value": budget_flops}
    else:
        n = DEFAULT_N if n is None else n
        tokens = d if d is not None else TOKENS_PER_PARAM * n

    law_flags = list(L["notes"])
    if L["name"] == "fit":
        if L["gmse_range"] is None:
            law_flags.append("gmse_range_unknown: the fit.json records no GMSE range "
                             "(no 'formats' section): GMSE extrapolation not checked")
        for key, rng in (("n_params", L["n_range"]), ("tokens", L["tokens_range"])):
            if rng is None:
                law_flags.append(f"{key}_range_unknown: the fit.json records no {key} range "
                                 f"('ranges.{key}'): extrapolation in {key} not checked")

    rows: dict[str, dict] = {}
    for s, rep in reps.items():
        g = rep.gmse()
        bits = float(rep.bits_per_element)
        rho1, flags = spec_capacity(rep, L)
        rho_w = rho1 if role in ("weights", "both") else 1.0
        rho_a = rho1 if role in ("activations", "both") else 1.0
        rho = rho_w * rho_a
        n_f = budget_bits / (bits if role != "activations" else 16.0) if budget_bits else n
        loss = unified_loss(n_f, tokens, rho, p)
        dense = unified_loss(n_f, tokens, 1.0, p)
        for key, rng, val in (("n_params", L["n_range"], n_f), ("tokens", L["tokens_range"],
                                                                tokens)):
            # the fitted range comes from exp(ln N): allow its rounding (1e-9)
            if rng is not None and not (rng[0] * (1 - 1e-9) <= val <= rng[1] * (1 + 1e-9)):
                flags.append(f"{key}_extrapolation: {key} {val:.4g} outside the fitted range "
                             f"[{rng[0]:.4g}, {rng[1]:.4g}]")
        rows[s] = {"gmse": g.value, "stderr": g.stderr, "method": g.method,
                   "bits_per_element": bits, "family": rep.family, "rho_weights": rho_w,
                   "rho_activations": rho_a, "rho": rho, "effective_params_multiplier": rho,
                   "n_params": n_f, "tokens": tokens, "loss": loss, "dense_loss": dense,
                   "excess_loss": loss - dense,
                   "loss_pi95": _loss_interval(rep, L, role, n_f, tokens), "flags": flags}
    ranking = sorted(rows, key=lambda s: (rows[s]["loss"], rows[s]["bits_per_element"]))
    front = _pareto(rows)
    for i, s in enumerate(ranking, 1):
        rows[s]["rank"] = i
        rows[s]["pareto"] = s in front
    law_out = {k: L[k] for k in ("name", "source", "fit_law", "params", "capacity")}
    return {"law": law_out, "role": role, "budget": budget,
            "n_params": None if budget_bits else n, "tokens": tokens, "formats": rows,
            "ranking": ranking, "pareto": [s for s in ranking if s in front],
            "flags": law_flags}


def _loss_interval(rep, law: dict, role: str, n: float, tokens: float,
                   level: float = 0.95, draws: int = 20) -> list[float] | None:
    """95% prediction interval of the loss from the fit's replicates and residuals (the
    method of :meth:`raysweep.fit.FitResult.predict_interval`); None without them."""
    import numpy as np

    from raysweep.fit.laws import unified_loss

    if not law.get("replicates"):
        return None
    logs = []
    for r in law["replicates"]:
        rl = {"name": "fit", "capacity": r["capacity"] or law["capacity"], "gmse_range": None}
        rho1, _ = spec_capacity(rep, rl)
        rho = rho1 ** 2 if role == "both" else rho1
        logs.append(math.log(unified_loss(n, tokens, rho, r["params"])))
    rng = np.random.default_rng(0)
    res = np.asarray(law["residuals"], float)
    sample = (np.array(logs)[:, None] + rng.choice(res, size=(len(logs), draws))).ravel()
    lo, hi = np.percentile(sample, [50 * (1 - level), 50 * (1 + level)])
    return [float(math.exp(lo)), float(math.exp(hi))]


def format_prediction(out: dict) -> str:
    """A readable text table of :func:`predict`'s object."""
    law = out["law"]
    head = f"law: {law['name']} ({law['source']})"
    if out["budget"]:
        b = out["budget"]
        head += f"; budget: {b['value']:.4g} {b['kind']}"
        if b["kind"] == "bits":
            head += f" (dense bf16 loss at that memory: {b['dense_bf16_loss']:.4f})"
    n = out["n_params"]
    head += f"; role: {out['role']}; N = {'B / bits' if n is None else f'{n:.4g}'}, " \
            f"D = {out['tokens']:.4g}"
    cols = ("rank", "spec", "gmse", "bits", "family", "rho", "N", "loss", "95% PI", "excess",
            "pareto")
    lines = [cols]
    for s in out["ranking"]:
        r = out["formats"][s]
        pi = r.get("loss_pi95")
        lines.append((str(r["rank"]), s, f"{r['gmse']:.4g}", f"{r['bits_per_element']:.4g}",
                      r["family"], f"{r['rho']:.4f}", f"{r['n_params']:.4g}",
                      f"{r['loss']:.4f}", f"[{pi[0]:.4f}, {pi[1]:.4f}]" if pi else "-",
                      f"{r['excess_loss']:+.4f}", "*" if r["pareto"] else ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    table = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    flags = [f"  {s}: {f}" for s in out["ranking"] for f in out["formats"][s]["flags"]]
    tail = [f"note: {f}" for f in out["flags"]]
    return "\n".join([head, *table] + (["flags:", *flags] if flags else []) + tail)
