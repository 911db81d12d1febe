"""The report's figures (matplotlib, Agg backend, PNG).

Each figure carries its own title, axis labels and legend, so that it reads
without the report's text:

- ``loss_vs_n``: loss against N per representation, fitted unified-law curves;
- ``rho_vs_gmse``: capacity against effective bits ``log_{1/4} GMSE``, free
  (decoupled) rho per format as points, each family's fitted curve;
- ``composability``: measured rho, product of marginals, and their difference;
- ``pareto``: loss against bits per weight, the frontier per model size;
- ``residuals``: predicted against observed loss.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.atomic import atomic_write
from raysweep.fit.data import DENSE_BITS, Design

LN4 = math.log(4.0)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Save atomically (temp file in the same dir, then rename)."""
    try:
        atomic_write(path, lambda p: fig.savefig(p, dpi=110, bbox_inches="tight", format="png"))
    finally:
        _plt().close(fig)
    return path


def _colors(n: int):
    plt = _plt()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def tokens_per_param(df: pd.DataFrame) -> np.ndarray:
    if "tokens_per_param" in df.columns:
        return df["tokens_per_param"].to_numpy(float)
    return (df["tokens"] / df["n_params"]).to_numpy(float)


def _at(design: Design, row: int, log_n: np.ndarray, log_d: np.ndarray) -> Design:
    """Row ``row``'s representation placed at new (N, D) points, for curves."""
    k = len(log_n)
    return Design(log_n, log_d, np.zeros(k), (design.labels[row],) * k,
                  (design.row_parts[row],) * k, design.families)


def _groups(design: Design, max_per: int = 12) -> dict[str, list[str]]:
    """Formats grouped by family (one panel row each); crowded rows keep the marginals."""
    groups: dict[str, list[str]] = {}
    for lab, parts in zip(design.labels, design.row_parts):
        if not parts:
            continue
        fams = sorted({p.family for p in parts})
        key = fams[0] if len(fams) == 1 else " + ".join(fams)
        if lab not in groups.setdefault(key, []):
            groups[key].append(lab)
    for key, labs in groups.items():
        if len(labs) > max_per:
            first = {lab: design.labels.index(lab) for lab in labs}
            groups[key] = [lab for lab in labs if len(design.row_parts[first[lab]]) == 1
                           or len({p.spec for p in design.row_parts[first[lab]]}) == 1][:max_per]
    return groups or {"dense": []}


def loss_vs_n(df, design, fit, path: Path) -> Path:
    """Rows: format families (dense in black in every row); columns: tokens per parameter."""
    plt = _plt()
    from matplotlib.ticker import NullFormatter

    tpp = np.round(tokens_per_param(df), 1)
    values, counts = np.unique(tpp, return_counts=True)
    shown = sorted(values[np.argsort(-counts)[:3]])
    groups = dict(list(_groups(design).items())[:6])
    dense_lab = next((lab for lab, p in zip(design.labels, design.row_parts) if not p), None)
    fig, axes = plt.subplots(len(groups), len(shown), squeeze=False,
                             figsize=(4.6 * len(shown) + 2.5, 3.6 * len(groups)))
    n_grid = np.geomspace(df["n_params"].min() / 1.3, df["n_params"].max() * 1.3, 60)
    labels_arr = np.array(design.labels)
    for ax_row, (group, labs) in zip(axes, groups.items()):
        labs = ([dense_lab] if dense_lab else []) + labs
        colors = dict(zip(labs, ["black"] + _colors(len(labs) - 1) if dense_lab else
                          _colors(len(labs))))
        for ax, r in zip(ax_row, shown):
            for lab in labs:
                rows = np.flatnonzero((tpp == r) & (labels_arr == lab))
                if len(rows) == 0:
                    continue
                ax.scatter(np.exp(design.log_n[rows]), np.exp(design.log_loss[rows]), s=16,
                           color=colors[lab], label=lab)
                if fit is not None:
                    try:
                        d = _at(design, rows[0], np.log(n_grid), np.log(n_grid * r))
                        y = np.exp(fit.model.predict(np.array(fit.theta), d, jac=False)[0])
                        ax.plot(n_grid, y, color=colors[lab], lw=1.1)
                    except Exception:  # a format the fitted law cannot predict
                        pass
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("non-embedding parameters N")
            ax.set_ylabel("validation loss")
            ax.set_title(f"{group}: D = {r:g} tokens/param", fontsize=10)
            ax.grid(alpha=0.3)
        handles, names = ax_row[0].get_legend_handles_labels()
        ax_row[-1].legend(handles, names, loc="center left", bbox_to_anchor=(1.02, 0.5),
                          fontsize=7, title="weights|activations", title_fontsize=7)
    fig.suptitle("Loss vs model size per format: points = runs, lines = fitted "
                 f"{fit.law if fit else ''} law (dense in black)", y=1.0)
    fig.tight_layout()
    return _save(fig, path)


