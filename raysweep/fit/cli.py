"""``raysweep fit TABLE [--law LAW] [--bootstrap K] [--holdout EXPR] [--json OUT]``; ``report``.

Prints a short human-readable summary; ``--json OUT`` writes exactly the
contract's fields (docs/architecture.md, "Fit — contract") atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

from raysweep.atomic import atomic_write_bytes, clean_json


def write_atomic(path: str | Path, text: str | bytes, mkdir: bool = True) -> Path:
    """Write to a temp file in the same directory, then ``os.replace``: never half-written.

    The file gets the usual mode of a new file (:func:`raysweep.atomic.file_mode`). With
    ``mkdir=False`` a missing parent directory is a FitError naming the path
    (``raysweep fit --json`` into a mistyped directory must not create it), and so is
    a path that is an existing directory.
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        check_json_path(path)
    return atomic_write_bytes(path, text.encode() if isinstance(text, str) else text)


def check_json_path(path: str | Path) -> None:
    """``--json OUT``: OUT must be a file path in an existing directory (a FitError)."""
    from raysweep.errors import FitError

    path = Path(path)
    if path.is_dir():
        raise FitError(f"--json {str(path)!r}: is a directory; allowed: a file path "
                       f"(e.g. {str(path / 'fit.json')!r})")
    if not path.parent.is_dir():
        raise FitError(f"--json {str(path)!r}: directory {str(path.parent)!r} does not exist")


def write_json(path: str | Path, obj: dict, mkdir: bool = True) -> Path:
    return write_atomic(path, json.dumps(clean_json(obj), indent=2) + "\n", mkdir=mkdir)


def cmd_report(args) -> int:
    """``raysweep report STUDY_DIR``: report.md, report.html, fit.json and plots."""
    from raysweep.fit.report import make_report

    path = make_report(args.study_dir, bootstrap=getattr(args, "bootstrap", 50))
    print(f"wrote {path}, {path.with_suffix('.html')}, {path.parent / 'fit.json'}, "
          f"{path.parent / 'plots'}/")
    return 0


def summary(res) -> str:
    """A few lines: law, status, parameters with intervals, errors, flags."""
    lines = [f"law {res.law}: {res.n_points} points, status {res.status.value}"]
    for name, v in res.params.items():
        lines.append(f"  {name:>16} = {_interval(v, res.ci.get(name))}")
    for fam, ps in res.capacity.items():
        for name, v in ps.items():
            lines.append(f"  {fam + '.' + name:>16} = {_interval(v, res.ci.get(f'{fam}.{name}'))}")
    for lab, r in res.rho.items():
        lines.append(f"  rho[{lab}] = {_interval(r, res.ci.get(f'rho[{lab}]'))}")
    fe, he = res.fit_error, res.holdout_error
    lines.append(f"  fit error: rmse_log {fe['rmse_log']:.4g}, rmse {fe['rmse']:.4g}")
    if he["n"]:
        lines.append(f"  holdout ({he['n']} rows): rmse_log {he['rmse_log']:.4g}, "
                     f"rmse {he['rmse']:.4g}")
        if he.get("in_pi95") is not None:
            lines.append(f"  holdout: {he['in_pi95']} of {he['n']} held-out runs inside their "
                         "95% prediction interval")
        else:
            lines.append("  holdout: prediction intervals need --bootstrap K")
    lines += [f"  fixed {k}: {v}" for k, v in res.fixed.items()]
    lines += [f"  free {k}: {v}" for k, v in res.free.items()]
    b = res.bootstrap
    if b:
        lines.append(f"  bootstrap: {b['replicates']} full refits over {b['clusters']} clusters "
                     f"({b['cluster_by']})")
        lines += [f"  bootstrap skewed {k}: quantile skewness {v:+.2f}"
                  for k, v in b["skewed"].items()]
        lines += [f"  bootstrap multimodal {k}: bimodality coefficient {v:.2f}"
                  for k, v in b["multimodal"].items()]
    lines += [f"  flag {k}: {v}" for k, v in res.flags.items()]
    lines += [f"  note: {n}" for n in res.notes]
    return "\n".join(lines)


