"""Rate in K: (1/K)Σ G_λ(x_k) (λ > 0) or (1/K)Σ‖∇f(x_k)‖₁ (λ = 0) is O(√d·K^-1/4) for Lion and CLion
under the horizon schedule. Judged as THEORY §4 says: first every run with known Δ, L, σ must be under
its own bound (one run over it: *no*); then the exponent a of a power-law fit over the largest decade
of K only (K ≥ K_max/`decade`), which must satisfy a ≤ −1/4 + `exponent_tol` with the whole seed-bootstrap
CI (equivalently: y·K^1/4 does not grow over that decade). The evidence gives the exponent over the
whole window, y·K^1/4 per K of the largest decade, and the K at which the fitted curve would cross the
fitted bound. SignSGD (β = 0: its bound keeps the floor 4√d·σ, so its bound row is vacuous), SGD, constant schedules, a fixed β1 and the ‖∇f‖₁ of λ > 0 runs are
reported as context. With λ > 0 on the scaled family the G_λ row is theory only where the constraint
is active (minimiser u = μ outside the box |u_i| ≤ √d/λ, THEORY §3); with the minimiser inside it is
sanity (G_λ is then ‖∇f‖₁ plus a non-negative term)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lionconv.analysis.bounds import bound_checks, bound_summary
from lionconv.analysis.groups import (column, comparable_groups, fit_text, fit_xy, fixed_beta1, is_constant_schedule,
                                      measure_column, num, set_text)
from lionconv.analysis.plots import figure_stem, rate_figure
from lionconv.analysis.verdict import Threshold, VerdictRow, fit_interval, judge_fit, le

NAME = "rate_in_K"
THEORY = "§4"
PRESETS = ("rate_in_K", "kkt_constrained", "kkt_interior", "clion_rate")
THRESHOLDS = {
    "exponent_tol": Threshold(0.03, "THEORY §4 derives a pre-asymptotic local slope of the claimed rate up to "
                                    "−0.223 at K = 1e2 on the scaled family (lower-order terms); 0.03 admits that "
                                    "drift and rejects K^-0.2 or slower"),
    "decade": Threshold(10.0, "fit only K ≥ K_max/10: the largest decade, where the lower-order terms matter least "
                              "(THEORY §4); the presets span ≥ 2 decades, so ≥ 3 K values enter"),
}
CLAIMED = ("lion", "clion")


def _status(g: pd.DataFrame) -> str:
    """'' when the rate is claimed for this group, else why not (a context row)."""
    opt = g["optimizer"].iloc[0]
    if opt == "signsgd":
        return "SignSGD (β = 0): the bound keeps the floor 4√d·σ, no K^-1/4 claim"
    if opt not in CLAIMED:
        return "baseline: no Lion claim"
    if is_constant_schedule(g["schedule"].iloc[0]):
        return "constant η, β: no K^-1/4 claim (THEORY §8)"
    if fixed_beta1(g):
        return "control: fixed β1 keeps the floor 2√d(1−β1)σ (THEORY §8)"
    return ""


def interior_box(g: pd.DataFrame) -> bool:
    """λ > 0 on the scaled family with the minimiser u = μ inside the box |u_i| ≤ ρ = √d/λ: G_λ is ‖∇f‖₁
    plus a non-negative term and nothing about the constraint is tested (THEORY §3)."""
    lam = float(g["weight_decay"].iloc[0])
    if lam <= 0 or str(g["problem"].iloc[0]) not in ("scaled_separable", "rotated_separable"):
        return False
    mu = abs(float(g["shift"].iloc[0]))
    mu = 0.0 if math.isnan(mu) else mu
    return bool(mu <= math.sqrt(float(g["d"].iloc[0])) / lam)


def table(data) -> pd.DataFrame:
    """One row per run: scope (its comparable group over K), figure, the measures, its bound check."""
    runs = data.runs
    cols = ["scope", "figure", "status", "run", "run_dir", "optimizer", "problem", "d", "K", "seed", "weight_decay",
            "schedule", "avg_grad_l1", "avg_kkt_residual", "avg_kind", "bound", "slack", "under", "note", "shift"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    checks = bound_checks(runs).set_index("run")
    parts = []
    for scope, g in comparable_groups(runs, "K"):
        first = g.iloc[0]
        g = g.assign(scope=scope, status=_status(g), shift=column(g, "cfg.problem.shift", 0.0),
                     figure=figure_stem(NAME, problem=first["problem"], d=first["d"], wd=first["weight_decay"]))
        for c in ("bound", "slack", "under", "note"):
            g[c] = g["run"].map(checks[c]) if c in checks else np.nan
        parts.append(g)
    return pd.concat(parts, ignore_index=True).reindex(columns=cols)


def decade_fit(g: pd.DataFrame, col: str, n_boot: int, seed: int):
    """Power-law fit of g[col] on K over K ≥ K_max/decade (None with fewer than 2 K there)."""
    top = g[g["K"] >= g["K"].max() / float(THRESHOLDS["decade"])]
    return fit_xy(top["K"], top[col], top["seed"], n_boot, seed)


def judge_rate(fit) -> str:
    """The exponent rule: whole CI of a ≤ −1/4 + exponent_tol."""
    return judge_fit(fit, le(-0.25 + float(THRESHOLDS["exponent_tol"])))


def crossing_K(g: pd.DataFrame, col: str, fit) -> float:
    """K at which fit (C·K^a over the largest decade) would cross the bound fitted on the same K (inf if
    the curve falls at least as fast as the bound, nan without bounds)."""
    top = g[(g["K"] >= g["K"].max() / float(THRESHOLDS["decade"])) & g["bound"].notna()]
    bfit = fit_xy(top["K"], top["bound"], np.zeros(len(top)), 0, 0) if len(top) else None
    if bfit is None:
        return math.nan
    if fit.slope <= bfit.slope:
        return math.inf
    log_k = (bfit.intercept - fit.intercept) / (fit.slope - bfit.slope)
    return math.inf if log_k > 700 else float(math.exp(log_k))     # nearly parallel fits: beyond any K


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    for scope, g in table.groupby("scope", sort=False):
        lam = float(g["weight_decay"].iloc[0])
        status = g["status"].iloc[0]
        measures = [measure_column(lam)] + ([("avg ‖∇f‖₁", "avg_grad_l1")] if lam > 0 else [])
        for i, (label, col) in enumerate(measures):
            whole = fit_xy(g["K"], g[col], g["seed"], n_boot, seed)
            fit = decade_fit(g, col, n_boot, seed)
            if fit is None or whole is None:
                continue
            top = g[g["K"] >= g["K"].max() / float(THRESHOLDS["decade"])]
            logged = "; averages over logged steps only" if (g["avg_kind"].fillna("exact") != "exact").any() else ""
            flat = top.groupby("K")[col].mean() * top.groupby("K")[col].mean().index.to_numpy() ** 0.25
            evidence = (f"exponent over the largest decade K ∈ {set_text(top['K'])}; y·K^1/4 there: "
                        + ", ".join(f"{v:.3g}" for v in flat.to_numpy()) + "; whole window "
                        f"K ∈ {set_text(g['K'])}: {fit_text(whole)}; {len(g)} runs, seeds {set_text(g['seed'])}"
                        f"{logged}; figures/{g['figure'].iloc[0]}.png")
            if status or i > 0:
                rows.append(VerdictRow(f"rate in K: {label}", "context", scope,
                                       status or "none (λ > 0: only G_λ is claimed)", fit.slope, fit.ci_low,
                                       fit.ci_high, fit_interval(fit), "n.a.", evidence, fit.n))
                continue
            holds = judge_rate(fit)
            kind = "sanity" if interior_box(g) else "theory"
            summary, all_under = bound_summary(g)
            if summary:
                evidence += "; " + summary
                if all_under is False:
                    holds = "no"
                cross = crossing_K(g, col, fit) if all_under else math.nan
                if not math.isnan(cross):
                    evidence += ("; the fitted curve falls at least as fast as the bound" if math.isinf(cross)
                                 else f"; the fitted curve would cross the bound at K ≈ {cross:.3g}")
            rows.append(VerdictRow(
                f"rate in K: {label}", kind, scope,
                f"every run under its bound, then a ≤ −0.25 + {num(float(THRESHOLDS['exponent_tol']))} on the "
                "largest decade", fit.slope, fit.ci_low, fit.ci_high, fit_interval(fit), holds, evidence, fit.n))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """Averaged measure vs K per scope, fitted line, bound dashed, K^-1/4 dotted; one figure per (problem, d, λ)."""
    lam = table["weight_decay"].astype(float) > 0
    paths = []
    for has_wd, sub in table.groupby(lam, sort=True):
        panels = [measure_column(1.0 if has_wd else 0.0)] + ([("avg ‖∇f‖₁", "avg_grad_l1")] if has_wd else [])
        paths += rate_figure(sub, "K", "d", panels, "iterations K", -0.25, "∝ K^-1/4 (theory rate)", out_dir)
    return paths
