"""§6 constants: on the scaled family Δ, L, σ do not grow with d (max/min of each across the d sweep ≤
`constants_ratio`); on the naive family Δ ∝ d and σ ∝ √d (fitted exponents within `exponent_tol` of 1
and ½). The constants are closed forms of the problem (or estimated once per run), so these are
sanity rows of the problem code, decided exactly on the numbers."""
from __future__ import annotations

import math

import pandas as pd

from lionconv.analysis.groups import (CONTRAST_FAMILIES, SCALED_FAMILIES, fit_xy, g3, identity_groups, num,
                                      set_text)
from lionconv.analysis.plots import figure_stem, legend, MARKERS, plt, REF, save, STYLE, wide
from lionconv.analysis.verdict import EXACT, Threshold, VerdictRow, judge_exact, le, within

NAME = "constants_in_d"
THEORY = "§6"
PRESETS = ("rate_in_d",)
THRESHOLDS = {
    "constants_ratio": Threshold(1.5, "estimated constants (power iteration, sampled σ) scatter by < 50 % at fixed d; "
                                      "growth ∝ d^¼ over 2 decades already exceeds 3×"),
    "exponent_tol": Threshold(0.05, "the closed forms give exactly 1 and ½; 0.05 allows the d-independent offsets "
                                    "(f_low, the bias terms) over ≥ 2 decades"),
}
FREE = {"K", "d", "cfg.problem.d", "optimizer", "cfg.optimizer", "cfg.schedule", "schedule", "weight_decay",
        "c1", "c2", "c3", "cfg.lr_scale"}


def constants_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Δ, L, σ of each (problem, d, seed) with known constants (one row per distinct value set)."""
    cols = ["problem", "d", "seed", "Delta", "L", "sigma", "constants_kind"]
    if runs.empty or not {"Delta", "L", "sigma"} <= set(runs.columns):
        return pd.DataFrame(columns=cols)
    t = runs[runs[["Delta", "L", "sigma"]].notna().all(axis=1)][cols]
    return t.drop_duplicates(subset=["problem", "d", "seed", "Delta", "L", "sigma"]).sort_values(
        ["problem", "d", "seed"]).reset_index(drop=True)


def table(data) -> pd.DataFrame:
    """constants_table per identity group over d (problem options fixed), group = its index."""
    runs = data.runs
    if runs.empty or "Delta" not in runs:
        return constants_table(runs).assign(group=[], figure=[])
    parts, seen = [], set()
    for g in identity_groups(runs[runs[["Delta", "L", "sigma"]].notna().all(axis=1)], free=FREE):
        t = constants_table(g)
        if t.empty or t["d"].nunique() < 2:
            continue
        key = (str(t["problem"].iloc[0]), tuple(t.itertuples(index=False)))
        if key in seen:
            continue
        seen.add(key)
        parts.append(t.assign(group=len(parts), figure=figure_stem(NAME)))
    return pd.concat(parts, ignore_index=True) if parts else constants_table(runs.iloc[:0]).assign(group=[], figure=[])


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    for _, t in table.groupby("group", sort=True):
        problem = str(t["problem"].iloc[0])
        spread = {c: (t[c].max() / t[c].min() if (t[c] > 0).all() else math.inf) for c in ("Delta", "L", "sigma")}
        spread_txt = ", ".join(f"{c} {g3(t[c].min())}–{g3(t[c].max())} (×{g3(v)})" for c, v in spread.items())
        scope = f"{problem} · d ∈ {set_text(t['d'])}"
        evidence = (f"{len(t)} (d, seed) values, kinds {set_text(t['constants_kind'].astype(str))}; {spread_txt}; "
                    f"figures/{t['figure'].iloc[0]}.png; constants_in_d.csv")
        worst = float(max(spread.values()))
        if problem in CONTRAST_FAMILIES or problem.startswith("naive"):
            for c, target in (("Delta", 1.0), ("sigma", 0.5)):
                fit = fit_xy(t["d"], t[c], t["seed"], 0, seed)
                if fit is None:
                    continue
                rows.append(VerdictRow(
                    f"§6 contrast family: {c} ∝ d^{num(target)}", "sanity", scope,
                    f"slope = {num(target)} ± {THRESHOLDS['exponent_tol'].value} (Σφ(x_i))", fit.slope, fit.slope,
                    fit.slope, EXACT, judge_exact(fit.slope, within(target, float(THRESHOLDS["exponent_tol"]))),
                    evidence, fit.n))
            continue
        if problem in SCALED_FAMILIES:
            rows.append(VerdictRow("§6 Δ, L, σ fixed as d grows", "sanity", scope,
                                   f"max/min of Δ, L, σ across d ≤ {THRESHOLDS['constants_ratio'].value}", worst, worst,
                                   worst, EXACT, judge_exact(worst, le(float(THRESHOLDS["constants_ratio"]))),
                                   "measured = largest max/min ratio; " + evidence, len(t)))
        else:
            rows.append(VerdictRow("§6 Δ, L, σ fixed as d grows", "context", scope,
                                   "reported: THEORY claims fixed constants only for the scaled family", worst,
                                   evidence="measured = largest max/min ratio; " + evidence, n=len(t)))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """Δ, L, σ against d per problem family (log-log), ∝ d and ∝ √d references dotted."""
    table = table[table.groupby("problem")["d"].transform("nunique") >= 2]
    if table.empty:
        return []
    with plt.rc_context(STYLE):
        fig, axes = wide(3)
        for ax, (col, label, ref) in zip(axes[0], (("Delta", "Δ = f(x0) − inf f", 1.0), ("L", "L (ℓ2 smoothness)", 0.0),
                                                   ("sigma", "σ (ℓ2 noise std)", 0.5))):
            for i, (problem, g) in enumerate(table.groupby("problem", sort=True)):
                st = g.groupby("d")[col].agg(["mean", "min", "max"])
                ax.errorbar(st.index, st["mean"], yerr=[st["mean"] - st["min"], st["max"] - st["mean"]],
                            fmt=MARKERS[i % len(MARKERS)] + "-", color=f"C{i}", capsize=2, label=f"{problem} (seed min–max)")
                if ref and problem.startswith("naive"):
                    xs = st.index.values.astype(float)
                    ax.plot(xs, st["mean"].iloc[0] * (xs / xs[0]) ** ref, label=f"∝ d^{ref:g} (THEORY §6)", **REF)
            ax.set_xscale("log")     # many decades: matplotlib's 10^k labels read better than plain numbers
            if (table[col] > 0).all():
                ax.set_yscale("log")
            ax.set(xlabel="dimension d (trainable scalars)", ylabel=label, title=f"{col} across d")
            legend(ax, "no data", loc="best")
        paths = [save(fig, out_dir, table["figure"].iloc[0])]
    return paths

