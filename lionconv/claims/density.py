"""§4 density: the ℓ1 rate matches Arjevani's lower bound in d exactly when ‖∇f‖₁/‖∇f‖₂ = Θ(√d), i.e.
r = ‖∇f‖₁/(√d‖∇f‖₂) (averaged over logged steps) bounded away from 0 on the runs whose rate is
claimed (Lion family, annealing schedule, controls excluded): *yes* if min r ≥ `r_dense` and, with a d
sweep, the slope of ln r on ln d has its whole CI ≥ −`r_slope_tol`; *no* if min r < `r_dense` and the
whole CI lies below −`r_slope_tol`; else *unclear*. On separable families with i.i.d. coordinates r is
a constant of the noise law, so those rows are sanity. The time-averaged ‖∇f‖₂ over (ΔLσ²/K)^¼ is
context (Arjevani's constant is unknown and the bound is for the worst-case instance)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lionconv import theory
from lionconv.analysis.groups import (column, fit_text, fit_xy, g3, is_constant_schedule, scoped_groups,
                                      set_text)
from lionconv.analysis.load import LION_FAMILY
from lionconv.analysis.verdict import EXACT, Threshold, VerdictRow, fit_interval, ge, judge_exact, judge_fit

NAME = "density"
THEORY = "§4"
PRESETS = ("rate_in_K", "rate_in_d")
THRESHOLDS = {
    "r_dense": Threshold(0.5, "a vector with r ≥ ½ has effective support ≥ d/4 (r ≤ √(s/d) for s nonzeros)"),
    "r_slope_tol": Threshold(0.05, "over ≥ 2 decades of d a slope of −0.05 is a 20 % fall of r, the smallest the "
                                   "per-run scatter of r resolves"),
}
SEPARABLE = ("scaled_separable", "naive_separable", "quadratic")
FREE = {"K", "d", "cfg.problem.d", "cfg.problem.width",
        "cfg.optimizer.lr", "cfg.optimizer.betas"}      # η, β are functions of K and d under the horizon schedule


def table(data) -> pd.DataFrame:
    """Runs whose rate is claimed: scope, r (full, minibatch), and avg ‖∇f‖₂ / (ΔLσ²/K)^¼ where Δ, L, σ known."""
    runs = data.runs
    cols = ["scope", "figure", "run", "run_dir", "optimizer", "problem", "d", "K", "seed", "mean_ratio_r",
            "mean_mb_ratio_r", "lb_ratio"]
    if runs.empty or "mean_ratio_r" not in runs:
        return pd.DataFrame(columns=cols)
    cand = runs[runs["optimizer"].isin(LION_FAMILY) & ~runs["schedule"].map(is_constant_schedule)
                & column(runs, "cfg.schedule.beta1").isna() & runs["mean_ratio_r"].notna()]
    parts = []
    for suffix, g in scoped_groups(cand, free=FREE):
        first = g.iloc[0]
        scope = " · ".join(p for p in (f"{first['optimizer']} · {first['problem']}", suffix) if p)
        lb = []
        for r in g.itertuples(index=False):
            m = data.metrics(r.run_dir, ["grad_l2"])
            known = all(np.isfinite(v) and v > 0 for v in (r.Delta, r.L, r.sigma))
            lb.append(float(m["grad_l2"].mean()) / theory.lower_bound_l2(r.K, r.Delta, r.L, r.sigma)
                      if known and m is not None and m["grad_l2"].notna().any() else math.nan)
        parts.append(g.assign(scope=scope, figure="", lb_ratio=lb))
    return pd.concat(parts, ignore_index=True).reindex(columns=cols) if parts else pd.DataFrame(columns=cols)


def judge_density(r_min: float, fit) -> str:
    """yes: r_min ≥ r_dense and (no d sweep or slope CI ≥ −tol); no: r_min < r_dense and slope CI < −tol."""
    dense = judge_exact(r_min, ge(float(THRESHOLDS["r_dense"])))
    if fit is None:
        return dense
    slope = judge_fit(fit, ge(-float(THRESHOLDS["r_slope_tol"])))
    if dense == "yes" and slope == "yes":
        return "yes"
    if dense == "no" and slope == "no":
        return "no"
    return "unclear"


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    for scope, g in table.groupby("scope", sort=False):
        r_min = float(g["mean_ratio_r"].min())
        fit = fit_xy(g["d"], g["mean_ratio_r"], g["seed"], n_boot, seed) if g["d"].nunique() >= 2 else None
        kind = "sanity" if str(g["problem"].iloc[0]) in SEPARABLE else "theory"
        d_txt = (f"slope of ln r on ln d {fit_text(fit)} over d ∈ {set_text(g['d'])}" if fit is not None
                 else f"d = {set_text(g['d'])} (no d sweep)")
        interval = fit_interval(fit) if fit is not None else EXACT
        rows.append(VerdictRow(
            "§4 lower bound: dense gradients, ‖∇f‖₁/‖∇f‖₂ = Θ(√d)", kind, scope,
            f"r = ‖∇f‖₁/(√d‖∇f‖₂) ≥ {THRESHOLDS['r_dense'].value} and not decaying in d", r_min,
            fit.ci_low if fit is not None else r_min, fit.ci_high if fit is not None else r_min, interval,
            judge_density(r_min, fit),
            (f"measured = min over runs of r averaged over logged steps; CI: of the d-slope when there is a d "
             f"sweep; {len(g)} runs, r {g3(g['mean_ratio_r'].min())}–{g3(g['mean_ratio_r'].max())} (minibatch "
             f"{g3(g['mean_mb_ratio_r'].min())}–{g3(g['mean_mb_ratio_r'].max())}); {d_txt}; K ∈ {set_text(g['K'])}; "
             "density.csv"), len(g)))
        lb = g[g["lb_ratio"].notna()]
        if not lb.empty:
            rows.append(VerdictRow(
                "§4 context: avg ‖∇f‖₂ / (ΔLσ²/K)^¼", "context", scope,
                "Ω(1) for the worst case (Arjevani, unknown constant): no claim on one problem",
                float(lb["lb_ratio"].min()),
                evidence=(f"measured = min over runs; {len(lb)} runs, range {g3(lb['lb_ratio'].min())}–"
                          f"{g3(lb['lb_ratio'].max())}, K ∈ {set_text(lb['K'])}; a ratio falling with K means this "
                          "problem is easier than the lower-bound instance"), n=len(lb)))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """No figure of its own: r per run is in density.csv (the ℓ1/ℓ2 figures are l1_l2_ratio's)."""
    return []