def rho_vs_gmse(design, unified, decoupled, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    fams = list(design.families)
    colors = dict(zip(fams, _colors(len(fams))))
    xmax = 1.0
    seen = set()
    for lab in dict.fromkeys(design.labels):
        i = design.labels.index(lab)
        parts = design.row_parts[i]
        rho = decoupled.rho.get(lab) if decoupled else None
        if not parts or rho is None:
            continue
        same = len(parts) == 2 and parts[0].spec == parts[1].spec and \
            parts[0].gmse == parts[1].gmse and parts[0].role != parts[1].role
        if len(parts) != 1 and not same:
            continue
        p = parts[0]
        x = -math.log(p.gmse) / LN4
        xmax = max(xmax, x)
        y = math.sqrt(rho) if same else rho
        marker = "s" if same else ("o" if p.role == "weights" else "^")
        kind = "W+A (sqrt rho)" if same else p.role
        key = (p.family, kind)
        ci = decoupled.ci.get(f"rho[{lab}]")
        yerr = None
        if ci and not same:
            yerr = [[max(y - ci[0], 0)], [max(ci[1] - y, 0)]]
        ax.errorbar([x], [y], yerr=yerr, fmt=marker, color=colors[p.family], ms=6, capsize=2,
                    label=f"{p.family}, {kind} (free rho)" if key not in seen else None)
        seen.add(key)
    if unified is not None and hasattr(unified.model, "curve"):
        xs = np.linspace(0.02, xmax + 1.0, 200)
        for fam in unified.model.families:
            y = unified.model.curve(np.array(unified.theta), fam, 4.0 ** -xs)
            shaky = str(unified.flags.get(fam, "")).startswith("not identified")
            tag = " (NOT identified: too few GMSE levels)" if shaky else ""
            if fam == "noise":
                ax.plot(xs, y, "k" + (":" if shaky else "--"), lw=1.8,
                        label="noise injection fit = rate-distortion bound" + tag)
            else:
                ax.plot(xs, y, color=colors.get(fam, "gray"), lw=1.5, ls=":" if shaky else "-",
                        label=f"{fam}: fitted curve" + tag)
    ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("effective bits  log_{1/4} GMSE  (GMSE = Gaussian MSE of the format)")
    ax.set_ylabel("capacity rho (N_eff / N)")
    ax.set_ylim(0, 1.15)
    ax.set_title("Capacity vs Gaussian MSE: free rho per format, fitted tanh curve per family")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return _save(fig, path)


def composability(matrices: list[dict], path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(len(matrices), 3, figsize=(16, 4.4 * len(matrices)), squeeze=False)
    for row, m in zip(axes, matrices):
        err_lim = max([abs(v) for r in m["error"] for v in r if v is not None] + [0.01])
        for ax, key, cmap, lims in ((row[0], "measured", "viridis", (0, 1)),
                                    (row[1], "product", "viridis", (0, 1)),
                                    (row[2], "error", "RdBu_r", (-err_lim, err_lim))):
            grid = np.array([[np.nan if v is None else v for v in r] for r in m[key]], float)
            im = ax.imshow(grid, cmap=cmap, vmin=lims[0], vmax=lims[1])
            for (i, j), v in np.ndenumerate(grid):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}" if key != "error" else f"{v:+.3f}",
                            ha="center", va="center", fontsize=8,
                            color="w" if key != "error" and v < 0.5 else "k")
            ax.set_xticks(range(len(m["cols"])), m["cols"], rotation=45, ha="right")
            ax.set_yticks(range(len(m["rows"])), m["rows"])
            title = {"measured": "measured rho (free fit)",
                     "product": "product of marginal rhos",
                     "error": "measured - product"}[key]
            ax.set_title(f"{m['kind']}: {title}", fontsize=10)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("Composability: is rho of a combination the product of its parts' rhos?")
    fig.tight_layout()
    return _save(fig, path)


