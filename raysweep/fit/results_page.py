"""The generated tables of docs/results.md, rendered from committed reference studies.

``python -m raysweep.fit.results_page [DOC] [--check]``

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
import re
import sys
from pathlib import Path

from raysweep.errors import RaysweepError
from raysweep.fit.report import fmt, fmt_ci, gmse_ordering, markdown_table

BLOCK = re.compile(
    r"(<!-- refdoc:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /refdoc:(?P=name) -->)", re.S)


def _fmt3(v) -> str:
    return fmt(v, 3)


def _flag(flags: dict, *names: str) -> str:
    """The kind of the first flag found: "wide interval", "at the bound ...", "not identified"."""
    for n in names:
        if flags.get(n):
            return re.sub(r"\s*\[.*", "", flags[n].split(":")[0])
    return ""


def render(fit: dict, name: str) -> str:
    """Markdown tables for one reference study from its fit.json."""
    dec = fit.get("decoupled", {})
    by = (fit.get("bootstrap") or {}).get("cluster_by")
    ci_note = (f"Intervals: 95% bootstrap, full refits of "
               f"{'WSD-trunk' if by == 'trunk_id' else '(N, D)'}-cluster resamples."
               if fit.get("ci") else
               "No intervals (fit.json made with --bootstrap 0).")
    lines = [f"Generated from `data/reference/{name}/fit.json` by "
             "`python -m raysweep.fit.results_page`"
             f" ({fit.get('n_points', '?')} runs). {ci_note}", ""]
    lines += ["Fit quality (RMSE on the fitted runs):", ""]
    lines += markdown_table(["law", "runs", "RMSE log-loss", "RMSE loss", "status"],
                    [[law, r.get("n_points", "-"), _fmt3(r.get("rmse_log")), _fmt3(r.get("rmse")),
                      r.get("status", "error")] for law, r in fit.get("laws", {}).items()])
    if "params" in fit:
        rows = [[k, fmt(v, 4), fmt_ci(fit["ci"].get(k)), fmt_ci(dec.get("ci", {}).get(k)),
                 fmt(dec.get("params", {}).get(k), 4), _flag(fit["flags"], k)]
                for k, v in fit["params"].items()]
        fixed = fit.get("fixed") or {}
        rows += [[f"{fam}.{k}", fmt(v, 4),
                  "fixed" if f"{fam}.{k}" in fixed else fmt_ci(fit["ci"].get(f"{fam}.{k}")),
                  "-", "-", "fixed at 1" if f"{fam}.{k}" in fixed else
                  _flag(fit["flags"], f"{fam}.{k}", fam)]
                 for fam, ps in fit.get("capacity", {}).items() for k, v in ps.items()]
        lines += ["", "Parameters, unified (tanh) law and decoupled law:", ""]
        lines += markdown_table(["parameter", "unified", "unified 95%", "decoupled 95%",
                                 "decoupled", "flag"], rows)
    single = {}
    for r in fit.get("single_run_rho", []):
        if r.get("rho") is not None:  # None: the run's rho has no solution (beyond the law)
            single.setdefault(r["label"], []).append(r["rho"])
    rows = []
    for lab, f in fit.get("formats", {}).items():
        if not f["parts"]:
            continue
        parts = ", ".join(f"{p['role'][0].upper()}:{p['spec']} {_fmt3(p['gmse'])}"
                          for p in f["parts"])
        one = single.get(lab)
        rows.append([lab, parts, f["runs"], _fmt3(f["rho_free"]), fmt_ci(f["rho_free_ci"]),
                     _fmt3(f["rho_unified"]), _fmt3(f.get("rho_paper")),
                     _fmt3(sum(one) / len(one)) if one else "-"])
    lines += ["", "Capacity per format (GMSE per part; free rho = decoupled law; paper law = "
                  "published (L, F, C) = (1.0, 0.41, 1.39); single-run = mean of the "
                  "per-run rho):", ""]
    lines += markdown_table(["format", "parts: GMSE", "runs", "rho free", "free 95%",
                             "rho tanh fit", "rho paper law", "single-run"], rows)
    lines += ["", gmse_ordering(fit.get("formats", {}))]
    cross = fit.get("cross_family")
    if cross and "formats" in cross:
        pairs = ", ".join(f"{a}={b}" for a, b in cross["share"].items())
        lines += ["", f"Cross-family ({pairs}: one capacity curve): RMSE of log-loss "
                      f"{_fmt3(cross['rmse_log'])} with {cross['n_params']} parameters against "
                      f"{_fmt3(cross['rmse_log_separate'])} with {cross['n_params_separate']} "
                      "for separate curves:", ""]
        lines += markdown_table(["format", "rho shared curve", "rho own curve", "rho free"],
                        [[lab, _fmt3(r["rho_shared_curve"]), _fmt3(r["rho_own_curve"]),
                          _fmt3(r["rho_free"])] for lab, r in cross["formats"].items()])
    comp = fit.get("composability", {})
    if comp.get("entries"):
        lines += ["", f"Composability (free rho of each combination vs the product of its "
                      f"marginals; max |error| {_fmt3(comp['max_abs_error'])}, mean "
                      f"{_fmt3(comp['mean_abs_error'])}):", ""]
        lines += markdown_table(["format", "measured", "measured 95%", "product", "error"],
                        [[e["format"], _fmt3(e["measured"]), fmt_ci(e.get("measured_ci")),
                          _fmt3(e["product"]), fmt(e["error"], 2)] for e in comp["entries"]])
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
    ap = argparse.ArgumentParser(prog="python -m raysweep.fit.results_page",
                                 description=__doc__.split("\n")[0])
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
