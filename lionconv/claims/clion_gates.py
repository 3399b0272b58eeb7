"""§2 CLion gates: h(c) = sign(c) if the gate passes (min|c_j| ≥ ν globally, per tensor or per
coordinate) else c. The gate remark posed against the run's own τ_k = min|c_j| over ALL steps
(tau_steps.parquet): per gate and ν (calibrated, nu_quantile = q, or explicit) the sign-branch
fraction, F_τ(ν) = the share of steps with τ_k < ν, and whether the run trained (theory.did_train,
loss criterion) — context. Sanity (definition): a global gate takes the sign branch at exactly the
steps with τ_k ≥ ν, so its fraction over all steps is 1 − F_τ(ν) (within `gate_tol`); at one explicit
ν shared by the gates, coordinate ≥ tensor ≥ global within `gate_tol` (a finer gate passes a
superset); the fraction is non-increasing in ν (or q) within `gate_tol`. Context: the paper-form
global gate (explicit ν) at Lion's step sizes, with its fraction, F_τ(ν), final loss and move."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from lionconv import theory
from lionconv.analysis.groups import finite, g3, num
from lionconv.analysis.plots import figure_stem, legend, logx, MARKERS, plt, save, STYLE, wide
from lionconv.analysis.verdict import EXACT, Threshold, VerdictRow, judge, le

NAME = "clion_gates"
THEORY = "§2"
PRESETS = ("clion_gates",)
THRESHOLDS = {
    "gate_tol": Threshold(0.02, "runs at different ν follow different paths: their fractions differ by ~1/steps "
                                "plus path noise, < 2 % at the preset's ≥ 300 steps"),
}
GATE_ORDER = ("global", "tensor", "coordinate")


def _tau_steps(run_dir):
    """(τ_k, sign fraction) at every step from tau_steps.parquet, or None."""
    path = Path(run_dir) / "tau_steps.parquet"
    try:
        t = pd.read_parquet(path, columns=["tau", "sign_fraction"])
    except Exception:  # absent or unreadable: the run simply has no per-step τ
        return None
    return t["tau"].to_numpy(float), t["sign_fraction"].to_numpy(float)


def table(data) -> pd.DataFrame:
    """CLion runs, one row each: gate, setting ("q=0.5" calibrated or "ν=1e-06" explicit), ν used, the
    sign-branch fraction over all steps, F_τ(ν) = share of steps with τ_k < ν, the median τ_k,
    trained (theory.did_train on the loss), final loss and ‖x_T − x_0‖₂."""
    cols = ["figure", "problem", "K", "lr", "gate", "setting", "q", "nu", "seed", "sign_fraction", "F_tau",
            "median_tau", "trained", "final_loss", "moved", "run"]
    runs = data.runs
    if runs.empty or "mean_sign_fraction" not in runs:
        return pd.DataFrame(columns=cols)
    cand = runs[(runs["optimizer"] == "clion") & runs["mean_sign_fraction"].notna()]
    out = []
    for _, r in cand.iterrows():
        q, nu = r.get("nu_quantile", math.nan), r.get("nu_used", math.nan)
        steps = _tau_steps(r["run_dir"])
        tau, frac = steps if steps is not None else (np.array([]), np.array([]))
        ok = np.isfinite(tau)
        out.append(dict(figure=figure_stem(NAME, problem=r["problem"], K=r["K"], lr=r["lr"]), problem=r["problem"],
                        K=r["K"], lr=r["lr"], gate=r["gate"], setting=f"q={num(q)}" if finite(q) else f"ν={g3(nu)}",
                        q=q, nu=nu, seed=r["seed"],
                        sign_fraction=float(frac[ok].mean()) if ok.any() else r["mean_sign_fraction"],
                        F_tau=float((tau[ok] < nu).mean()) if ok.any() and finite(nu) else math.nan,
                        median_tau=float(np.median(tau[ok])) if ok.any() else math.nan,
                        trained=bool(theory.did_train(r.get("initial_loss", math.nan), r["final_loss"])),
                        final_loss=r["final_loss"], moved=r.get("distance_from_start", math.nan), run=r["run"]))
    return pd.DataFrame(out, columns=cols).sort_values(["problem", "gate", "q", "nu", "seed"]).reset_index(drop=True)


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    tol = float(THRESHOLDS["gate_tol"])
    for (problem, K, lr), t in table.groupby(["problem", "K", "lr"], sort=True):
        base = f"clion · {problem} · K={num(K)} · η={num(lr)}"
        figure = f"figures/{t['figure'].iloc[0]}.png; clion_gates.csv"
        s = t.groupby(["gate", "setting"]).agg(q=("q", "first"), nu=("nu", "mean"), frac=("sign_fraction", "mean"),
                                               F=("F_tau", "mean"), med=("median_tau", "median"),
                                               trained=("trained", "mean"), loss=("final_loss", "mean"),
                                               moved=("moved", "mean"), runs=("run", "size")).reset_index()
        for gate in [g for g in GATE_ORDER if g in set(s["gate"])]:
            g = s[s["gate"] == gate]
            cal = g[g["q"].notna()].sort_values("q")
            rows.append(VerdictRow(
                "§2 gate remark: sign-branch fraction against ν's place among τ_k (all steps)", "context",
                f"{base} · gate={gate}", "reported: fraction, F_τ(ν) = share of steps with τ_k < ν, trained",
                float(g["frac"].mean()),
                evidence="; ".join(f"{r.setting} (ν≈{g3(r.nu)}): fraction {g3(r.frac)}, F_τ(ν) {g3(r.F)}, "
                                   f"ν / median τ_k {g3(r.nu / r.med) if finite(r.med) and r.med > 0 else '—'}, "
                                   f"trained {g3(r.trained * r.runs)}/{r.runs}, final loss {g3(r.loss)}"
                                   for r in g.sort_values("nu").itertuples()) + f"; {figure}", n=int(g["runs"].sum())))
            if len(cal) >= 2:
                rise = float(np.max(np.diff(cal["frac"].to_numpy())))
                rows.append(VerdictRow(
                    "§2 CLion gate: sign-branch fraction non-increasing in ν", "sanity", f"{base} · gate={gate}",
                    f"largest rise between consecutive q ≤ {tol} (a larger q gives a larger ν)", rise, rise, rise, EXACT,
                    judge(rise, rise, le(tol), EXACT),
                    evidence="fraction at q: " + ", ".join(f"{num(r.q)}: {g3(r.frac)}" for r in cal.itertuples())
                    + f"; {figure}", n=len(cal)))
        glob = t[(t["gate"] == "global") & t["F_tau"].notna()]
        if not glob.empty:
            err = (glob["sign_fraction"] - (1.0 - glob["F_tau"])).abs()
            worst = float(err.max())
            rows.append(VerdictRow(
                "§2 global gate: sign branch ⇔ τ_k ≥ ν, so fraction = 1 − F_τ(ν)", "sanity", base,
                f"|fraction − (1 − F_τ(ν))| ≤ {tol} over all steps (definition)", worst, worst, worst, EXACT,
                judge(worst, worst, le(tol), EXACT),
                evidence=f"{len(glob)} global-gate runs; largest deviation {g3(worst)}; {figure}", n=len(glob)))
        explicit = s[s["q"].isna()]
        for setting, e in explicit.groupby("setting"):
            fr = e.set_index("gate")["frac"]
            pairs = [(a, b) for a, b in (("coordinate", "tensor"), ("tensor", "global")) if a in fr and b in fr]
            if pairs:
                margin = min(float(fr[a] - fr[b]) for a, b in pairs)
                rows.append(VerdictRow(
                    "§2 CLion gates ordered: coordinate ≥ tensor ≥ global", "sanity", f"{base} · {setting}",
                    f"fraction(finer gate) − fraction(coarser) ≥ −{tol} at one ν (a finer gate passes a superset)",
                    margin, margin, margin, EXACT, "yes" if margin >= -tol else "no",
                    evidence=", ".join(f"{g} {g3(v)}" for g, v in fr.items()) + f"; {figure}", n=len(fr)))
            for r in e[e["gate"] == "global"].itertuples():
                rows.append(VerdictRow(
                    "§2 paper-form global gate at Lion's step size", "context", f"{base} · gate=global · {setting}",
                    "reported: inert when ν exceeds the typical τ_k (then CLion is momentum SGD at Lion's step)",
                    float(r.frac), evidence=(f"sign-branch fraction {g3(r.frac)}, F_τ(ν) {g3(r.F)}, median τ_k "
                                             f"{g3(r.med)}, trained {g3(r.trained * r.runs)}/{r.runs}, final loss "
                                             f"{g3(r.loss)}, ‖x_T − x_0‖₂ {g3(r.moved)}; {figure}"), n=int(r.runs)))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """Sign-branch fraction vs F_τ(ν) (ν's quantile among τ_k over all steps) and vs ν / median τ_k, one
    line per gate; filled markers: the run trained, open: it did not."""
    paths = []
    for stem, t in table.groupby("figure", sort=True):
        problem, K, lr = t["problem"].iloc[0], t["K"].iloc[0], t["lr"].iloc[0]
        with plt.rc_context(STYLE):
            fig, axes = wide(2)
            a1, a2 = axes[0]
            for i, gate in enumerate([g for g in GATE_ORDER if g in set(t["gate"])]):
                g = t[t["gate"] == gate].sort_values("nu")
                ratio = g["nu"] / g["median_tau"]
                for ax, x in ((a1, g["F_tau"]), (a2, ratio)):
                    ax.plot(x, g["sign_fraction"], "-", color=f"C{i}", linewidth=0.8)
                    ax.scatter(x[g["trained"]], g["sign_fraction"][g["trained"]], marker=MARKERS[i], color=f"C{i}",
                               label=f"gate={gate} (filled: trained)")
                    ax.scatter(x[~g["trained"]], g["sign_fraction"][~g["trained"]], marker=MARKERS[i],
                               facecolors="none", edgecolors=f"C{i}")
            a1.plot([0, 1], [1, 0], color="0.45", linestyle=":", label="1 − F_τ(ν) (global gate, definition)")
            a1.set(xlabel="F_τ(ν): share of steps with τ_k = min|c_j| < ν", ylabel="sign-branch fraction (all steps)",
                   title=f"{problem}: CLion, K={K:g}, η={lr:g}")
            logx(a2, plain=False)
            a2.set(xlabel="ν / median τ_k", ylabel="sign-branch fraction", title="against ν relative to τ_k")
            for ax in (a1, a2):
                ax.set_ylim(-0.03, 1.03)
                legend(ax, "no data", loc="best")
            paths.append(save(fig, out_dir, stem))
    return paths