def bits_per_weight(df: pd.DataFrame, design: Design) -> np.ndarray:
    """Storage bits per weight: the ``bits_weights`` column, else from the parts, else 16."""
    if "bits_weights" in df.columns:
        b = pd.to_numeric(df["bits_weights"], errors="coerce").to_numpy(float)
        return np.where(np.isfinite(b), b, DENSE_BITS)
    out = np.full(design.n, DENSE_BITS)
    for i, parts in enumerate(design.row_parts):
        w = [p.bits for p in parts if p.role == "weights" and math.isfinite(p.bits)]
        if w:
            out[i] = w[-1]
    return out


def pareto(df: pd.DataFrame, design: Design, path: Path) -> Path:
    plt = _plt()
    tpp = np.round(tokens_per_param(df), 1)
    values, counts = np.unique(tpp, return_counts=True)
    r = values[np.argmax(counts)]
    bits = bits_per_weight(df, design)
    n = np.exp(design.log_n)
    loss = np.exp(design.log_loss)
    sizes = np.unique(n[tpp == r])
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for color, size in zip(_colors(len(sizes)), sizes):
        sel = np.flatnonzero((tpp == r) & (n == size))
        ax.scatter(bits[sel], loss[sel], color=color, s=16, alpha=0.6)
        order = sel[np.lexsort((loss[sel], bits[sel]))]
        front, best = [], np.inf
        for i in order:  # lower loss than every point with fewer bits
            if loss[i] < best:
                front.append(i)
                best = loss[i]
        ax.plot(bits[front], loss[front], "-o", color=color, ms=4, label=f"N = {size:.3g}")
        for i in front:
            ax.annotate(design.labels[i], (bits[i], loss[i]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per weight (storage, incl. scales/masks)")
    ax.set_ylabel("validation loss")
    ax.set_title(f"Pareto view at D = {r:g} tokens/param: lines = frontier per model size")
    ax.legend(fontsize=8, title="model size")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def residuals(design: Design, fit, path: Path) -> Path:
    plt = _plt()
    pred = np.exp(fit.model.predict(np.array(fit.theta), design, jac=False)[0])
    obs = np.exp(design.log_loss)
    fams = ["dense"] + list(design.families)
    colors = dict(zip(fams, _colors(len(fams))))
    key = np.array(["dense" if not p else p[0].family for p in design.row_parts])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for fam in fams:
        sel = key == fam
        if sel.any():
            ax.scatter(pred[sel], obs[sel], s=14, color=colors[fam], label=fam)
    lo, hi = min(pred.min(), obs.min()), max(pred.max(), obs.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="predicted = observed")
    ax.set_xlabel(f"predicted loss ({fit.law} law)")
    ax.set_ylabel("observed loss")
    ax.set_title(f"Fit quality: RMSE of log-loss {fit.fit_error['rmse_log']:.3g}")
    ax.legend(fontsize=8, title="family (first part)")
    ax.grid(alpha=0.3)
    return _save(fig, path)
