"""Composability: is the capacity of a combination the product of its marginals?

Paper §1: ``rho(R1 and R2) ~= rho(R1) rho(R2)`` for weights x activations,
sparse x quantized, and three-way combinations; the paper finds the product
within about 1e-2 in rho except at 2-bit compression.

Check: the decoupled law gives every representation label its own free rho
(``measured``). A label is a *combination* when it has two or more
non-identity parts (an ``int4|int4`` run has weights part ``W:int4`` and
activations part ``A:int4``; ``sparse50+int4|bf16`` has ``W:sparse50`` and
``W:int4``). Its *marginals* are the labels whose only part is one of those
(``int4|bf16`` and ``bf16|int4``); ``product`` is the product of their
measured rhos and ``error = measured - product``. Two-part combinations are
also arranged as matrices (rows: the first part, columns: the second) for the
heatmaps of the report.
"""

from __future__ import annotations

import math

import numpy as np

from raysweep.fit.data import Design, Part

ROLE_TAG = {"weights": "W", "activations": "A"}


def part_name(p: Part) -> str:
    """``W:int4``; ``W:int@0.0115`` when the spec text is unknown."""
    spec = p.spec or f"{p.family}@{p.gmse:.3g}"
    return f"{ROLE_TAG[p.role]}:{spec}"


def composability(design: Design, rho: dict, ci: dict | None = None) -> dict:
    """Compare the free rho of each combination with the product of its marginals.

    ``rho`` (and optionally ``ci`` with ``rho[label]`` keys) come from a
    decoupled fit of the same table.
    """
    ci = ci or {}
    parts_of: dict[str, tuple[str, ...]] = {}
    for lab, parts in zip(design.labels, design.row_parts):
        parts_of.setdefault(lab, tuple(part_name(p) for p in parts))
    single = {ps[0]: lab for lab, ps in parts_of.items() if len(ps) == 1}
    entries, missing = [], []
    for lab, ps in sorted(parts_of.items()):
        if len(ps) < 2 or rho.get(lab) is None:
            continue
        lacking = [p for p in ps if p not in single or rho.get(single[p]) is None]
        if lacking:
            missing.append({"format": lab, "parts": list(ps), "lacking": lacking})
            continue
        product = math.prod(rho[single[p]] for p in ps)
        entries.append({"format": lab, "parts": list(ps), "measured": rho[lab],
                        "measured_ci": ci.get(f"rho[{lab}]"), "product": product,
                        "error": rho[lab] - product,
                        "marginals": {p: single[p] for p in ps}})
    errs = np.array([abs(e["error"]) for e in entries])
    out = {
        "n_combinations": len(entries) + len(missing),
        "entries": entries,
        "missing_marginals": missing,
        "max_abs_error": float(errs.max()) if len(errs) else None,
        "mean_abs_error": float(errs.mean()) if len(errs) else None,
        "matrices": _matrices(entries),
    }
    if not entries and not missing:
        out["note"] = "the table has no combined representations (no label with two or more parts)"
    elif missing:
        out["note"] = (f"{len(missing)} combination(s) lack a marginal run (a representation "
                       "with only that one part), so their product cannot be formed")
    return out


def _matrices(entries: list[dict]) -> list[dict]:
    """Two-part combinations grouped by the roles of their parts, as row x column grids."""
    groups: dict[str, list[dict]] = {}
    for e in entries:
        if len(e["parts"]) != 2:
            continue
        r1, r2 = (p.split(":")[0] for p in e["parts"])
        kind = {"WA": "weights x activations", "WW": "weights: first x second part",
                "AA": "activations: first x second part"}.get(r1 + r2, f"{r1} x {r2}")
        groups.setdefault(kind, []).append(e)
    out = []
    for kind, es in groups.items():
        rows = sorted({e["parts"][0] for e in es})
        cols = sorted({e["parts"][1] for e in es})
        grids = {k: [[None] * len(cols) for _ in rows] for k in ("measured", "product", "error")}
        for e in es:
            i, j = rows.index(e["parts"][0]), cols.index(e["parts"][1])
            for k in grids:
                grids[k][i][j] = e[k]
        out.append({"kind": kind, "rows": rows, "cols": cols, **grids})
    return out
