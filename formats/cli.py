"""``raysweep gmse SPEC... [--json]``: GMSE, bits and family of representation specs.

Default output is a readable table; ``--json`` prints one JSON object keyed by
each spec exactly as given (the contract in docs/architecture.md)::

    {"int4": {"gmse": 0.011543, "stderr": 0.0, "method": "exact",
              "bits_per_element": 4.0, "family": "int"}, ...}

Every spec is parsed before any GMSE is computed, so a bad spec fails fast
(SpecError -> one line on stderr, exit 2, from raysweep.cli).
"""

from __future__ import annotations

import json


def gmse_rows(specs: list[str]) -> dict[str, dict]:
    """{spec as given: {gmse, stderr, method, bits_per_element, family}}."""
    from raysweep.formats import parse

    reps = {s: parse(s) for s in specs}
    out = {}
    for s, rep in reps.items():
        g = rep.gmse()
        out[s] = {"gmse": g.value, "stderr": g.stderr, "method": g.method,
                  "bits_per_element": rep.bits_per_element, "family": rep.family}
    return out


def format_table(rows: dict[str, dict]) -> str:
    """Aligned text table of :func:`gmse_rows` output."""
    head = ("spec", "gmse", "stderr", "method", "bits", "family")
    lines = [head] + [(s, f"{r['gmse']:.6g}", f"{r['stderr']:.2g}", r["method"],
                       f"{r['bits_per_element']:g}", r["family"]) for s, r in rows.items()]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines)


def cmd_gmse(args) -> int:
    rows = gmse_rows(list(args.specs))
    print(json.dumps(rows) if args.json else format_table(rows))
    return 0
