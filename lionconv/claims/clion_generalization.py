"""§7 generalization: gap = final test − train loss against the training-set size N at fixed T, on
full training sets. CLion: O(1/N), the slope of ln gap on ln N with its whole CI ≤ −1 + `gap_tol`
(theory). Lion and SignSGD: O(1/(N·τ^T)) fixes no exponent in N (context), with log10 of the bound
term 1/(N·τ^T) at τ = min τ and at the median τ_k (context: vacuous when τ ≪ 1, the paper's point).
Gaps ≤ 0 cannot be logged; they are left out and counted in the evidence."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lionconv import theory
from lionconv.analysis.groups import clion_variant, drop_index, finite, fit_xy, g3, median_tau, num, set_text
from lionconv.analysis.load import LION_FAMILY
from lionconv.analysis.plots import MARKERS, REF, STYLE, color, figure_stem, loglog, logx, plt, save, wide
from lionconv.analysis.verdict import Threshold, VerdictRow, fit_interval, judge_fit, le

NAME = "clion_generalization"
THEORY = "§7"
PRESETS = ("clion_generalization",)
THRESHOLDS = {
    "gap_tol": Threshold(0.1, "N spans one decade (≈ 3 points); at ≈ 20 % scatter of a gap the slope resolves ≈ 0.1"),
}


def table(data) -> pd.DataFrame:
    runs = data.runs
    """Lion-family runs on the full N-example training set (drop_index null), per run: N = n_train,
    gap = final test loss − final train loss, acc_gap = train acc − test acc, min τ, median τ_k, and
    log10 of Lion's bound term 1/(N·τ^T) with T = K, at τ = min τ and at τ = median τ_k."""
    cols = ["problem", "optimizer", "base_optimizer", "N", "seed", "K", "train_loss", "test_loss", "gap", "acc_gap",
            "sign_fraction", "min_tau", "median_tau", "log10_term_min_tau", "log10_term_median_tau", "run", "figure"]
    if runs.empty or "final_test_loss" not in runs or "cfg.problem.n_train" not in runs:
        return pd.DataFrame(columns=cols)
    cand = runs[runs["optimizer"].isin(LION_FAMILY) & runs["final_test_loss"].notna() & runs["final_loss"].notna()
                & runs["cfg.problem.n_train"].notna() & drop_index(runs).isna()]
    cand = cand.assign(_variant=clion_variant(cand))
    out = []
    for _, r in cand.iterrows():
        n, K = float(r["cfg.problem.n_train"]), float(r["K"])
        med = median_tau(data.metrics, r["run_dir"])
        term = lambda tau: theory.lion_generalization_log10_term(n, K, tau) if finite(tau) and tau > 0 else math.nan  # noqa: E731
        out.append(dict(problem=r["problem"], optimizer=r["_variant"], base_optimizer=r["optimizer"], N=n,
                        seed=r["seed"], K=K,
                        train_loss=r["final_loss"], test_loss=r["final_test_loss"],
                        gap=r["final_test_loss"] - r["final_loss"], sign_fraction=r.get("mean_sign_fraction", math.nan),
                        acc_gap=r.get("final_train_acc", math.nan) - r.get("final_test_acc", math.nan),
                        min_tau=r["min_tau"], median_tau=med, log10_term_min_tau=term(r["min_tau"]),
                        log10_term_median_tau=term(med), run=r["run"],
                        figure=figure_stem(NAME, problem=r["problem"])))
    return pd.DataFrame(out, columns=cols).sort_values(["problem", "optimizer", "N", "seed"]).reset_index(drop=True)


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    for (problem, opt), g in table.groupby(["problem", "optimizer"], sort=True):
        scope = f"{opt} · {problem} · T={set_text(g['K'])}"
        base = g["base_optimizer"].iloc[0]
        figure = f"figures/{g['figure'].iloc[0]}.png; clion_generalization.csv"
        for label, col in (("test − train loss", "gap"), ("train − test accuracy", "acc_gap")):
            vals = g[col].to_numpy(dtype=float)
            bad = g[~(vals > 0)]
            note = (f"; {len(bad)} runs with gap ≤ 0 left out (N ∈ {set_text(bad['N'])}): a log needs gap > 0"
                    if len(bad) else "")
            means = "; ".join(f"N={num(n)}: {g3(v)}" for n, v in g.groupby("N")[col].mean().items())
            fit = fit_xy(g["N"], g[col], g["seed"], n_boot, seed)
            judged = base == "clion" and col == "gap"
            if judged:
                text = f"slope ≤ −1 + {THRESHOLDS['gap_tol'].value} (O(1/N))"
            elif col == "gap":
                text = "n.a.: the bound O(1/(N·τ^T)) fixes no exponent in N"
            else:
                text = "reported (the claims are on the loss gap)"
            if fit is None:
                rows.append(VerdictRow(f"§7 generalization gap ∝ N^s ({label})", "theory" if judged else "context",
                                       scope, text, math.nan,
                                       holds="unclear" if judged else "n.a.",
                                       evidence=f"fewer than 2 N with gap > 0; {means}{note}; {figure}", n=len(g)))
                continue
            holds = judge_fit(fit, le(-1.0 + float(THRESHOLDS["gap_tol"]))) if judged else "n.a."
            rows.append(VerdictRow(f"§7 generalization gap ∝ N^s ({label})", "theory" if judged else "context", scope,
                                   text, fit.slope, fit.ci_low, fit.ci_high, fit_interval(fit), holds,
                                   f"gap means {means}; seeds {set_text(g['seed'])}{note}; {figure}", fit.n))
        progress = (f"final train loss {g3(g['train_loss'].min())}–{g3(g['train_loss'].max())}"
                    + (f", sign-branch fraction {g3(g['sign_fraction'].mean())}" if g["sign_fraction"].notna().any()
                       else ""))
        for row in rows[-2:]:
            if row.scope == scope:
                row.evidence = f"{progress}; {row.evidence}"
        if base in ("lion", "signsgd") and g["log10_term_min_tau"].notna().any():
            per_n = g.groupby("N")[["log10_term_min_tau", "log10_term_median_tau", "min_tau"]].mean()
            rows.append(VerdictRow(
                "§7 Lion's bound term log10(1/(N·τ^T))", "context", scope,
                "reported: vacuous when τ ≪ 1 (the paper's point)", float(per_n["log10_term_min_tau"].min()),
                holds="n.a.",
                evidence=("measured = smallest over N at τ = min τ of the run; per N (min τ, median τ_k): "
                          + "; ".join(f"N={num(n)}: {g3(r.log10_term_min_tau)}, {g3(r.log10_term_median_tau)} "
                                      f"(τ_min {g3(r.min_tau)})" for n, r in per_n.iterrows())
                          + f"; {figure}"), n=len(g)))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """gap vs N (log-log, seed mean with min–max, fits solid, N^-1 dotted); log10 of Lion's bound term vs N."""
    paths = []
    for stem, t in table.groupby("figure", sort=True):
        problem = t["problem"].iloc[0]
        with plt.rc_context(STYLE):
            fig, axes = wide(2)
            a1, a2 = axes[0]
            anchor = None
            for i, (opt, g) in enumerate(t.groupby("optimizer", sort=True)):
                pos = g[g["gap"] > 0]
                if pos.empty:
                    continue
                st = pos.groupby("N")["gap"].agg(["mean", "min", "max"])
                a1.errorbar(st.index, st["mean"], yerr=[st["mean"] - st["min"], st["max"] - st["mean"]],
                            fmt=MARKERS[i % len(MARKERS)], color=color(opt), capsize=2, label=f"{opt} (seed mean, min–max)")
                if len(st) >= 2:
                    slope, icpt = np.polyfit(np.log(pos["N"].astype(float)), np.log(pos["gap"]), 1)
                    xs = np.geomspace(st.index.min(), st.index.max(), 30)
                    a1.plot(xs, np.exp(icpt) * xs**slope, color=color(opt), linewidth=1, label=f"{opt} fit: slope {slope:.2f}")
                if anchor is None or opt == "clion":
                    anchor = (float(st.index[0]), float(st["mean"].iloc[0]), float(st.index[-1]))
                term = g.groupby("N")["log10_term_min_tau"].mean()
                if term.notna().any():
                    a2.plot(term.index, term.values, MARKERS[i % len(MARKERS)] + "-", color=color(opt),
                            label=f"{opt}: τ = min τ of the run")
            if anchor is not None:
                x0, y0, x1 = anchor
                xs = np.geomspace(x0, x1, 20)
                a1.plot(xs, y0 * (xs / x0) ** -1.0, label="∝ 1/N (CLion's bound)", **REF)
            loglog(a1)
            a1.set(xlabel="training-set size N", ylabel="final test loss − train loss", title=f"{problem}: generalization gap")
            if a1.get_legend_handles_labels()[0]:
                a1.legend(loc="best")
            logx(a2)
            a2.set(xlabel="training-set size N", ylabel="log10 (1/(N·τ^T)) = −log10 N − T·log10 τ",
                   title="Lion's bound term (THEORY §7)")
            if a2.get_legend_handles_labels()[0]:
                a2.legend(loc="best")
            else:
                a2.text(0.5, 0.5, "τ not logged", transform=a2.transAxes, ha="center", color="0.45")
            paths.append(save(fig, out_dir, stem))
    return paths

