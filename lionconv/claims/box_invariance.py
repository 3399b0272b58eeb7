"""Box envelope: for sign updates (Lion, SignSGD; λ > 0, ηλ ≤ 1, constant η within the run) every logged
‖x_k‖∞ ≤ 1/λ + (1−ηλ)^k(‖x_0‖∞ − 1/λ) (THEORY §3, exact algebra: a violation beyond `envelope_rtol`
is an implementation bug, hence sanity). CLion is excluded: its h(c) = c branch can move a coordinate
by more than η."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lionconv import theory
from lionconv.analysis.groups import num
from lionconv.analysis.plots import BOUND, color, figure_stem, legend, loglog, plt, representatives, save, STYLE
from lionconv.analysis.verdict import EXACT, Threshold, VerdictRow, judge_exact, le

NAME = "box_invariance"
THEORY = "§3"
PRESETS = ("kkt_constrained", "kkt_interior")
THRESHOLDS = {"envelope_rtol": Threshold(1e-5, "float32 rounding of ‖x‖∞ and of the envelope (≈ 1e-7 relative per "
                                                 "step, accumulated over ≤ 1e4 steps)")}


def table(data) -> pd.DataFrame:
    """One row per sign-update run with λ > 0: worst = max over logged k > 0 of ‖x_k‖∞ / envelope_k."""
    runs = data.runs
    cols = ["figure", "run", "run_dir", "optimizer", "problem", "weight_decay", "lr", "K", "seed", "x0_linf", "worst"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    cand = runs[runs["optimizer"].isin(("lion", "signsgd")) & (runs["weight_decay"] > 0)
                & (runs["lr"] * runs["weight_decay"] <= 1)]
    out = []
    for r in cand.itertuples(index=False):
        worst = np.nan
        m = data.metrics(r.run_dir, ["step", "x_linf"])
        if m is not None and np.isfinite(r.x0_linf):
            m = m[(m["step"] > 0) & m["x_linf"].notna()]       # k = 0 is x0 itself: ratio 1 by definition
            if not m.empty:
                env = theory.box_envelope(r.x0_linf, r.lr, r.weight_decay, m["step"].to_numpy(dtype=float))
                worst = float(np.nanmax(m["x_linf"].to_numpy() / np.maximum(env, 1e-300)))
        out.append(dict(figure=figure_stem(NAME, problem=r.problem, wd=r.weight_decay), run=r.run, run_dir=r.run_dir,
                        optimizer=r.optimizer, problem=r.problem, weight_decay=r.weight_decay, lr=r.lr, K=r.K,
                        seed=r.seed, x0_linf=r.x0_linf, worst=worst))
    return pd.DataFrame(out, columns=cols)


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    for (opt, problem, lam), g in table[table["worst"].notna()].groupby(["optimizer", "problem", "weight_decay"],
                                                                      sort=True):
        worst = float(g["worst"].max())
        rows.append(VerdictRow("‖x_k‖∞ under the §3 box envelope", "sanity", f"{opt} · {problem} · λ={num(lam)}",
                               f"max_k ‖x_k‖∞/envelope ≤ 1 + {THRESHOLDS['envelope_rtol'].value:g}", worst, worst, worst,
                               EXACT, judge_exact(worst, le(1 + float(THRESHOLDS["envelope_rtol"]))),
                               f"{len(g)} runs, every logged step; figures/{g['figure'].iloc[0]}.png", len(g)))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    paths = []
    for stem, sub in table.groupby("figure", sort=True):
        reps = representatives(sub)
        curves = [(r, data.metrics(r.run_dir, ["step", "kkt_residual", "feasibility"])) for r in reps.itertuples(index=False)]
        curves = [(r, m) for r, m in curves if m is not None and m["kkt_residual"].notna().any()]
        if not curves:
            continue
        with plt.rc_context(STYLE):
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(2 * STYLE["figure.figsize"][0], STYLE["figure.figsize"][1]))
            for r, m in curves:
                c = color(r.optimizer)
                a1.plot(m["step"], m["kkt_residual"], color=c, label=f"{r.optimizer} (K={r.K:g}, seed {r.seed})")
                a2.plot(m["step"], m["feasibility"], color=c, label=f"{r.optimizer}: max(0, λ‖x‖∞ − 1)")
                x0 = getattr(r, "x0_linf", np.nan)
                if np.isfinite(x0) and r.lr * r.weight_decay <= 1:
                    env = theory.box_envelope(x0, r.lr, r.weight_decay, m["step"].to_numpy(dtype=float))
                    a2.plot(m["step"], np.maximum(0.0, r.weight_decay * env - 1), color=c,
                            label=f"{r.optimizer}: §3 envelope", **BOUND)
            loglog(a1, x=False)
            a1.set(xlabel="step k", ylabel="G_λ(x_k) = ‖∇f‖₁ + λ⟨∇f, x⟩", title="KKT residual")
            a2.set(xlabel="step k", ylabel="feasibility violation (λ‖x‖∞ − 1)₊", title="box ‖x‖∞ ≤ 1/λ")
            legend(a1, "no data", loc="best")
            legend(a2, "no data", loc="best")
            paths.append(save(fig, out_dir, stem))
    return paths

