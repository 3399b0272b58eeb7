"""Figure style and helpers shared by the claims' figures: one style, PNG + PDF, log-log where a rate
is shown, theory rates dotted, bounds dashed; colours fixed per optimizer so every figure reads the same.

A figure's file stem comes from figure_stem(claim, **group_keys): the claim's name and the values of
the table keys the figure groups by, so two figures of a report cannot share a file.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

STYLE = {"figure.figsize": (5.6, 3.9), "axes.grid": True, "grid.alpha": 0.3, "grid.linestyle": "-",
         "font.size": 9, "axes.titlesize": 9, "legend.fontsize": 7, "legend.frameon": False,
         "savefig.dpi": 150, "savefig.bbox": "tight", "lines.markersize": 4}
OPT_COLORS = {"lion": "C0", "clion": "C1", "signsgd": "C2", "sgd": "C3"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
REF = dict(color="0.45", linestyle=":", linewidth=1.2)      # theory rate / reference lines
BOUND = dict(linestyle="--", linewidth=1.2)                  # upper bounds


def slug(v) -> str:
    s = f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)
    return re.sub(r"[^A-Za-z0-9_.]+", "_", s)




def figure_stem(claim: str, **keys) -> str:
    """'<claim>-<key><value>-...' with every value slugged: the file stem of the figure of one group."""
    return "-".join([claim] + [f"{k}{slug(v)}" for k, v in keys.items()])


def color(opt: str) -> str:
    return OPT_COLORS.get(opt, f"C{4 + sum(map(ord, str(opt))) % 6}")


def has_positive(ax, which: str) -> bool:
    """Whether the data plotted on ax reach a positive value on axis `which` ("x" or "y"): a log axis
    with nothing positive on it has no range to show (matplotlib warns, or fails for an empty line)."""
    top = ax.dataLim.x1 if which == "x" else ax.dataLim.y1
    return bool(np.isfinite(top) and top > 0)


def loglog(ax, x=True) -> None:
    """Log axes (y, and x unless x=False) labelled with plain numbers at 1, 2, 5 × 10^k. Call it after
    plotting: an axis whose data has no positive value stays linear."""
    for name, axis in ([("x", ax.xaxis)] if x else []) + [("y", ax.yaxis)]:
        if not has_positive(ax, name):
            continue
        getattr(ax, f"set_{name}scale")("log")
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))
        axis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))


def logx(ax, plain=True) -> None:
    """Log x axis; plain numbers (as loglog) unless the range spans many decades (plain=False).
    Call it after plotting: data without a positive x keeps the axis linear."""
    if not has_positive(ax, "x"):
        return
    ax.set_xscale("log")
    if plain:
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))


def logy(ax) -> None:
    """Log y axis labelled with plain numbers (as loglog)."""
    loglog(ax, x=False)


def legend(ax, empty: str, **kwargs) -> None:
    """The legend of ax, or, when nothing labelled was plotted on it, the note `empty` in its middle."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)
    else:
        ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", color="0.45")


def save(fig, out_dir: Path, stem: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{stem}.png"
    fig.savefig(png)
    fig.savefig(out_dir / f"{stem}.pdf")
    plt.close(fig)
    return png


def legend_label(scope: str) -> str:
    """Legend text: the scope without the problem name and the fixed K/d (they are in the title)."""
    parts = scope.split(" · ")
    return " · ".join([parts[0]] + parts[3:])



def representatives(sub: pd.DataFrame) -> pd.DataFrame:
    """One run per optimizer, at the K shared by the most optimizers (the largest such K) when
    possible so the curves compare like with like; then the largest K, then the smallest seed."""
    shared = sub.groupby("K")["optimizer"].nunique()
    best_k = max(shared.index, key=lambda k: (shared[k], k))
    order = sub.assign(_at=sub["K"] == best_k).sort_values(["_at", "K", "seed"], ascending=[False, False, True],
                                                            kind="stable")
    return order.groupby("optimizer", sort=True).head(1).sort_values("optimizer")



def wide(n: int, max_cols: int = 3):
    """n panels of the standard size, at most max_cols per row; unused panels hidden.
    Returns (fig, axes) with axes[0] the flat list of the n panels."""
    w, h = STYLE["figure.figsize"]
    cols = min(n, max_cols)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(w * cols, h * rows * (1.15 if rows > 1 else 1)))
    flat = axes.ravel().tolist()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, [flat[:n]]



def rate_figure(table: pd.DataFrame, vary: str, fixed_col: str, panels, xlabel: str, ref_exp: float,
                ref_text: str, out_dir: Path) -> list[Path]:
    """One log-log figure per value of table["figure"]: per scope (table["scope"]) the seed mean with
    min–max bars of each panel's column against `vary`, its fitted line, the run bounds dashed
    (column "bound", on the first panel) and the theory rate ∝ vary^ref_exp dotted.
    panels: [(label, column)]."""
    paths = []
    for stem, sub in table.groupby("figure", sort=True):
        shown = [(label, c) for label, c in panels if c in sub and sub[c].notna().any()]
        if sub[vary].nunique() < 2 or not shown:
            continue
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, len(shown), squeeze=False,
                                     figsize=(STYLE["figure.figsize"][0] * len(shown), STYLE["figure.figsize"][1]))
            for p, (ax, (label, c)) in enumerate(zip(axes[0], shown)):
                anchor = None
                for i, (scope, g) in enumerate(sub.groupby("scope", sort=True)):
                    col, marker = color(g["optimizer"].iloc[0]), MARKERS[i % len(MARKERS)]
                    st = g.groupby(vary)[c].agg(["mean", "min", "max"]).dropna()
                    st = st[st["mean"] > 0]
                    if st.empty:
                        continue
                    ax.errorbar(st.index, st["mean"], yerr=[st["mean"] - st["min"], st["max"] - st["mean"]],
                                fmt=marker, color=col, capsize=2, label=legend_label(scope) + " (seed mean, min–max)")
                    if len(st) >= 2:
                        s, icpt = np.polyfit(np.log(st.index.values.astype(float)), np.log(st["mean"]), 1)
                        xs = np.geomspace(st.index.min(), st.index.max(), 50)
                        ax.plot(xs, np.exp(icpt) * xs**s, color=col, linewidth=1,
                                label=f"{legend_label(scope)} fit: slope {s:.3f}")
                    if anchor is None:
                        anchor = (float(st.index[0]), float(st["mean"].iloc[0]), float(st.index[-1]))
                    if p == 0 and "bound" in g and g["bound"].notna().any():
                        bm = g[g["bound"].notna()].groupby(vary)["bound"].mean()
                        ax.plot(bm.index, bm.values, color=col, marker=marker, markerfacecolor="none",
                                label=f"{legend_label(scope)} bound (THEORY §4)", **BOUND)
                if anchor is not None:
                    x0, y0, x1 = anchor
                    xs = np.geomspace(x0, x1, 20)
                    ax.plot(xs, y0 * (xs / x0) ** ref_exp, label=ref_text, **REF)
                loglog(ax)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(f"{label.removeprefix('avg ')} averaged over k < K")
            first = sub.iloc[0]
            wd = float(first["weight_decay"])
            fig.suptitle(f"{first['problem']}, {fixed_col}={slug(first[fixed_col])}" + (f", λ={wd:g}" if wd > 0 else ""),
                         fontsize=9)
            for ax in axes[0]:   # below each panel: a legend never hides a curve
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
            paths.append(save(fig, out_dir, stem))
    return paths
