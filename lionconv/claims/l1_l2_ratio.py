"""ℓ1/ℓ2 ratio: dense gradients, ‖v‖₁/‖v‖₂ = Θ(√d) across model sizes (THEORY §5): exponent s of a
power-law fit of the ratio on d, |s − 1/2| ≤ `slope_tol` for the whole CI (full gradient and minibatch,
time-averaged, and the final iterate). On separable families with i.i.d. coordinates the exponent is
1/2 by construction, so those rows are sanity; on networks they are theory. Per-tensor ratios are in
the table (rows with a tensor name), with no verdict."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lionconv import theory
from lionconv.analysis.groups import comparable_groups, fit_xy, set_text
from lionconv.analysis.plots import BOUND, REF, STYLE, color, figure_stem, loglog, plt, save
from lionconv.analysis.verdict import Threshold, VerdictRow, fit_interval, judge_fit, within

NAME = "l1_l2_ratio"
THEORY = "§5"
PRESETS = ("l1_l2_ratio",)
THRESHOLDS = {
    "slope_tol": Threshold(0.05, "widths span 2 decades of d; 0.05 is a factor 10^0.1 ≈ 1.26 in the ratio over "
                                 "them, the smallest drift the seeds' per-point scatter (≈ 5 %) resolves"),
}
SEPARABLE = ("scaled_separable", "naive_separable", "quadratic")     # i.i.d. coordinates
MEASURES = [("full ∇f, time-averaged", "mean_l1_l2"), ("minibatch g, time-averaged", "mean_mb_l1_l2"),
            ("full ∇f, final iterate", "final_l1_l2")]


def table(data) -> pd.DataFrame:
    """One row per run (tensor = "") with its ratios, then per-tensor rows averaged over logged steps."""
    runs = data.runs
    cols = ["scope", "figure", "tensor", "run", "run_dir", "optimizer", "problem", "d", "K", "seed", "numel",
            "mean_l1_l2", "mean_mb_l1_l2", "final_l1_l2", "mean_ratio_r", "mean_mb_ratio_r", "ratio_r"]
    if runs.empty or "mean_l1_l2" not in runs:
        return pd.DataFrame(columns=cols)
    if {"final_grad_l1", "final_grad_l2"} <= set(runs.columns):
        runs = runs.assign(final_l1_l2=runs["final_grad_l1"] / runs["final_grad_l2"])
    parts = []
    for scope, g in comparable_groups(runs, "d"):
        parts.append(g.assign(scope=scope, tensor="", figure=figure_stem(NAME, problem=g["problem"].iloc[0])))
    whole = pd.concat(parts, ignore_index=True)
    tensors = []
    for r in whole.itertuples(index=False):
        tm = data.tensor_metrics(r.run_dir, ["tensor", "numel", "ratio_r", "l1_l2"])
        if tm is not None and not tm.empty:
            agg = tm.groupby("tensor", sort=True).agg(numel=("numel", "first"), ratio_r=("ratio_r", "mean"),
                                                      mean_l1_l2=("l1_l2", "mean")).reset_index()
            tensors.append(agg.assign(scope=r.scope, figure=r.figure, run=r.run, run_dir=r.run_dir,
                                      optimizer=r.optimizer, problem=r.problem, d=r.d, K=r.K, seed=r.seed))
    return pd.concat([whole] + tensors, ignore_index=True).reindex(columns=cols)


def judge_slope(fit) -> str:
    return judge_fit(fit, within(0.5, float(THRESHOLDS["slope_tol"])))


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    whole = table[table["tensor"] == ""]
    for scope, g in whole.groupby("scope", sort=False):
        kind = "sanity" if str(g["problem"].iloc[0]) in SEPARABLE else "theory"
        for label, col in MEASURES:
            if g[col].notna().sum() < 2:
                continue
            fit = fit_xy(g["d"], g[col], g["seed"], n_boot, seed)
            if fit is None:
                continue
            text = "= 0.5 (Θ(√d))" + (": exact for i.i.d. coordinates" if kind == "sanity" else "")
            rows.append(VerdictRow(f"‖·‖₁/‖·‖₂ ∝ d^s: {label}", kind, scope, text, fit.slope, fit.ci_low,
                                   fit.ci_high, fit_interval(fit), judge_slope(fit),
                                   f"{len(g)} runs, d ∈ {set_text(g['d'])}, seeds {set_text(g['seed'])}; "
                                   f"figures/{g['figure'].iloc[0]}.png", fit.n))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """‖∇f‖₁/‖∇f‖₂ (full: filled, minibatch: open) vs √d with the √d·r references of THEORY §5."""
    paths = []
    whole = table[table["tensor"] == ""]
    for stem, sub in whole.groupby("figure", sort=True):
        if sub["d"].nunique() < 2 or sub["mean_l1_l2"].notna().sum() == 0:
            continue
        with plt.rc_context(STYLE):
            fig, ax = plt.subplots()
            for opt, g in sub.groupby("optimizer", sort=True):
                st = g.groupby("d")[["mean_l1_l2", "mean_mb_l1_l2"]].mean()
                sd = np.sqrt(st.index.values.astype(float))
                ax.plot(sd, st["mean_l1_l2"], "o-", color=color(opt), label=f"{opt}: full ∇f")
                if st["mean_mb_l1_l2"].notna().any():
                    ax.plot(sd, st["mean_mb_l1_l2"], "o--", color=color(opt), markerfacecolor="none",
                            linewidth=0.8, label=f"{opt}: minibatch g")
            xs = np.geomspace(np.sqrt(sub["d"].min()), np.sqrt(sub["d"].max()), 20)
            ax.plot(xs, xs, label="√d (r = 1, equal magnitudes)", **REF)
            ax.plot(xs, theory.RATIO_REFERENCE["gaussian"] * xs, color="0.45", label="√(2/π)·√d (Gaussian)", **BOUND)
            loglog(ax)
            ax.set(xlabel="√d  (d = trainable scalars)", ylabel="‖∇f‖₁ / ‖∇f‖₂ (time-averaged)",
                   title=f"{sub['problem'].iloc[0]}: ℓ1/ℓ2 ratio vs √d")
            ax.legend(loc="best")
            paths.append(save(fig, out_dir, stem))
    return paths
