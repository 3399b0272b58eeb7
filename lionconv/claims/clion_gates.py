"""§2 CLion gates: h(c) = sign(c) if the gate passes (min|c_j| ≥ ν globally, per tensor or per
coordinate) else c. Sanity (structural for a common c): the sign-branch fraction (mean over steps and
seeds) may rise by at most `gate_tol` between consecutive ν; coordinate ≥ tensor ≥ global within
`gate_tol` at each ν; a global gate's per-step choice matches τ_k = min|c_j| ≥ ν at every logged step.
Theory (§2's remark): with small |c| a global gate almost never takes the sign branch, fraction ≤
`global_almost_never` once ν exceeds the median τ_k; that row has no interval over seeds unless ≥ 5 seeds
are run, so it says at most *unclear* on fewer."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lionconv.analysis.groups import column, finite, g3, median_tau, num
from lionconv.analysis.plots import MARKERS, REF, STYLE, figure_stem, logx, logy, plt, save, wide
from lionconv.analysis.verdict import EXACT, Threshold, VerdictRow, judge, le

NAME = "clion_gates"
THEORY = "§2"
PRESETS = ("clion_gates",)
THRESHOLDS = {
    "gate_tol": Threshold(0.02, "runs at different ν follow different paths: their fractions differ by ~1/steps "
                                "plus path noise, < 2 % at the preset's ≥ 300 steps"),
    "global_almost_never": Threshold(0.05, "'almost never' read as under 1 step in 20"),
}


GATE_ORDER = ("global", "tensor", "coordinate")


def table(data) -> pd.DataFrame:
    runs = data.runs
    """CLion runs: per (problem, K, lr, gate, ν) the sign-branch fraction (mean over steps, then seeds),
    final loss, min τ over the run and the median per-step τ."""
    cols = ["figure", "problem", "K", "lr", "gate", "nu", "runs", "sign_fraction", "frac_min", "frac_max", "final_loss", "min_tau", "median_tau",
            "tau_agree", "run_dirs"]
    if runs.empty or "mean_sign_fraction" not in runs:
        return pd.DataFrame(columns=cols)
    cand = runs[(runs["optimizer"] == "clion") & runs["mean_sign_fraction"].notna() & runs["nu"].notna()]
    out = []
    for (problem, K, lr, gate, nu), g in cand.groupby(["problem", "K", "lr", "gate", "nu"], sort=True):
        agree = []
        for r in g.itertuples(index=False):
            if gate == "global":
                m = data.metrics(r.run_dir, ["tau", "sign_fraction"])
                if m is not None:
                    m = m[m["sign_fraction"].notna() & m["tau"].notna()]
                    agree.extend(((m["sign_fraction"] >= 0.5) == (m["tau"] >= nu)).tolist())
        out.append(dict(figure=figure_stem(NAME, problem=problem, K=K, lr=lr), problem=problem, K=K, lr=lr, gate=gate, nu=nu, runs=len(g),
                        sign_fraction=float(g["mean_sign_fraction"].mean()),
                        frac_min=float(g["mean_sign_fraction"].min()), frac_max=float(g["mean_sign_fraction"].max()),
                        final_loss=float(column(g, "final_loss").mean()), min_tau=float(column(g, "min_tau").min()),
                        median_tau=float(np.nanmedian([median_tau(data.metrics, d) for d in g["run_dir"]])),
                        tau_agree=float(np.mean(agree)) if agree else math.nan, run_dirs=tuple(g["run_dir"])))
    return pd.DataFrame(out, columns=cols)


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    tol = float(THRESHOLDS["gate_tol"])
    for (problem, K, lr), t in table.groupby(["problem", "K", "lr"], sort=True):
        if len(t[["gate", "nu"]].drop_duplicates()) < 2:
            continue  # a gate claim compares gates or ν values; one setting says nothing
        base = f"clion · {problem} · K={num(K)} · η={num(lr)}"
        figure = f"figures/{t['figure'].iloc[0]}.png; clion_gates.csv"
        frac = t.pivot_table(index="nu", columns="gate", values="sign_fraction")
        for gate in [g for g in GATE_ORDER if g in frac] + [g for g in frac if g not in GATE_ORDER]:
            s = frac[gate].dropna()
            if len(s) < 2:
                continue
            rise = float(np.max(np.diff(s.to_numpy())))
            rows.append(VerdictRow(
                "§2 CLion gate: sign-branch fraction non-increasing in ν", "sanity", f"{base} · gate={gate}",
                f"largest rise between consecutive ν ≤ {tol} (structural: a larger ν passes fewer |c_j|)", rise,
                rise, rise, EXACT, judge(rise, rise, le(tol), EXACT),
                evidence=("fraction at ν: " + ", ".join(f"{g3(n)}: {g3(v)}" for n, v in s.items())
                          + f"; {figure}"), n=len(s)))
        pairs = [(a, b) for a, b in (("coordinate", "tensor"), ("tensor", "global"), ("coordinate", "global"))
                 if a in frac and b in frac]
        if "tensor" in frac and {"coordinate", "global"} <= set(frac):
            pairs = pairs[:2]   # the chain coordinate ≥ tensor ≥ global implies the third
        margins = [(nu, a, b, frac.at[nu, a] - frac.at[nu, b]) for a, b in pairs for nu in frac.index
                   if finite(frac.at[nu, a]) and finite(frac.at[nu, b])]
        if margins:
            worst = min(margins, key=lambda x: x[3])
            rows.append(VerdictRow(
                "§2 CLion gates ordered: coordinate ≥ tensor ≥ global", "sanity", base,
                f"fraction(finer gate) − fraction(coarser) ≥ −{tol} at each ν (structural)", float(worst[3]),
                float(worst[3]), float(worst[3]), EXACT, "yes" if worst[3] >= -tol else "no",
                evidence=(f"measured = smallest margin ({worst[1]} − {worst[2]} at ν={g3(worst[0])}); "
                          + "; ".join(f"ν={g3(nu)}: " + ", ".join(f"{g} {g3(frac.at[nu, g])}" for g in frac
                                                                    if finite(frac.at[nu, g])) for nu in frac.index)
                          + f"; {figure}"), n=len(margins)))
        glob = t[t["gate"] == "global"].sort_values("nu")
        if glob.empty:
            continue
        agree = glob["tau_agree"].dropna()
        if not agree.empty:
            rows.append(VerdictRow(
                "§2 global gate: sign branch ⇔ τ_k = min|c_j| ≥ ν", "sanity", base,
                "share of logged steps where the gate's choice matches τ_k ≥ ν = 1 (definition)",
                float(agree.min()), float(agree.min()), float(agree.min()), EXACT, "yes" if agree.min() == 1.0 else "no",
                evidence=f"per-step sign_fraction vs τ_k over {len(glob)} ν values; {figure}", n=len(agree)))
        typical = float(np.nanmedian(glob["median_tau"])) if glob["median_tau"].notna().any() else math.nan
        for r in glob.itertuples(index=False):
            applies = finite(typical) and r.nu > typical
            interval = f"seed range ({int(r.runs)} seed{'s' if r.runs != 1 else ''})"
            holds = judge(r.frac_min, r.frac_max, le(float(THRESHOLDS["global_almost_never"])), interval)
            rows.append(VerdictRow(
                "§2 remark: with small |c| a global gate almost never takes the sign branch",
                "theory" if applies else "context", f"{base} · gate=global · ν={g3(r.nu)}",
                f"fraction ≤ {THRESHOLDS['global_almost_never'].value} once ν exceeds the typical τ_k = min|c_j|" if applies else
                "n.a.: ν is below the typical τ_k, the gate is meant to pass", r.sign_fraction, r.frac_min, r.frac_max,
                interval, holds,
                evidence=(f"median per-step τ_k {g3(r.median_tau)} (all global runs {g3(typical)}), min τ over the run "
                          f"{g3(r.min_tau)}; final loss {g3(r.final_loss)}; {figure}"), n=int(r.runs)))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """Sign-branch fraction vs ν (log x), one line per gate; final loss vs ν."""
    paths = []
    for stem, t in table.groupby("figure", sort=True):
        problem, K, lr = t["problem"].iloc[0], t["K"].iloc[0], t["lr"].iloc[0]
        with plt.rc_context(STYLE):
            fig, axes = wide(2)
            a1, a2 = axes[0]
            gates = [g for g in GATE_ORDER if g in set(t["gate"])] + sorted(set(t["gate"]) - set(GATE_ORDER))
            for i, gate in enumerate(gates):
                g = t[t["gate"] == gate].sort_values("nu")
                a1.plot(g["nu"], g["sign_fraction"], MARKERS[i] + "-", color=f"C{i}", label=f"gate={gate}")
                a2.plot(g["nu"], g["final_loss"], MARKERS[i] + "-", color=f"C{i}", label=f"gate={gate}")
            tau = t.loc[t["gate"] == "global", "median_tau"].median()
            if np.isfinite(tau):
                a1.axvline(tau, label=f"median τ_k = min|c_j| (global runs): {tau:.2g}", **REF)
            logx(a1, plain=False)
            a1.set_ylim(-0.03, 1.03)
            a1.set(xlabel="ν (CLion gate threshold)", ylabel="sign-branch fraction (mean over steps)",
                   title=f"{problem}: CLion, K={K:g}, η={lr:g}")
            a1.legend(loc="best")
            logy(a2)
            logx(a2, plain=False)
            a2.set(xlabel="ν (CLion gate threshold)", ylabel="final training loss f(x_K)", title="final loss")
            a2.legend(loc="best")
            paths.append(save(fig, out_dir, stem))
    return paths

