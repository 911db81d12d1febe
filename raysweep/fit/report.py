"""``raysweep report STUDY_DIR``: fit.json, report.md, report.html and plots/*.png.

``make_report(study_dir, bootstrap=50)`` reads the study's results table,
fits the unified law and the decoupled law (one free rho per format) with
bootstrap intervals, the other laws for comparison (no bootstrap), checks
composability, draws the plots and writes:

- ``fit.json``: the unified fit's contract fields at the top level (law,
  n_points, params, capacity, rho, ci, fit_error, holdout_error) plus
  ``status``, ``flags`` and ``notes``; ``decoupled`` (same fields);
  ``composability`` (see :mod:`raysweep.fit.compose`); ``laws`` (error and
  status of every law that could be fitted); ``formats`` (GMSE, bits and runs
  per format); ``single_run_rho`` (one row per compressed run with a dense run
  at the same (N, D): rho from the dense law (Panferov et al. 2025, fitting), see
  :mod:`raysweep.fit.single`); ``predict_table`` (each format predicted by the
  unified fit at the study's largest (N, D), with 95% prediction intervals, see
  :func:`predict_table`); the unified fit's ``fixed``, ``free``, ``ranges``,
  ``bootstrap`` and ``prediction`` (what ``raysweep predict --law`` reads);
- ``report.md`` (plots linked from ``plots/``) and ``report.html`` (plots
  embedded as base64: one self-contained file).

It says plainly what the data does not resolve: parameters flagged
``not_identified`` or with wide intervals, and formats whose rho interval
includes 1 (no measurable loss gap to dense; docs/cpu-scale notes).
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

from raysweep.errors import FitError, RaysweepError

OTHER_LAWS = ("chinchilla", "unified-logistic", "unified-logistic2", "kumar", "frantar")


def _table_path(study_dir: Path) -> Path:
    for name in ("results.parquet", "results.csv"):
        if (study_dir / name).exists():
            return study_dir / name
    raise FitError(f"study dir {str(study_dir)!r} has no results.parquet or results.csv")


def _study_name(study_dir: Path) -> str:
    p = study_dir / "study.yaml"
    if p.exists():
        import yaml

        try:
            data = yaml.safe_load(p.read_text()) or {}
            if isinstance(data, dict) and data.get("name"):
                return str(data["name"])
        except yaml.YAMLError:
            pass
    return study_dir.resolve().name


def _fit(df, law, bootstrap, seed=0, **opts):
    from raysweep.fit import fit_table

    try:
        return fit_table(df, law=law, bootstrap=bootstrap, seed=seed, **opts), None
    except RaysweepError as exc:
        return None, str(exc)


def _fit_json(res, err) -> dict:
    if res is None:
        return {"error": err}
    return {**res.to_json(), "status": res.status.value, "flags": res.flags,
            "notes": list(res.notes)}


def make_report(study_dir, bootstrap: int = 50) -> Path:
    """Fit, plot and write the report files into ``study_dir``; returns report.md's path."""
    from raysweep.atomic import atomic_write_json, atomic_write_text
    from raysweep.fit import make_design
    from raysweep.fit import plots as P
    from raysweep.fit.compose import composability
    from raysweep.fit.data import clean_rows
    from raysweep.results import read_table

    study_dir = Path(study_dir)
    df = read_table(_table_path(study_dir))
    df, _ = clean_rows(df)
    design = make_design(df, clean=False)
    unified, u_err = _fit(df, "unified", bootstrap)
    decoupled, d_err = _fit(df, "decoupled", bootstrap)
    laws = {"unified": _law_row(unified, u_err), "decoupled": _law_row(decoupled, d_err)}
    for law in OTHER_LAWS:
        laws[law] = _law_row(*_fit(df, law, 0))
    comp = (composability(design, decoupled.rho, decoupled.ci) if decoupled else
            {"note": f"no decoupled fit: {d_err}", "entries": [], "matrices": []})
    formats = _formats(df, design, unified, decoupled)
    single = _single(unified, df)
    cross = _cross_family(df, design, unified, formats)

    plots_dir = study_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    figs = [("loss_vs_n", "Loss vs N per format, with the fitted unified law",
             lambda p: P.loss_vs_n(df, design, unified or decoupled, p))]
    if design.families:
        figs.append(("rho_vs_gmse", "Capacity vs effective bits, fitted curve per family",
                     lambda p: P.rho_vs_gmse(design, unified, decoupled, p)))
    if comp.get("matrices"):
        figs.append(("composability", "Composability: measured, product, difference",
                     lambda p: P.composability(comp["matrices"], p)))
    figs.append(("pareto", "Loss vs bits per weight (Pareto view)",
                 lambda p: P.pareto(df, design, p)))
    if unified or decoupled:
        figs.append(("residuals", "Predicted vs observed loss",
                     lambda p: P.residuals(design, unified or decoupled, p)))
    images = [(title, draw(plots_dir / f"{name}.png")) for name, title, draw in figs]

    table = predict_table(df, design, unified, formats)
    fit_json = {**_fit_json(unified, u_err), "law": "unified", "decoupled":
                _fit_json(decoupled, d_err), "composability": comp, "laws": laws,
                "formats": formats, "single_run_rho": single.to_dict("records"),
                "cross_family": cross, "predict_table": table}
    atomic_write_json(study_dir / "fit.json", fit_json)
    blocks = _blocks(_study_name(study_dir), df, unified, u_err, decoupled, comp, laws, formats,
                     images, bootstrap, single, cross, table)
    atomic_write_text(study_dir / "report.md", _markdown(blocks, study_dir))
    atomic_write_text(study_dir / "report.html", _html(blocks))
    return study_dir / "report.md"


