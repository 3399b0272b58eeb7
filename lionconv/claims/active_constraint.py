"""§3 active constraint: on the shifted scaled family f = (1/d)Σφ(√d·x_i − μ) with λ = √d/ρ, ρ < μ, the
constrained minimiser is the face u_i = √d·x_i = ρ, where G_λ = 0 but ‖∇f‖₁ = √d·|φ'(ρ − μ)| ≠ 0.
Face row (theory: Lion solves the box-constrained problem, Lion-K): the share of coordinates with
λ|x_i| ≥ 1 − 1e-2 (the `face_fraction` column) at the last logged step of the largest K, *yes* if the
whole seed range is ≥ `face_min`. ‖∇f‖₁ row (context): the last ‖∇f‖₁ over √d·|φ'(ρ − μ)|, per K — it
tends to 1, not to 0, which is why the constrained measure G_λ is needed. The rate of (1/K)ΣG_λ and
the bound are the rate_in_K and bound claims on the same runs."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lionconv.analysis.groups import finite, g3, num, set_text
from lionconv.analysis.plots import BOUND, figure_stem, legend, loglog, plt, save, STYLE, wide
from lionconv.analysis.verdict import Threshold, VerdictRow, ge, judge

NAME = "active_constraint"
THEORY = "§3"
PRESETS = ("kkt_constrained",)
THRESHOLDS = {
    "face_min": Threshold(0.95, "the issue's Bar: ≥ 95 % of the coordinates on the face at the end; a run that "
                                "ignores the box (or stops inside it) has ~0 % there"),
}
ACTIVE_FAMILIES = ("scaled_separable", "rotated_separable")


def phi_prime(u, alpha, omega):
    """φ'(u) = u + α·ω·sin(ω·u) of the scaled family's φ(u) = u²/2 − α·cos(ω·u) (THEORY §6)."""
    return u + alpha * omega * np.sin(omega * u)


def table(data) -> pd.DataFrame:
    """One row per Lion-family run on the scaled family with μ > ρ = √d/λ (an active face).

    face_last = face_fraction at the last logged step; grad_l1_last = ‖∇f‖₁ there; face_l1 =
    √d·|φ'(ρ − μ)|, the ‖∇f‖₁ of the KKT point; rho = √d/λ, mu = shift."""
    runs = data.runs
    cols = ["figure", "run", "run_dir", "optimizer", "problem", "d", "K", "seed", "weight_decay", "rho", "mu",
            "face_last", "grad_l1_last", "kkt_last", "face_l1"]
    if runs.empty or "cfg.problem.shift" not in runs:
        return pd.DataFrame(columns=cols)
    out = []
    for _, r in runs[runs["problem"].isin(ACTIVE_FAMILIES) & (runs["weight_decay"] > 0)].iterrows():
        mu, d, lam = float(r["cfg.problem.shift"]), float(r["d"]), float(r["weight_decay"])
        rho = math.sqrt(d) / lam
        if not (finite(mu) and 0 < rho < mu):
            continue
        m = data.metrics(r["run_dir"], ["step", "face_fraction", "grad_l1", "kkt_residual"])
        if m is None or m.empty:
            continue
        last = m.sort_values("step").iloc[-1]
        alpha, omega = float(r["cfg.problem.alpha"]), float(r["cfg.problem.omega"])
        out.append(dict(figure=figure_stem(NAME, problem=r["problem"], d=r["d"]), run=r["run"], run_dir=r["run_dir"],
                        optimizer=r["optimizer"], problem=r["problem"], d=d, K=float(r["K"]), seed=r["seed"],
                        weight_decay=lam, rho=rho, mu=mu, face_last=float(last["face_fraction"]),
                        grad_l1_last=float(last["grad_l1"]), kkt_last=float(last["kkt_residual"]),
                        face_l1=math.sqrt(d) * abs(float(phi_prime(rho - mu, alpha, omega)))))
    return pd.DataFrame(out, columns=cols)


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    for (opt, problem, d, lam, mu), g in table.groupby(["optimizer", "problem", "d", "weight_decay", "mu"], sort=True):
        scope = f"{opt} · {problem} · d={num(d)} · μ={num(mu)}, λ={num(lam)} (ρ={num(g['rho'].iloc[0])})"
        figure = f"figures/{g['figure'].iloc[0]}.png"
        top = g[g["K"] == g["K"].max()]
        lo, hi = float(top["face_last"].min()), float(top["face_last"].max())
        interval = f"seed range ({len(top)} seed{'s' if len(top) != 1 else ''})"
        per_k = ", ".join(f"K={num(k)}: {v:.3g}" for k, v in g.groupby("K")["face_last"].mean().items())
        rows.append(VerdictRow(
            "§3 active constraint: the iterates reach the face u_i = ρ", "theory", scope,
            f"share of coordinates on the face ≥ {THRESHOLDS['face_min'].value} at the end of the largest K",
            float(top["face_last"].mean()), lo, hi, interval, judge(lo, hi, ge(float(THRESHOLDS["face_min"])), interval),
            f"face fraction at the last step per K: {per_k}; final G_λ per K: "
            + ", ".join(f"K={num(k)}: {g3(v)}" for k, v in g.groupby("K")["kkt_last"].mean().items())
            + f"; {figure}", len(top)))
        ratio = g.assign(r=g["grad_l1_last"] / g["face_l1"]).groupby("K")["r"].mean()
        rows.append(VerdictRow(
            "§3 active constraint: ‖∇f‖₁ tends to √d·|φ'(ρ − μ)|, not to 0", "context", scope,
            f"reported: the last ‖∇f‖₁ over √d·|φ'(ρ − μ)| = {g3(g['face_l1'].iloc[0])}",
            float(ratio.iloc[-1]), float(ratio.min()), float(ratio.max()), "range over K", "n.a.",
            "per K: " + ", ".join(f"K={num(k)}: {v:.3g}" for k, v in ratio.items())
            + f"; K ∈ {set_text(g['K'])}; {figure}", len(g)))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """Face fraction and ‖∇f‖₁/(√d|φ'(ρ − μ)|) vs step for the longest run of each figure (1 dashed)."""
    paths = []
    for stem, t in table.groupby("figure", sort=True):
        r = t.sort_values(["K", "seed"]).iloc[-1]
        m = data.metrics(r["run_dir"], ["step", "face_fraction", "grad_l1"])
        if m is None:
            continue
        with plt.rc_context(STYLE):
            fig, axes = wide(2)
            a1, a2 = axes[0]
            a1.plot(m["step"] + 1, m["face_fraction"], color="C0", linewidth=0.8)
            a1.axhline(float(THRESHOLDS["face_min"]), color="0.45", label="face_min", **BOUND)
            a1.set(xscale="log", xlabel="step k + 1", ylabel="share of coordinates on the face",
                   title=f"{r['problem']}, d={r['d']:g}, K={r['K']:g}")
            legend(a1, "no data", loc="best")
            a2.plot(m["step"] + 1, m["grad_l1"] / r["face_l1"], color="C1", linewidth=0.8)
            a2.axhline(1.0, color="0.45", label="√d·|φ'(ρ − μ)|", **BOUND)
            loglog(a2)
            a2.set(xlabel="step k + 1", ylabel="‖∇f‖₁ / (√d·|φ'(ρ − μ)|)", title="the unconstrained measure stays > 0")
            legend(a2, "no data", loc="best")
            paths.append(save(fig, out_dir, stem))
    return paths