def _interval(v, ci) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" + (f"  [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")


def parse_share(items: list[str]) -> dict[str, str]:
    """``["noise=int"]`` -> ``{"noise": "int"}``; a malformed item is a FitError."""
    from raysweep.errors import FitError

    out = {}
    for item in items:
        fam, eq, to = item.partition("=")
        if not (eq and fam.strip() and to.strip()):
            raise FitError(f"--share-family {item!r}: expected FAMILY=FAMILY, e.g. noise=int")
        out[fam.strip()] = to.strip()
    return out


PREDICT_FIELDS = ("format", "weights", "activations", "n", "d")
PREDICT_FORM = ("'format=W|A,n=N,d=D' (e.g. 'format=int4|int4,n=1e8,d=2e9'), or "
                "'weights=W,activations=A,n=N,d=D' (a missing role is bf16; format= then "
                "names the row), or a CSV file with columns n_params, tokens and format "
                "or weights/activations")


def parse_predict(items: list[str]):
    """``--predict`` values -> a table of rows to predict (columns format, weights,
    activations, n_params, tokens, loss); a bad item is a FitError naming the field and
    the allowed values."""
    import pandas as pd

    from raysweep.errors import FitError, check_number

    rows = []
    for item in items:
        if item.endswith(".csv") and "=" not in item:
            rows += _predict_csv(item)
            continue
        fields: dict[str, str] = {}
        for part in item.split(","):
            key, eq, value = part.partition("=")
            key = key.strip()
            if not eq or key not in PREDICT_FIELDS or not value.strip():
                why = (f"unknown field {key!r}" if eq and key not in PREDICT_FIELDS
                       else f"{part.strip()!r} is not FIELD=VALUE")
                raise FitError(f"--predict {item!r}: {why}; allowed fields: "
                               f"{', '.join(PREDICT_FIELDS)}; form: {PREDICT_FORM}")
            if key in fields:
                raise FitError(f"--predict {item!r}: field {key!r} given twice")
            if "=" in value or any(c.isspace() for c in value.strip()):
                raise FitError(f"--predict {item!r}: {part.strip()!r} is not FIELD=VALUE "
                               "(separate the fields with ','); form: " + PREDICT_FORM)
            fields[key] = value.strip()
        for key in ("n", "d"):
            if key not in fields:
                raise FitError(f"--predict {item!r}: field {key!r} is missing; form: "
                               f"{PREDICT_FORM}")
        rows.append(_predict_row(item, fields.get("format"), fields.get("weights"),
                                 fields.get("activations"),
                                 check_number(f"--predict {item!r}: n", fields["n"], 0.0,
                                              open_lo=True, error=FitError),
                                 check_number(f"--predict {item!r}: d", fields["d"], 0.0,
                                              open_lo=True, error=FitError)))
    return pd.DataFrame(rows)


def _predict_row(where: str, fmt, w, a, n, d) -> dict:
    from raysweep.errors import FitError

    if w is None and a is None:
        if fmt is None or fmt.count("|") != 1:
            raise FitError(f"--predict {where!r}: format {fmt!r} must be 'W|A' (weights and "
                           "activations specs, e.g. int4|bf16), or give weights= and/or "
                           f"activations=; form: {PREDICT_FORM}")
        w, a = (x.strip() for x in fmt.split("|"))
    w, a = w or "bf16", a or "bf16"
    return {"format": fmt or f"{w}|{a}", "weights": w, "activations": a,
            "n_params": float(n), "tokens": float(d), "loss": 1.0}


def _predict_csv(path: str) -> list[dict]:
    import pandas as pd

    from raysweep.errors import FitError, check_number

    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise FitError(f"--predict {path!r}: cannot read the CSV ({type(exc).__name__}: "
                       f"{exc})") from None
    missing = [c for c in ("n_params", "tokens") if c not in df.columns]
    if missing or not ({"format", "weights", "activations"} & set(df.columns)):
        raise FitError(f"--predict {path!r}: needs columns n_params, tokens and format or "
                       f"weights/activations; has {sorted(map(str, df.columns))}")
    def get(r, c):
        return None if c not in r or pd.isna(r[c]) else str(r[c])

    out = []
    for i, r in df.iterrows():
        out.append(_predict_row(f"{path} row {i}", get(r, "format"), get(r, "weights"),
                                get(r, "activations"),
                                check_number(f"--predict {path} row {i}: n_params",
                                             r["n_params"], 0.0, open_lo=True, error=FitError),
                                check_number(f"--predict {path} row {i}: tokens",
                                             r["tokens"], 0.0, open_lo=True, error=FitError)))
    return out


def predictions(res, queries) -> list[dict]:
    """Predicted loss (and, with a bootstrap, its 95% prediction interval) per query row."""
    loss = res.predict(queries)
    pi = res.predict_interval(queries) if res.samples else None
    out = []
    for i, q in enumerate(queries.to_dict("records")):
        out.append({"format": q["format"], "weights": q["weights"],
                    "activations": q["activations"], "n_params": q["n_params"],
                    "tokens": q["tokens"], "loss": float(loss[i]),
                    "pi95": None if pi is None else [float(pi["lo"][i]), float(pi["hi"][i])]})
    return out


def cmd_fit(args) -> int:
    from raysweep.errors import FitError
    from raysweep.fit import fit_table
    from raysweep.results import read_table

    if args.bootstrap < 0:
        raise FitError(f"--bootstrap must be >= 0 (number of refits; 0 = none), "
                       f"got {args.bootstrap}")
    if args.json:
        check_json_path(args.json)
    queries = parse_predict(getattr(args, "predict", None) or [])
    df = read_table(args.table)
    res = fit_table(df, law=args.law, bootstrap=args.bootstrap, holdout=args.holdout,
                    seed=getattr(args, "seed", 0),
                    share=parse_share(getattr(args, "share_family", None) or []),
                    capacity_L=getattr(args, "capacity_L", None) or "auto")
    print(summary(res))
    preds = predictions(res, queries) if len(queries) else []
    for p in preds:
        pi = (f"  95% prediction interval [{p['pi95'][0]:.4g}, {p['pi95'][1]:.4g}]"
              if p["pi95"] else "  (a prediction interval needs --bootstrap K)")
        print(f"  predict {p['format']} at N={p['n_params']:.4g}, D={p['tokens']:.4g}: "
              f"loss {p['loss']:.4g}{pi}")
    if args.json:
        out = res.to_json()
        if preds:
            out["predictions"] = preds
        write_json(args.json, out, mkdir=False)
        print(f"wrote {args.json}")
    return 0


def cmd_predict(args) -> int:
    """``raysweep predict SPEC...``: zero-shot loss, capacity and ranking (raysweep.fit.predict)."""
    from raysweep.fit.predict import format_prediction, predict

    out = predict(list(args.specs), law=args.law, n=args.n, d=args.d,
                  budget_bits=args.budget_bits, budget_flops=args.budget_flops,
                  role=args.role)
    print(json.dumps(clean_json(out)) if args.json else format_prediction(out))
    return 0
