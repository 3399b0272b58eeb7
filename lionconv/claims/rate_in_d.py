"""Rate in d: at fixed K the averaged measure (G_λ if λ > 0, else ‖∇f‖₁) grows at most like √d for Lion
and CLion, where Δ, L, σ do not grow with d (THEORY §6): exponent b of a power-law fit on d with
b ≤ 1/2 + `exponent_tol` for the whole seed-bootstrap CI. On the scaled separable family the exponent
is 1/2 by construction for any coordinate-wise method (SGD gives it too), so those rows are sanity;
the rotated family (the scaled one composed with Q = H·D/√d, THEORY §6: the same closed-form Δ, L, σ,
coupled coordinates) and any family whose constants stay within a factor 1.5 over d give theory rows; the naive
family (Δ, σ² ∝ d), SignSGD, SGD and constant schedules are context."""
from __future__ import annotations

import pandas as pd

from lionconv.analysis.bounds import bound_checks
from lionconv.analysis.groups import (SCALED_FAMILIES, comparable_groups, d_family, fit_xy, is_constant_schedule,
                                      measure_column, set_text)
from lionconv.analysis.plots import figure_stem, rate_figure
from lionconv.analysis.verdict import Threshold, VerdictRow, fit_interval, judge_fit, le

NAME = "rate_in_d"
THEORY = "§4, §6"
PRESETS = ("rate_in_d",)
THRESHOLDS = {
    "exponent_tol": Threshold(0.05, "the d sweep spans ≥ 2 decades; at ≈ 5 % per-point noise the slope's standard "
                                    "error is ≈ 0.02, so 0.05 is the smallest excess over 1/2 it resolves"),
}
CLAIMED = ("lion", "clion")


def _kind(g: pd.DataFrame) -> tuple[str, str]:
    """(kind, theory text) of a comparable group over d."""
    family = d_family(g)
    if g["optimizer"].iloc[0] not in CLAIMED:
        return "context", "no √d claim for this optimizer (SignSGD: β = 0; SGD: baseline)"
    if is_constant_schedule(g["schedule"].iloc[0]):
        return "context", "constant η, β: no √d claim (the schedule sets η ∝ 1/√d)"
    if family == "fixed":
        if str(g["problem"].iloc[0]) in SCALED_FAMILIES:
            return "sanity", "≤ 0.5: exact on the scaled separable family for any coordinate-wise method"
        return "theory", "≤ 0.5 (O(√d)) with Δ, L, σ fixed in d"
    if family == "contrast":
        return "context", "contrast: Δ, σ² ∝ d, no √d claim"
    return "context", f"≤ 0.5 only if Δ, L, σ fixed in d ({family} here)"


def table(data) -> pd.DataFrame:
    runs = data.runs
    cols = ["scope", "figure", "kind", "text", "run", "run_dir", "optimizer", "problem", "d", "K", "seed",
            "weight_decay", "schedule", "avg_grad_l1", "avg_kkt_residual", "Delta", "L", "sigma", "bound"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    bounds = bound_checks(runs).set_index("run")["bound"]
    parts = []
    for scope, g in comparable_groups(runs, "d"):
        first = g.iloc[0]
        kind, text = _kind(g)
        parts.append(g.assign(scope=scope, kind=kind, text=text, bound=g["run"].map(bounds),
                              figure=figure_stem(NAME, problem=first["problem"], K=first["K"], wd=first["weight_decay"])))
    return pd.concat(parts, ignore_index=True).reindex(columns=cols)


def judge_exponent(fit) -> str:
    return judge_fit(fit, le(0.5 + float(THRESHOLDS["exponent_tol"])))


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    for scope, g in table.groupby("scope", sort=False):
        label, col = measure_column(float(g["weight_decay"].iloc[0]))
        fit = fit_xy(g["d"], g[col], g["seed"], n_boot, seed)
        if fit is None:
            continue
        kind, text = g["kind"].iloc[0], g["text"].iloc[0]
        holds = judge_exponent(fit) if kind != "context" else "n.a."
        rows.append(VerdictRow(f"rate in d: {label}", kind, scope, text, fit.slope, fit.ci_low, fit.ci_high,
                               fit_interval(fit), holds,
                               f"{len(g)} runs, d ∈ {set_text(g['d'])}, seeds {set_text(g['seed'])}; "
                               f"figures/{g['figure'].iloc[0]}.png", fit.n))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    paths = []
    for has_wd, sub in table.groupby(table["weight_decay"].astype(float) > 0, sort=True):
        paths += rate_figure(sub, "d", "K", [measure_column(1.0 if has_wd else 0.0)], "dimension d (trainable scalars)",
                             0.5, "∝ √d (theory ≤)", out_dir)
    return paths