# Families whose capacity curve the paper's GMSE argument says should be the scalar
# quantizers' own: noise injection and floating-point grids (lloyd, ternary are "int").
SHARE_WITH_INT = ("noise", "fp")


def _cross_family(df, design, unified, formats) -> dict | None:
    """Does one capacity curve serve int and the other scalar families (the unified law)?

    Refits the unified law with ``noise`` and ``fp`` sharing the ``int`` curve
    (``raysweep fit --share-family noise=int``) and compares its error with the
    separate-curves fit, and each shared-family format's rho from the int curve
    with its free rho. None when the table has int and none of those families.
    """
    share = {f: "int" for f in SHARE_WITH_INT if f in design.families}
    if "int" not in design.families or not share or unified is None:
        return None
    res, err = _fit(df, "unified", 0, share=share)
    if res is None:
        return {"share": share, "error": err}
    fams = set(share)
    rows = {lab: {"rho_shared_curve": res.rho.get(lab), "rho_free": f["rho_free"],
                  "rho_own_curve": f["rho_unified"]}
            for lab, f in formats.items() if fams & {p["family"] for p in f["parts"]}}
    return {"share": share, "rmse_log": res.fit_error["rmse_log"],
            "rmse_log_separate": unified.fit_error["rmse_log"],
            "n_params": len(res.theta), "n_params_separate": len(unified.theta),
            "formats": rows}


def _cross_blocks(cross) -> list:
    if not cross:
        return []
    pairs = ", ".join(f"{a}={b}" for a, b in cross["share"].items())
    out: list = [("h", 2, "Cross-family: one capacity curve")]
    if "error" in cross:
        return out + [("p", f"The fit with {pairs} failed: {cross['error']}")]
    out += [("p", f"The unified law refitted with {pairs} (one curve for those families and "
                  f"int): RMSE of log-loss {fmt(cross['rmse_log'])} with "
                  f"{cross['n_params']} parameters, against {fmt(cross['rmse_log_separate'])} "
                  f"with {cross['n_params_separate']} for separate curves. If GMSE alone sets "
                  "the capacity (the unified law), the shared curve costs little and predicts the "
                  "other families' rho from int's."),
            ("table", ["format", "rho (shared curve)", "rho (own curve)", "rho (free)"],
             [[lab, fmt(r["rho_shared_curve"]), fmt(r["rho_own_curve"]), fmt(r["rho_free"])]
              for lab, r in cross["formats"].items()])]
    return out


