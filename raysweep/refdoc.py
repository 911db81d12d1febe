"""The generated tables of docs/results.md, rendered from committed reference studies.

``python -m raysweep.refdoc [DOC] [--check]``

DOC (default ``docs/results.md``) holds blocks delimited by
``<!-- refdoc:NAME -->`` and ``<!-- /refdoc:NAME -->``. Each is replaced by tables
rendered from ``data/reference/NAME/fit.json``, the file ``raysweep report
data/reference/NAME`` writes from that study's ``results.csv``. The text around
the blocks is left as it is. ``--check`` rewrites nothing and exits 1 if any
block differs from what the data gives (tests/test_refdoc.py runs it, and refits
every committed table against its fit.json, so the numbers in the docs cannot
drift from the data).

Rendering is pure formatting of fit.json (no fitting), so it is deterministic.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from raysweep.errors import RaysweepError
from raysweep.report import gmse_ordering

BLOCK = re.compile(
    r"(<!-- refdoc:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /refdoc:(?P=name) -->)", re.S)


def _f(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}g}"


def _ci(ci, digits: int = 3) -> str:
    return f"[{_f(ci[0], digits)}, {_f(ci[1], digits)}]" if ci else "-"


def _flag(flags: dict, *names: str) -> str:
    """The kind of the first flag found: "wide interval", "at the bound ...", "not identified"."""
    for n in names:
        if flags.get(n):
            return re.sub(r"\s*\[.*", "", flags[n].split(":")[0])
    return ""


def _table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def render(fit: dict, name: str) -> str:
    """Markdown tables for one reference study from its fit.json."""
    dec = fit.get("decoupled", {})
    ci_note = ("Intervals: 95% bootstrap over runs." if fit.get("ci") else
               "No intervals (fit.json made with --bootstrap 0).")
    lines = [f"Generated from `data/reference/{name}/fit.json` by `python -m raysweep.refdoc`"
             f" ({fit.get('n_points', '?')} runs). {ci_note}", ""]
    lines += ["Fit quality (RMSE on the fitted runs):", ""]
    lines += _table(["law", "runs", "RMSE log-loss", "RMSE loss", "status"],
                    [[law, r.get("n_points", "-"), _f(r.get("rmse_log")), _f(r.get("rmse")),
                      r.get("status", "error")] for law, r in fit.get("laws", {}).items()])
    if "params" in fit:
        rows = [[k, _f(v, 4), _ci(fit["ci"].get(k)), _ci(dec.get("ci", {}).get(k)),
                 _f(dec.get("params", {}).get(k), 4), _flag(fit["flags"], k)]
                for k, v in fit["params"].items()]
        rows += [[f"{fam}.{k}", _f(v, 4), _ci(fit["ci"].get(f"{fam}.{k}")), "-", "-",
                  _flag(fit["flags"], f"{fam}.{k}", fam)]
                 for fam, ps in fit.get("capacity", {}).items() for k, v in ps.items()]
        lines += ["", "Parameters, unified (tanh) law and decoupled law:", ""]
        lines += _table(["parameter", "unified", "unified 95%", "decoupled 95%", "decoupled",
                         "flag"], rows)
    single = {}
    for r in fit.get("single_run_rho", []):
        single.setdefault(r["label"], []).append(r["rho"])
    rows = []
    for lab, f in fit.get("formats", {}).items():
        if not f["parts"]:
            continue
        parts = ", ".join(f"{p['role'][0].upper()}:{p['spec']} {_f(p['gmse'])}"
                          for p in f["parts"])
        one = single.get(lab)
        rows.append([lab, parts, f["runs"], _f(f["rho_free"]), _ci(f["rho_free_ci"]),
                     _f(f["rho_unified"]), _f(f.get("rho_paper")),
                     _f(sum(one) / len(one)) if one else "-"])
    lines += ["", "Capacity per format (GMSE per part; free rho = decoupled law; paper law = "
                  "published (L, F, C) = (1.0, 0.41, 1.39); single-run = mean of the "
                  "per-run rho):", ""]
    lines += _table(["format", "parts: GMSE", "runs", "rho free", "free 95%", "rho tanh fit",
                     "rho paper law", "single-run"], rows)
    lines += ["", gmse_ordering(fit.get("formats", {}))]
    cross = fit.get("cross_family")
    if cross and "formats" in cross:
        pairs = ", ".join(f"{a}={b}" for a, b in cross["share"].items())
        lines += ["", f"Cross-family ({pairs}: one capacity curve): RMSE of log-loss "
                      f"{_f(cross['rmse_log'])} with {cross['n_params']} parameters against "
                      f"{_f(cross['rmse_log_separate'])} with {cross['n_params_separate']} "
                      "for separate curves:", ""]
        lines += _table(["format", "rho shared curve", "rho own curve", "rho free"],
                        [[lab, _f(r["rho_shared_curve"]), _f(r["rho_own_curve"]),
                          _f(r["rho_free"])] for lab, r in cross["formats"].items()])
    comp = fit.get("composability", {})
    if comp.get("entries"):
        lines += ["", f"Composability (free rho of each combination vs the product of its "
                      f"marginals; max |error| {_f(comp['max_abs_error'])}, mean "
                      f"{_f(comp['mean_abs_error'])}):", ""]
        lines += _table(["format", "measured", "measured 95%", "product", "error"],
                        [[e["format"], _f(e["measured"]), _ci(e.get("measured_ci")),
                          _f(e["product"]), _f(e["error"], 2)] for e in comp["entries"]])
    elif comp.get("note"):
        lines += ["", f"Composability: {comp['note']}."]
    return "\n".join(lines) + "\n"


def update(doc: Path, root: Path, check: bool = False) -> list[str]:
    """Re-render every block of ``doc``; returns the names of blocks that changed."""
    text = doc.read_text()
    changed: list[str] = []

    def sub(m: re.Match) -> str:
        name = m.group("name")
        path = root / "data" / "reference" / name / "fit.json"
        if not path.is_file():
            raise RaysweepError(f"{doc}: block {name!r}: no {path} (run `raysweep report "
                                f"{path.parent}` first)")
        try:
            body = render(json.loads(path.read_text()), name)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RaysweepError(f"{path}: not a fit.json written by `raysweep report` "
                                f"({type(exc).__name__}: {exc})") from exc
        if body != m.group("body"):
            changed.append(name)
        return m.group(1) + body + m.group(4)

    new = BLOCK.sub(sub, text)
    if not check and new != text:
        from raysweep.atomic import atomic_write_text

        atomic_write_text(doc, new)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m raysweep.refdoc", description=__doc__.split(
        "\n")[0])
    ap.add_argument("doc", nargs="?", default="docs/results.md")
    ap.add_argument("--root", default=".", help="repository root (holds data/reference/)")
    ap.add_argument("--check", action="store_true", help="exit 1 if a block is out of date")
    args = ap.parse_args(argv)
    try:
        changed = update(Path(args.doc), Path(args.root), check=args.check)
    except (OSError, RaysweepError) as exc:
        print(f"raysweep: error: {exc}", file=sys.stderr)
        return 2
    if changed:
        print(("out of date: " if args.check else "updated: ") + ", ".join(changed))
        return 1 if args.check else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
