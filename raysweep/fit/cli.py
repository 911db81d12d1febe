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


def cmd_fit(args) -> int:
    from raysweep.errors import FitError
    from raysweep.fit import fit_table
    from raysweep.results import read_table

    if args.bootstrap < 0:
        raise FitError(f"--bootstrap must be >= 0 (number of refits; 0 = none), "
                       f"got {args.bootstrap}")
    if args.json:
        check_json_path(args.json)
    df = read_table(args.table)
    res = fit_table(df, law=args.law, bootstrap=args.bootstrap, holdout=args.holdout,
                    seed=getattr(args, "seed", 0),
                    share=parse_share(getattr(args, "share_family", None) or []))
    print(summary(res))
    if args.json:
        write_json(args.json, res.to_json(), mkdir=False)
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