def predict_table(df, design, unified, formats) -> dict | None:
    """The study's own formats predicted by its own unified fit at its largest (N, D):
    GMSE of each part, bits per weight, rho (the effective parameter multiplier: N rho
    dense-equivalent parameters) and the loss, with its 95% prediction interval when the
    fit has a bootstrap (:meth:`~raysweep.fit.FitResult.predict_interval`). None without
    a unified fit."""
    from raysweep.results import row_label

    if unified is None:
        return None
    n, d = float(df["n_params"].max()), float(df["tokens"].max())
    labels = [row_label(r) for _, r in df.iterrows()]
    first = df.iloc[[labels.index(lab) for lab in formats]].copy()
    first["n_params"], first["tokens"] = n, d
    loss = unified.predict(first)
    pi = unified.predict_interval(first) if unified.samples else None
    rows = {}
    for i, (lab, f) in enumerate(formats.items()):
        rho = unified.rho.get(lab)
        rows[lab] = {"gmse": [p["gmse"] for p in f["parts"]], "bits_weights": f["bits_weights"],
                     "rho": rho, "effective_params_multiplier": rho, "loss": float(loss[i]),
                     "loss_pi95": None if pi is None else [float(pi["lo"][i]),
                                                           float(pi["hi"][i])]}
    ranked = sorted(rows, key=lambda k: (rows[k]["loss"], rows[k]["bits_weights"]))
    return {"n_params": n, "tokens": d, "formats": rows, "ranking": ranked,
            "interval": "95% prediction interval (bootstrap of the law + resampled residuals)"
            if pi is not None else None}


def _predict_blocks(table) -> list:
    if not table:
        return []
    rows = [[lab, ", ".join(f"{g:.3g}" for g in r["gmse"]) or "-", fmt(r["bits_weights"], 3),
             fmt(r["rho"]), fmt(r["effective_params_multiplier"], 3), fmt(r["loss"]),
             fmt_ci(r["loss_pi95"])] for lab, r in
            ((k, table["formats"][k]) for k in table["ranking"])]
    return [("h", 2, "Predicted at the study's largest (N, D)"),
            ("p", f"The unified fit's prediction for each of the study's formats at N = "
                  f"{table['n_params']:.4g}, D = {table['tokens']:.4g}, best first; the "
                  "effective parameter multiplier is rho (N rho dense-equivalent parameters); "
                  + ("the interval is a 95% prediction interval for one new run (the "
                     "bootstrap replicates' laws plus a resampled residual)."
                     if table["interval"] else "no interval: the report ran without a "
                     "bootstrap.")
                  + " `raysweep predict SPEC --law fit.json` predicts other formats and sizes "
                    "from this fit."),
            ("table", ["format", "GMSE (parts)", "bits/weight", "rho", "param multiplier",
                       "loss", "95% PI"], rows)]


def _single(unified, df):
    """Single-run rho per compressed run (empty when there is no unified fit)."""
    import pandas as pd

    from raysweep.fit.single import SINGLE_RUN_COLUMNS, single_run_rho_table

    if unified is None:
        return pd.DataFrame({c: [] for c in SINGLE_RUN_COLUMNS})
    return single_run_rho_table(unified, df)


def _single_blocks(single) -> list:
    """A short table: single-run rho per format (mean, range over its runs)."""
    from raysweep.fit.single import single_run_summary

    if len(single) == 0:
        return []
    rows = [[lab, s["runs"], fmt(s["mean"]), f"[{fmt(s['min'], 3)}, {fmt(s['max'], 3)}]"]
            for lab, s in single_run_summary(single).items()]
    return [("h", 2, "Single-run capacity"),
            ("p", "rho = (1 + N^alpha / A (L - L_dense))^(-1/alpha) per compressed run, "
                  "from the dense run at the same (N, D) and the unified fit's A and alpha "
                  "(Panferov et al. 2025, fitting); no capacity curve assumed. Per-run values "
                  "are in fit.json (single_run_rho)."),
            ("table", ["format", "runs", "mean rho", "range"], rows)]


def _law_row(res, err) -> dict:
    if res is None:
        return {"error": err}
    return {"n_points": res.n_points, **res.fit_error, "status": res.status.value}


