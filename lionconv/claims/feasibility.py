"""§3 feasibility: sign-update runs (Lion, SignSGD; λ > 0) that start outside the box (λ‖x0‖∞ > 1). The
violation v_k = (λ‖x_k‖∞ − 1)₊ must stay under the envelope (1−ηλ)^k·v0 (relative tolerance
`envelope_rtol` on ‖x‖∞) and cannot reach 0 before k_min = ln((λ‖x0‖∞+1)/2)/−ln(1−ηλ), since each step
moves a coordinate by at most η(1+λ|x_i|): *yes* if under the envelope, never early and 0 reached
within K in every run; *unclear* if some run had not reached 0; *no* if above the envelope or earlier
than k_min. Rate row: slope of ln v_k on k while v_k > 0 over ln(1−ηλ), *yes* if the smallest ratio
≥ `rate_ratio_min`. Exact algebra on the iterates: sanity rows."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lionconv import theory
from lionconv.analysis.groups import column, finite, g3, num
from lionconv.analysis.plots import BOUND, figure_stem, legend, loglog, MARKERS, plt, save, STYLE, wide
from lionconv.analysis.verdict import EXACT, Threshold, VerdictRow

NAME = "feasibility"
THEORY = "§3"
PRESETS = ("kkt_constrained", "kkt_interior")
THRESHOLDS = {
    "envelope_rtol": Threshold(1e-5, "float32 rounding of ‖x‖∞ and of the envelope, as box_invariance"),
    "rate_ratio_min": Threshold(0.95, "the OLS slope of ln v_k over a short, concave (fast-path) stretch may read up "
                                      "to 5 % under ln(1−ηλ)"),
}


def table(data) -> pd.DataFrame:
    runs = data.runs
    """Sign-update runs (Lion, SignSGD) with λ > 0 that start outside the box (λ‖x0‖∞ > 1).

    v_k = max(0, λ‖x_k‖∞ − 1). THEORY §3: ‖x_{k+1}‖∞ ≤ q‖x_k‖∞ + η with q = 1 − ηλ, so
    v_k ≤ env_k = q^k·v_0. Conversely ‖x_{k+1}‖∞ ≥ q‖x_k‖∞ − η (each step moves a coordinate by at
    most η(1 + λ|x_i|)), so v_k + 2 ≥ q^k(v_0 + 2): no run can be feasible before
    k_min = ln((λ‖x0‖∞ + 1)/2) / −ln q. Columns: run, λ, η, K, seed, x0_linf, v0, k_reach (first
    logged step with v = 0, NaN if never), k_min, env_at_reach (the envelope's v there: it never
    reaches 0 itself), max_excess (max_k ‖x_k‖∞/envelope − 1), rate (OLS slope of ln v_k on k while
    v_k > 0), theory_rate (ln q), every_step (whether each step was logged).
    """
    cols = ["figure", "run", "run_dir", "optimizer", "problem", "weight_decay", "lr", "K", "seed", "x0_linf", "v0", "k_reach", "k_min",
            "env_at_reach", "max_excess", "rate", "theory_rate", "rate_ratio", "every_step"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    cand = runs[runs["optimizer"].isin(("lion", "signsgd")) & (runs["weight_decay"] > 0)
                & (runs["lr"] * runs["weight_decay"] < 1)
                & (runs["weight_decay"] * column(runs, "x0_linf") > 1 + 1e-9)]
    out = []
    for r in cand.itertuples(index=False):
        m = data.metrics(r.run_dir, ["step", "feasibility", "x_linf"])
        if m is None or m.empty:
            continue
        m = m[m["x_linf"].notna()].sort_values("step")
        lam, eta, x0 = float(r.weight_decay), float(r.lr), float(r.x0_linf)
        q = 1.0 - eta * lam
        k = m["step"].to_numpy(dtype=float)
        v = np.maximum(0.0, lam * m["x_linf"].to_numpy(dtype=float) - 1.0)
        v0 = lam * x0 - 1.0
        env_x = theory.box_envelope(x0, eta, lam, k)
        excess = float(np.max(m["x_linf"].to_numpy(dtype=float) / env_x) - 1.0)
        reached = np.flatnonzero(v <= 0)
        k_reach = float(k[reached[0]]) if len(reached) else math.nan
        pos = (v > 0)
        rate = math.nan
        if pos.sum() >= 3:
            rate = float(np.polyfit(k[pos], np.log(v[pos]), 1)[0])
        theory_rate = math.log(q)
        out.append(dict(figure=figure_stem(NAME, problem=r.problem), run=r.run, run_dir=r.run_dir, optimizer=r.optimizer, problem=r.problem, weight_decay=lam, lr=eta, K=r.K,
                        seed=r.seed, x0_linf=x0, v0=v0, k_reach=k_reach,
                        k_min=math.log((lam * x0 + 1.0) / 2.0) / -theory_rate,
                        env_at_reach=v0 * q**k_reach if finite(k_reach) else math.nan, max_excess=excess,
                        rate=rate, theory_rate=theory_rate, rate_ratio=rate / theory_rate,
                        every_step=bool(len(k) == r.K)))
    return pd.DataFrame(out, columns=cols)


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    for (opt, problem, lam), g in table.groupby(["optimizer", "problem", "weight_decay"], sort=True):
        scope = f"{opt} · {problem} · λ={num(lam)}"
        figure = f"figures/{g['figure'].iloc[0]}.png"
        under = bool((g["max_excess"] <= float(THRESHOLDS["envelope_rtol"])).all())
        reached = g["k_reach"].notna()
        # the lower limit is exact for every-step logs; a sparse log only bounds the reach step from above
        too_fast = bool((g["every_step"] & (g["k_reach"] < np.ceil(g["k_min"] - 1e-9))).any())
        ratio = g["k_reach"] / g["k_min"]
        if not under or too_fast:
            holds = "no"
        elif reached.all():
            holds = "yes"
        else:
            holds = "unclear"
        reach_txt = "; ".join(f"K={num(r.K)} s{r.seed}: k={g3(r.k_reach)} (k_min {r.k_min:.1f}, envelope still "
                              f"{g3(r.env_at_reach)})" for r in g.sort_values(["K", "seed"]).itertuples())
        rows.append(VerdictRow(
            "§3 feasibility: violation under (1−ηλ)^k·v0 and reaches 0", "sanity", scope,
            "v_k ≤ (1−ηλ)^k(λ‖x0‖∞−1) ∀k, reaches 0 at k ≥ k_min = ln((λ‖x0‖∞+1)/2)/−ln(1−ηλ)",
            float(ratio.median()) if reached.any() else math.nan, holds=holds, interval=EXACT,
            evidence=(f"measured = median k_reach/k_min (1 = as fast as any sign step can); {len(g)} runs from "
                      f"outside, {int(reached.sum())} reached 0 within K; max ‖x_k‖∞/envelope − 1 = "
                      f"{g['max_excess'].max():.2g}; {reach_txt}; {figure}; feasibility.csv"), n=len(g)))
        fitted = g[g["rate"].notna()]
        if fitted.empty:
            continue
        worst = float(fitted["rate_ratio"].min())
        rows.append(VerdictRow(
            "§3 feasibility: geometric rate of the violation", "sanity", scope,
            "slope of ln v_k on k ≤ ln(1−ηλ), i.e. rate/ln(1−ηλ) ≥ 1 (at least the envelope's rate)", worst,
            holds="yes" if worst >= float(THRESHOLDS["rate_ratio_min"]) else "no", interval=EXACT,
            evidence=(f"measured = min over runs of fitted slope / ln(1−ηλ); {len(fitted)} runs, slopes "
                      f"{g3(fitted['rate'].min())}…{g3(fitted['rate'].max())} per step vs ln(1−ηλ) "
                      f"{g3(fitted['theory_rate'].min())}…{g3(fitted['theory_rate'].max())}; ratio range "
                      f"{g3(fitted['rate_ratio'].min())}–{g3(fitted['rate_ratio'].max())} (>1: the fast path "
                      f"v+2 = (1−ηλ)^k(v0+2) is concave in log scale); {figure}"), n=len(fitted)))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    paths = []
    for stem, t in table.groupby("figure", sort=True):
        problem = t["problem"].iloc[0]
        with plt.rc_context(STYLE):
            fig, axes = wide(2)
            a1, a2 = axes[0]
            for i, (lam, g) in enumerate(t.groupby("weight_decay", sort=True)):
                rep = g.sort_values(["K", "seed"], ascending=[False, True]).iloc[0]
                m = data.metrics(rep["run_dir"], ["step", "x_linf"])
                if m is None:
                    continue
                k = m["step"].to_numpy(dtype=float)
                v = np.maximum(0.0, lam * m["x_linf"].to_numpy(dtype=float) - 1.0)
                q = 1.0 - rep["lr"] * lam
                c = f"C{i}"
                pos = v > 0
                a1.plot(k[pos], v[pos], color=c, label=f"λ={lam:g} (K={rep['K']:g}, seed {rep['seed']}): measured")
                kk = np.arange(0, max(k[pos].max() if pos.any() else 1, 1) * 1.5 + 2)
                a1.plot(kk, rep["v0"] * q**kk, color=c, label=f"λ={lam:g}: envelope (1−ηλ)^k·v0", **BOUND)
                fast = (rep["v0"] + 2) * q**kk - 2
                a1.plot(kk[fast > 0], fast[fast > 0], color=c, linestyle=":", linewidth=1,
                        label=f"λ={lam:g}: fastest possible path, 0 at k_min={rep['k_min']:.0f}")
                if np.isfinite(rep["k_reach"]):
                    a1.axvline(rep["k_reach"], color=c, linewidth=0.6, alpha=0.6)
                fitted = g[g["rate"].notna()]
                a2.plot(-fitted["theory_rate"], -fitted["rate"], MARKERS[i % len(MARKERS)], color=c,
                        label=f"λ={lam:g} (each run)")
            loglog(a1, x=False)
            a1.set(xlabel="step k", ylabel="violation (λ‖x_k‖∞ − 1)₊", title=f"{problem}: reaching the box (k_reach: thin line)")
            legend(a1, "no data", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
            fitted = t[t["rate"].notna()]
            if not fitted.empty:
                lo, hi = float((-fitted["theory_rate"]).min()), float((-fitted["theory_rate"]).max())
                xs = np.geomspace(lo / 1.5, hi * 1.5, 20)
                a2.plot(xs, xs, color="0.45", label="= −ln(1−ηλ) (envelope rate)", **BOUND)
            loglog(a2)
            a2.set(xlabel="−ln(1−ηλ) per step (theory)", ylabel="−slope of ln v_k on k (measured, per step)",
                   title="geometric rate of the violation")
            legend(a2, "no data", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
            paths.append(save(fig, out_dir, stem))
    return paths

