"""ℓ1/ℓ2 ratio: dense gradients, ‖v‖₁/‖v‖₂ = Θ(√d) across model sizes (THEORY §5), i.e.
r = ‖∇f‖₁/(√d·‖∇f‖₂) stays away from 0 as the width grows. Theory row (networks): per run the mean of r
over a LINEAR log grid (log.grid=linear: a geometric grid puts most points at initialization), then
the seed mean per width; the statistic is the smallest of those over the widths, its CI a seed
bootstrap (seeds resampled jointly across widths), judged "≥ `r_floor`" by the whole CI (≥ 5 seeds to
decide; a non-linear grid is reported unclear). Context rows: the same for minibatch gradients, and the
trend of r in d (slope s of log r on log d with its seed-bootstrap CI; the ℓ1/ℓ2 slope is 1/2 + s
exactly): a finite range of widths cannot decide an asymptotic Θ(·), so the trend is reported, not
judged. On separable families with i.i.d. coordinates r and the slope 1/2 of ‖·‖₁/‖·‖₂ are fixed by
construction: those rows are sanity. Per-tensor ratios are in the table (rows with a tensor name),
with no verdict."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lionconv import theory
from lionconv.analysis.fit import seed_bootstrap
from lionconv.analysis.groups import column, comparable_groups, fit_xy, g3, set_text
from lionconv.analysis.plots import BOUND, color, figure_stem, legend, loglog, plt, REF, save, STYLE
from lionconv.analysis.verdict import Threshold, VerdictRow, fit_interval, ge, judge, judge_fit, within

NAME = "l1_l2_ratio"
THEORY = "§5"
PRESETS = ("l1_l2_ratio",)
THRESHOLDS = {
    "slope_tol": Threshold(0.05, "widths span 2 decades of d; 0.05 is a factor 10^0.1 ≈ 1.26 in the ratio over "
                                 "them, the smallest drift the seeds' per-point scatter (≈ 5 %) resolves"),
    "r_floor": Threshold(0.5, "Lion's ℓ1 rate is within 1/r of the ℓ2 lower bound (THEORY §4): r ≥ 1/2 keeps "
                              "that within a factor 2, i.e. at least a quarter of the coordinates effectively "
                              "active (s-sparse: r ≤ √(s/d)); below Laplace's 0.707 so that heavy-tailed but "
                              "dense gradients (Student-t3: 0.637) pass"),
}
SEPARABLE = ("scaled_separable", "naive_separable", "quadratic")     # i.i.d. coordinates
MEASURES = [("full ∇f, time-averaged", "mean_l1_l2"), ("minibatch g, time-averaged", "mean_mb_l1_l2"),
            ("full ∇f, final iterate", "final_l1_l2")]


def table(data) -> pd.DataFrame:
    """One row per run (tensor = "") with its ratios, then per-tensor rows averaged over logged steps."""
    runs = data.runs
    cols = ["scope", "figure", "tensor", "run", "run_dir", "optimizer", "problem", "d", "K", "seed", "numel", "log_grid",
            "mean_l1_l2", "mean_mb_l1_l2", "final_l1_l2", "mean_ratio_r", "mean_mb_ratio_r", "ratio_r"]
    if runs.empty or "mean_l1_l2" not in runs:
        return pd.DataFrame(columns=cols)
    if {"final_grad_l1", "final_grad_l2"} <= set(runs.columns):
        runs = runs.assign(final_l1_l2=runs["final_grad_l1"] / runs["final_grad_l2"])
    runs = runs.assign(log_grid=column(runs, "cfg.log.grid", None).astype(str))
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


def floor_statistic(g: pd.DataFrame, col: str):
    """(statistic(idx), per-width seed means, seeds): min over widths d of the mean of `col` over the
    seeds at positions idx (seeds present at every width; resampled jointly, a seed fixes the data)."""
    wide_t = g.pivot_table(index="seed", columns="d", values=col, aggfunc="mean").dropna()
    values = wide_t.to_numpy(dtype=float)
    return (lambda idx: float(values[idx].mean(axis=0).min())), wide_t.mean(axis=0), list(wide_t.index)


def judge_floor(lo: float, hi: float, n_seeds: int) -> str:
    return judge(lo, hi, ge(float(THRESHOLDS["r_floor"])), f"seed-bootstrap ({n_seeds} seeds)")


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    whole = table[table["tensor"] == ""]
    c = float(THRESHOLDS["r_floor"])
    for scope, g in whole.groupby("scope", sort=False):
        separable = str(g["problem"].iloc[0]) in SEPARABLE
        figure = f"figures/{g['figure'].iloc[0]}.png"
        grids = set(g["log_grid"])
        for label, src, kind in (("full ∇f", "mean_ratio_r", "sanity" if separable else "theory"),
                                 ("minibatch g", "mean_mb_ratio_r", "context")):
            if g["d"].nunique() < 2 or g[src].notna().sum() < 2:
                continue
            stat, means, seeds = floor_statistic(g, src)
            if not seeds:
                continue
            est, lo, hi = seed_bootstrap(stat, len(seeds), n_boot, seed)
            interval = f"seed-bootstrap ({len(seeds)} seeds)"
            linear = grids == {"linear"}
            holds = judge_floor(lo, hi, len(seeds)) if linear else "unclear"
            per_width = "; ".join(f"d={g3(d)}: {g3(v)}" for d, v in means.items())
            rows.append(VerdictRow(
                f"r = ‖·‖₁/(√d‖·‖₂) stays ≥ c across widths: {label}, time-averaged", kind, scope,
                f"min over widths of the seed-mean r ≥ {c:g} (THRESHOLDS r_floor)", est, lo, hi, interval, holds,
                ("" if linear else f"not decided: log.grid {set_text(grids)}, not linear (the average would be "
                                   f"dominated by initialization); ")
                + f"seed-mean r per width: {per_width}; seeds {set_text(seeds)}; {figure}", len(g)))
            fit = fit_xy(g["d"], g[src], g["seed"], n_boot, seed)
            if fit is not None and not separable:
                cross = (f"; the fitted trend reaches r = {c:g} at d ≈ {g3((c / math.exp(fit.intercept)) ** (1 / fit.slope))}"
                         if fit.slope < 0 else "")
                rows.append(VerdictRow(
                    f"trend of r in d: {label}, time-averaged (slope s of log r on log d)", "context", scope,
                    "reported: Θ(√d) is asymptotic; ‖·‖₁/‖·‖₂ ∝ d^(1/2 + s)", fit.slope, fit.ci_low, fit.ci_high,
                    fit_interval(fit), "n.a.",
                    f"{len(g)} runs, d ∈ {set_text(g['d'])}; ℓ1/ℓ2 slope {g3(0.5 + fit.slope)}{cross}; {figure}", fit.n))
        if not separable:
            continue
        for label, col in MEASURES:
            if g[col].notna().sum() < 2:
                continue
            fit = fit_xy(g["d"], g[col], g["seed"], n_boot, seed)
            if fit is None:
                continue
            rows.append(VerdictRow(f"‖·‖₁/‖·‖₂ ∝ d^s: {label}", "sanity", scope,
                                   "= 0.5 (Θ(√d)): exact for i.i.d. coordinates", fit.slope, fit.ci_low,
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
            legend(ax, "no data", loc="best")
            paths.append(save(fig, out_dir, stem))
            fig, ax = plt.subplots()       # the judged quantity: r per width, seed mean and min–max
            for (opt, g), col in ((og, c) for og in sub.groupby("optimizer", sort=True)
                                  for c in ("mean_ratio_r", "mean_mb_ratio_r")):
                st = g.groupby("d")[col].agg(["mean", "min", "max"]).dropna()
                if st.empty:
                    continue
                full = col == "mean_ratio_r"
                ax.errorbar(st.index.values.astype(float), st["mean"], yerr=[st["mean"] - st["min"], st["max"] - st["mean"]],
                            fmt="o-" if full else "o--", color=color(opt), capsize=2, markerfacecolor=None if full else "none",
                            label=f"{opt}: {'full ∇f' if full else 'minibatch g'} (seed mean, min–max)")
            ax.axhline(float(THRESHOLDS["r_floor"]), label=f"r_floor = {float(THRESHOLDS['r_floor']):g}", **REF)
            ax.set_xscale("log")
            ax.set(xlabel="d (trainable scalars)", ylabel="r = ‖∇f‖₁/(√d‖∇f‖₂), time-averaged", ylim=(0, 1),
                   title=f"{sub['problem'].iloc[0]}: r across widths")
            legend(ax, "no data", loc="best")
            paths.append(save(fig, out_dir, stem + "-r"))
    return paths