def _formats(df, design, unified, decoupled) -> dict:
    from raysweep.fit.laws import tanh_capacity
    from raysweep.fit.plots import bits_per_weight

    bits = bits_per_weight(df, design)
    out: dict = {}
    for i, lab in enumerate(design.labels):
        if lab in out:
            out[lab]["runs"] += 1
            continue
        parts = design.row_parts[i]
        out[lab] = {
            "parts": [{"role": p.role, "spec": p.spec, "family": p.family, "gmse": p.gmse}
                      for p in parts],
            "bits_weights": float(bits[i]), "runs": 1,
            "rho_unified": unified.rho.get(lab) if unified else None,
            "rho_free": decoupled.rho.get(lab) if decoupled else None,
            "rho_free_ci": decoupled.ci.get(f"rho[{lab}]") if decoupled else None,
            "rho_paper": math.prod(tanh_capacity(p.gmse) for p in parts),
        }
    return out


def gmse_ordering(formats: dict) -> str:
    """Does the free rho order the formats as the paper's law (i.e. their GMSE) does?

    ``formats``: fit.json's ``formats`` (``parts``, ``rho_paper``, ``rho_free``).
    Counts the pairs the paper law orders strictly and how many the free rho keeps.
    """
    pts = [(f["rho_paper"], f["rho_free"], lab) for lab, f in formats.items()
           if f["parts"] and f.get("rho_paper") is not None and f.get("rho_free") is not None]
    if len(pts) < 2:
        return "Ordering: fewer than two compressed formats."
    pts.sort(key=lambda p: -p[0])
    swaps = [f"{a[2]} below {b[2]}" for i, a in enumerate(pts) for b in pts[i + 1:]
             if a[0] > b[0] and a[1] < b[1]]
    pairs = sum(1 for i, a in enumerate(pts) for b in pts[i + 1:] if a[0] > b[0])
    order = ", ".join(f"{lab} {fmt(free, 3)}" for _, free, lab in pts)
    return (f"Ordering: the formats from the highest paper-law rho down, with their free "
            f"rho: {order}; "
            f"{pairs - len(swaps)} of {pairs} pairs in the paper law's order"
            + (f"; out of order: {', '.join(swaps)}." if swaps else "."))


def fmt(v, digits=4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}g}"


def _short(flag: str | None) -> str:
    """The flag's kind only (the reasons are listed under "What this data resolves")."""
    return "" if not flag else flag.split(":")[0]


def fmt_ci(ci) -> str:
    return f"[{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]" if ci else "-"


def _blocks(name, df, uni, u_err, dec, comp, laws, formats, images, bootstrap,
            single=None, cross=None, table=None) -> list:
    """The report as blocks: ("h", level, text) ("p", text) ("ul", items) ("table", head, rows)
    ("img", title, path)."""
    b: list = [("h", 1, f"raysweep report: {name}"),
               ("p", f"{len(df)} finished runs, {len(formats)} formats, model sizes "
                     f"{sorted({int(x) for x in df['n_params']})}, token counts "
                     f"{sorted({int(x) for x in df['tokens']})}. Intervals: 95% expanded "
                     f"percentile bootstrap ({bootstrap} replicates, each a full refit; "
                     f"{_clusters_text(uni)}).")]
    b += [("h", 2, "What this data resolves")] + _resolution(uni, u_err, dec, formats)
    if uni is not None:
        b += [("h", 2, "Unified law"),
              ("p", "Loss(N, D, R) = A (N rho(R))^-alpha + B D^-beta + E, "
                    "rho = L tanh(F log_{1/4} GMSE)^C per family, multiplied over parts. "
                    f"Status: **{uni.status.value}**."),
              ("table", ["parameter", "estimate", "95% interval", "flag"],
               [[k, fmt(v), fmt_ci(uni.ci.get(k)), _short(uni.flags.get(k))]
                for k, v in uni.params.items()]
               + [[f"{fam}.{k}", fmt(v),
                   "fixed" if f"{fam}.{k}" in uni.fixed else fmt_ci(uni.ci.get(f"{fam}.{k}")),
                   "fixed at 1" if f"{fam}.{k}" in uni.fixed else
                   _short(uni.flags.get(f"{fam}.{k}", uni.flags.get(fam)))]
                  for fam, ps in uni.capacity.items() for k, v in ps.items()])]
        b += _fixed_blocks(uni)
    b += [("h", 2, "Capacity per format"),
          ("table", ["format", "parts (role:spec family GMSE)", "bits/weight", "runs",
                     "rho (unified)", "rho (free)", "free rho 95%", "rho (paper law)"],
           [[lab, ", ".join(f"{p['role'][0].upper()}:{p['spec']} {p['family']} "
                            f"{p['gmse']:.3g}" for p in f["parts"]) or "dense",
             fmt(f["bits_weights"], 3), f["runs"], fmt(f["rho_unified"]),
             fmt(f["rho_free"]), fmt_ci(f["rho_free_ci"]), fmt(f["rho_paper"])]
            for lab, f in formats.items()]),
          ("p", gmse_ordering(formats)),
          ("p", "rho (paper law): L tanh(F log_{1/4} GMSE)^C with the paper's published "
                "fit (L, F, C) = (1.0, 0.41, 1.39) (scalar quantization, Llama/C4, "
                "30-200M parameters), multiplied over parts; a yardstick, not a fit to "
                "this data.")]
    b += _predict_blocks(table)
    b += [("h", 2, "Law comparison"),
          ("p", "Fit error on the fitted runs (RMSE of log-loss and of loss); the "
                "decoupled law has one free rho per format and is the floor the "
                "one-curve-per-family laws are compared with."),
          ("table", ["law", "points", "rmse_log", "rmse", "status"],
           [[law, r.get("n_points", "-"), fmt(r.get("rmse_log")), fmt(r.get("rmse")),
             r.get("status", "error: " + str(r.get("error")))] for law, r in laws.items()])]
    b += _cross_blocks(cross)
    b += [("h", 2, "Composability")] + _composability_blocks(comp)
    b += _single_blocks(single) if single is not None else []
    b += [("h", 2, "Plots")] + [("img", title, path) for title, path in images]
    return b


def _clusters_text(uni) -> str:
    b = uni.bootstrap if uni is not None else {}
    if not b:
        return "resampling (N, D) configurations, or trunk_id clusters"
    level = b.get("percentile_level")
    widened = (f"; percentiles at the {100 * level:.1f}% level, widened for "
               f"{b['clusters']} clusters" if level else "")
    return (f"resampling {b['clusters']} clusters of runs, one per {b['cluster_by']}: all "
            f"formats and seeds of a cluster move together{widened}")


def _fixed_blocks(uni) -> list:
    """Which parameters the fit held fixed, which it left free although the default
    fixes them, and the bootstrap's bias, skewness and multi-modality checks."""
    items = [f"{k}: {v}" for k, v in uni.fixed.items()]
    items += [f"{k}: {v}" for k, v in uni.free.items()]
    out = []
    if items:
        out += [("p", "Fixed and free capacity parameters:"), ("ul", items)]
    b = uni.bootstrap
    if b:
        worst = sorted(((k, v) for k, v in b["bias"].items() if not k.startswith("rho[")),
                       key=lambda kv: -abs(kv[1]))[:4]
        text = ("Bootstrap bias (replicate mean minus estimate), largest: "
                + ", ".join(f"{k} {v:+.3g}" for k, v in worst) + ". ") if worst else ""
        text += (f"Skewed (|quantile skewness| > {b['skew_limit']}): "
                 + (", ".join(f"{k} ({v:+.2f})" for k, v in b["skewed"].items()) or "none")
                 + f"; multi-modal (bimodality coefficient > {b['bimodal_limit']}): "
                 + (", ".join(f"{k} ({v:.2f})" for k, v in b["multimodal"].items()) or "none")
                 + ". A skewed or multi-modal replicate distribution means the percentile "
                   "interval is the honest summary, not estimate +- error.")
        out.append(("p", text))
    return out


def _resolution(uni, u_err, dec, formats) -> list:
    items = []
    if uni is None:
        items.append(f"The unified law could not be fitted: {u_err}")
    else:
        items += [f"{k}: {v}" for k, v in uni.fixed.items()]
        items += [f"{k}: {v}" for k, v in uni.flags.items()]
        b = uni.bootstrap
        items += [f"{k}: bootstrap replicates skewed (quantile skewness {v:+.2f})"
                  for k, v in (b.get("skewed") or {}).items() if not k.startswith("rho[")]
        items += [f"{k}: bootstrap replicates multi-modal (bimodality coefficient {v:.2f})"
                  for k, v in (b.get("multimodal") or {}).items()]
    for lab, f in formats.items():
        ci = f["rho_free_ci"]
        if f["parts"] and ci and ci[1] >= 1.0:
            items.append(f"format {lab}: free rho interval {fmt_ci(ci)} includes 1: its loss gap "
                         "to dense is within the run-to-run noise")
    if not items:
        return [("p", "Every parameter is identified and its interval is narrower than its "
                      "estimate.")]
    return [("p", "Read these before the numbers: the following are NOT resolved by this "
                  "data."), ("ul", items)]


def _composability_blocks(comp) -> list:
    out = []
    if comp.get("note"):
        out.append(("p", comp["note"] + "."))
    if comp.get("entries"):
        out.append(("p", f"Free rho of each combination vs the product of its marginals: "
                         f"max |error| {fmt(comp['max_abs_error'], 3)}, mean |error| "
                         f"{fmt(comp['mean_abs_error'], 3)} (paper: within about 1e-2 "
                         "except at 2 bits)."))
        out.append(("table", ["combination", "parts", "measured rho", "95%", "product",
                              "error"],
                    [[e["format"], " x ".join(e["parts"]), fmt(e["measured"]),
                      fmt_ci(e["measured_ci"]), fmt(e["product"]), f"{e['error']:+.3f}"]
                     for e in comp["entries"]]))
    for m in comp.get("missing_marginals", []):
        out.append(("p", f"{m['format']}: no run with only {', '.join(m['lacking'])}; "
                         "product not formed."))
    return out


def md_text(text) -> str:
    """Text for report.md: ``&``, ``<`` and ``>`` escaped (a format or study name such as
    ``a<script>`` stays text, never raw HTML) and on one line (a newline in a name must
    not start a markdown block)."""
    return html.escape(" ".join(str(text).splitlines()), quote=False)


def md_cell(value) -> str:
    """A markdown table cell: :func:`md_text`, and ``|`` escaped (it would end the cell)."""
    return md_text(value).replace("|", "\\|")


def markdown_table(head: list[str], rows: list[list]) -> list[str]:
    """A markdown table as lines (every cell through :func:`md_cell`: ``|``, ``&``, ``<``,
    ``>`` escaped)."""
    return (["| " + " | ".join(md_cell(c) for c in head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows])


def _markdown(blocks, study_dir: Path) -> str:
    """report.md; every text from the table (names, notes, errors) goes through
    :func:`md_text` / :func:`md_cell`."""
    lines = []
    for blk in blocks:
        if blk[0] == "h":
            lines += ["#" * blk[1] + " " + md_text(blk[2]), ""]
        elif blk[0] == "p":
            lines += [md_text(blk[1]), ""]
        elif blk[0] == "ul":
            lines += [f"- {md_text(x)}" for x in blk[1]] + [""]
        elif blk[0] == "table":
            lines += markdown_table(blk[1], blk[2]) + [""]
        elif blk[0] == "img":
            lines += [f"![{md_text(blk[1])}]({blk[2].relative_to(study_dir).as_posix()})", ""]
    return "\n".join(lines)


_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _html(blocks) -> str:
    """report.html; every text goes through ``html.escape`` (names from the table too)."""
    e = html.escape
    body = []
    for blk in blocks:
        if blk[0] == "h":
            body.append(f"<h{blk[1]}>{e(blk[2])}</h{blk[1]}>")
        elif blk[0] == "p":
            # escape first, then bold **x** pairs: always balanced <b></b>, no other tag
            body.append("<p>" + _BOLD.sub(r"<b>\1</b>", e(blk[1])) + "</p>")
        elif blk[0] == "ul":
            body.append("<ul>" + "".join(f"<li>{e(str(x))}</li>" for x in blk[1]) + "</ul>")
        elif blk[0] == "table":
            head = "".join(f"<th>{e(str(c))}</th>" for c in blk[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>"
                           for r in blk[2])
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif blk[0] == "img":
            data = base64.b64encode(Path(blk[2]).read_bytes()).decode()
            body.append(f"<figure><img alt='{e(blk[1])}' src='data:image/png;base64,{data}'>"
                        f"<figcaption>{e(blk[1])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:3px 8px;font-size:90%}img{max-width:100%}")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>raysweep report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


__all__ = ["make_report"]
