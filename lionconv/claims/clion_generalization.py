"""§7 generalization: gap = test − train loss against the training-set size N at a fixed T, each seed a
fresh draw of the training subset. At a fixed T both bounds are C/N — CLion's O(1/N) and Lion's and
SignSGD's O(1/(N·τ^T)) = C_T/N — so one rule for all three (theory): the slope of ln E[gap] on ln N
(the gap of the MEAN over the draws at each N; gaps ≤ 0 are kept in the means) has its whole CI ≤
−1 + `gap_tol`; the same for the 0-1 error gap (train − test accuracy, a bounded loss). A set of runs
with one that did not train (theory.did_train: final train loss ≥ TRAINED_LOSS_FRACTION of the
initial one, or ‖x_T − x_0‖₂ < TRAINED_MOVE_FRACTION of Lion's mean move at that N) is "n.a.".
Comparative claim (theory): gap(CLion) ≤ gap(Lion) at MATCHED training loss — for each (N, seed) the
run that ends at the lower train loss is read along its logged trajectory at the step where its train
loss first reaches the other run's final train loss (linear interpolation in the train loss between
logged steps); *yes* if the whole CI of the mean of gap(CLion) − gap(Lion) is ≤ 0. Context: log10 of
Lion's bound term 1/(N·τ^T) at τ = min τ of the run and at the median τ_k over all steps."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lionconv import theory
from lionconv.analysis.fit import fit_mean_power_law, stratified_mean_ci
from lionconv.analysis.groups import clion_variant, column, drop_index, finite, g3, num, set_text
from lionconv.analysis.load import LION_FAMILY
from lionconv.analysis.plots import color, figure_stem, legend, loglog, logx, MARKERS, plt, REF, save, STYLE, wide
from lionconv.analysis.verdict import Threshold, VerdictRow, fit_interval, judge, judge_fit, le

NAME = "clion_generalization"
THEORY = "§7"
PRESETS = ("clion_generalization", "clion_generalization_mnist1d")
THRESHOLDS = {
    "gap_tol": Threshold(0.1, "O(1/N) read as slope ≤ −0.9: over the presets' 1.5 decades of N a slope error of 0.1 "
                              "is a factor 1.4 in the gap, inside the constant of a bound"),
}
GAP_COLUMNS = (("test − train cross-entropy", "gap"), ("0-1 error gap (train − test accuracy)", "err_gap"))


def _trajectory(load_metrics, run_dir):
    """(step, train loss, gap, 0-1 error gap) along the logged steps, or None."""
    m = load_metrics(run_dir, ["step", "loss", "test_loss", "train_acc", "test_acc"])
    if m is None:
        return None
    m = m[m["loss"].notna() & m["test_loss"].notna()].sort_values("step")
    if m.empty:
        return None
    return (m["step"].to_numpy(float), m["loss"].to_numpy(float), (m["test_loss"] - m["loss"]).to_numpy(float),
            (m["train_acc"] - m["test_acc"]).to_numpy(float))


def at_train_loss(traj, target):
    """(step, gap, err_gap) where the trajectory's train loss first reaches `target` (≤), linearly
    interpolated in the train loss between the two logged steps around it; NaNs if it never does."""
    step, loss, gap, err = traj
    hit = np.flatnonzero(loss <= target)
    if len(hit) == 0:
        return math.nan, math.nan, math.nan
    i = int(hit[0])
    if i == 0 or loss[i - 1] == loss[i]:
        return step[i], gap[i], err[i]
    w = (loss[i - 1] - target) / (loss[i - 1] - loss[i])
    return tuple(float(a[i - 1] + w * (a[i] - a[i - 1])) for a in (step, gap, err))


def matched(traj_a, traj_b):
    """Both runs read at the same train loss = the higher of their final train losses: the run ending
    higher is read at its end, the other along its trajectory. (loss, step_a, gap_a, err_a, step_b, gap_b, err_b)."""
    target = max(traj_a[1][-1], traj_b[1][-1])
    a = at_train_loss(traj_a, target)
    b = at_train_loss(traj_b, target)
    return (target, *a, *b)


def table(data) -> pd.DataFrame:
    """Lion-family runs on a full training set (no replaced example), one row per run: N = n_train,
    gap = final test − train loss, err_gap = train − test accuracy, trained (theory.did_train with
    Lion's mean ‖x_T − x_0‖₂ at that problem and N as the reference), min τ, median τ_k over all
    steps, log10 of Lion's bound term; CLion rows also hold the matched-loss pair with the Lion run of
    the same problem, N, T and seed (matched_loss, gap_* at that loss for both)."""
    cols = ["problem", "optimizer", "base_optimizer", "N", "seed", "K", "train_loss", "test_loss", "gap", "err_gap",
            "initial_loss", "moved", "trained", "sign_fraction", "min_tau", "median_tau", "log10_term_min_tau",
            "log10_term_median_tau", "matched_loss", "matched_step", "matched_gap", "matched_err_gap",
            "lion_matched_step", "lion_matched_gap", "lion_matched_err_gap", "run", "figure"]
    runs = data.runs
    if runs.empty or "final_test_loss" not in runs or "cfg.problem.n_train" not in runs:
        return pd.DataFrame(columns=cols)
    cand = runs[runs["optimizer"].isin(LION_FAMILY) & runs["final_test_loss"].notna() & runs["final_loss"].notna()
                & runs["cfg.problem.n_train"].notna() & drop_index(runs).isna()]
    cand = cand.assign(_variant=clion_variant(cand), moved_=column(cand, "distance_from_start"),
                       N_=cand["cfg.problem.n_train"].astype(float))
    lion = cand[cand["optimizer"] == "lion"]
    ref_move = lion.groupby(["problem", "N_", "K"])["moved_"].mean()
    lion_of = {(r.problem, r.N_, r.K, r.seed): r.run_dir for r in lion.itertuples()}
    out = []
    for _, r in cand.iterrows():
        n, K = r["N_"], float(r["K"])
        ref = ref_move.get((r["problem"], n, r["K"]), math.nan) if r["optimizer"] != "lion" else None
        trained = theory.did_train(r.get("initial_loss", math.nan), r["final_loss"], r["moved_"], ref)
        med = r.get("tau_median_all", math.nan)
        term = lambda tau: theory.lion_generalization_log10_term(n, K, tau) if finite(tau) and tau > 0 else math.nan  # noqa: E731
        row = dict(problem=r["problem"], optimizer=r["_variant"], base_optimizer=r["optimizer"], N=n, seed=r["seed"],
                   K=K, train_loss=r["final_loss"], test_loss=r["final_test_loss"],
                   gap=r["final_test_loss"] - r["final_loss"],
                   err_gap=r.get("final_train_acc", math.nan) - r.get("final_test_acc", math.nan),
                   initial_loss=r.get("initial_loss", math.nan), moved=r["moved_"], trained=bool(trained),
                   sign_fraction=r.get("mean_sign_fraction", math.nan), min_tau=r["min_tau"], median_tau=med,
                   log10_term_min_tau=term(r["min_tau"]), log10_term_median_tau=term(med), run=r["run"],
                   figure=figure_stem(NAME, problem=r["problem"]))
        partner = lion_of.get((r["problem"], n, r["K"], r["seed"]))
        if r["optimizer"] == "clion" and partner is not None:
            a, b = _trajectory(data.metrics, r["run_dir"]), _trajectory(data.metrics, partner)
            if a is not None and b is not None:
                m = matched(a, b)
                row.update(matched_loss=m[0], matched_step=m[1], matched_gap=m[2], matched_err_gap=m[3],
                           lion_matched_step=m[4], lion_matched_gap=m[5], lion_matched_err_gap=m[6])
        out.append(row)
    return pd.DataFrame(out, columns=cols).sort_values(["problem", "optimizer", "N", "seed"]).reset_index(drop=True)


def _slope_rows(g, scope, figure, n_boot, seed) -> list:
    tol = float(THRESHOLDS["gap_tol"])
    rule = f"slope of ln E[gap] on ln N ≤ −1 + {THRESHOLDS['gap_tol'].value} (C/N at fixed T)"
    progress = (f"final train loss {g3(g['train_loss'].min())}–{g3(g['train_loss'].max())}"
                + (f", sign-branch fraction {g3(g['sign_fraction'].mean())}" if g["sign_fraction"].notna().any() else ""))
    untrained = g[~g["trained"].astype(bool)]
    rows = []
    for label, col in GAP_COLUMNS:
        claim = f"§7 generalization: E[gap] ∝ N^s ({label})"
        per_n = g.groupby("N")[col].agg(["mean", "count"])
        means = "; ".join(f"N={num(n)}: {g3(v['mean'])} ({int(v['count'])} draws)" for n, v in per_n.iterrows())
        evidence = f"{progress}; gap means {means}; seeds {set_text(g['seed'])}; {figure}"
        if len(untrained):
            rows.append(VerdictRow(claim, "theory", scope, "n.a.: " + rule, math.nan, holds="n.a.",
                                   evidence=(f"{len(untrained)} of {len(g)} runs did not train (theory.did_train: "
                                             f"loss < {theory.TRAINED_LOSS_FRACTION}·initial and move ≥ "
                                             f"{theory.TRAINED_MOVE_FRACTION}·Lion's) at N ∈ "
                                             f"{set_text(untrained['N'])}; {evidence}"), n=len(g)))
            continue
        fit = fit_mean_power_law(g["N"], g[col], n_boot, seed)
        if fit is None:
            rows.append(VerdictRow(claim, "theory", scope, rule, math.nan, holds="unclear",
                                   evidence=f"a mean gap ≤ 0 (or < 2 N): no power law to fit; {evidence}", n=len(g)))
            continue
        rows.append(VerdictRow(claim, "theory", scope, rule, fit.slope, fit.ci_low, fit.ci_high, fit_interval(fit),
                               judge_fit(fit, le(-1.0 + tol)), evidence, fit.n))
    return rows


def _matched_rows(t, problem, figure, n_boot, seed) -> list:
    """gap(CLion) − gap(Lion) at matched train loss, mean over (N, seed) with a within-N bootstrap."""
    rows = []
    for opt, c in t[t["base_optimizer"] == "clion"].groupby("optimizer", sort=True):
        lion_ok = t[(t["base_optimizer"] == "lion") & t["trained"]].set_index(["N", "seed"]).index
        c = c[c["trained"] & c.set_index(["N", "seed"]).index.isin(lion_ok)]
        for label, a, b in (("cross-entropy gap", "matched_gap", "lion_matched_gap"),
                            ("0-1 error gap", "matched_err_gap", "lion_matched_err_gap")):
            d = (c[a] - c[b]).to_numpy(float)
            ok = np.isfinite(d)
            if not ok.any():
                continue
            mean, lo, hi, G = stratified_mean_ci(d[ok], c["N"].to_numpy()[ok], n_boot, seed)
            interval = f"seed-bootstrap ({G} seeds)" if G >= 4 else f"mean only ({G} seeds)"
            per_n = pd.DataFrame({"N": c["N"][ok], "c": c[a][ok], "l": c[b][ok], "loss": c["matched_loss"][ok]})
            per_n = per_n.groupby("N").mean()
            rows.append(VerdictRow(
                f"§7 CLion generalizes better than Lion at matched train loss ({label})", "theory",
                f"{opt} vs lion · {problem}",
                "mean over (N, seed) of gap(CLion) − gap(Lion) ≤ 0, runs paired at equal train loss along training",
                mean, lo, hi, interval, judge(lo, hi, le(0.0), interval),
                evidence=("pairs (N, seed) at train loss = the higher final one; per N mean gap CLion vs Lion "
                          "(at matched loss): " + "; ".join(f"N={num(n)}: {g3(r.c)} vs {g3(r.l)} (loss {g3(r.loss)})"
                                                             for n, r in per_n.iterrows())
                          + f"; {int(ok.sum())} pairs; {figure}"), n=int(ok.sum())))
    return rows


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    for problem, t in table.groupby("problem", sort=True):
        figure = f"figures/{t['figure'].iloc[0]}.png; clion_generalization.csv"
        for opt, g in t.groupby("optimizer", sort=True):
            scope = f"{opt} · {problem} · T={set_text(g['K'])}"
            rows.extend(_slope_rows(g, scope, figure, n_boot, seed))
            if g["base_optimizer"].iloc[0] in ("lion", "signsgd") and g["log10_term_min_tau"].notna().any():
                per_n = g.groupby("N")[["log10_term_min_tau", "log10_term_median_tau", "min_tau", "median_tau"]].mean()
                rows.append(VerdictRow(
                    "§7 Lion's bound term log10(1/(N·τ^T))", "context", scope,
                    "reported: vacuous when τ ≪ 1 (the paper's point)", float(per_n["log10_term_min_tau"].min()),
                    evidence=("measured = smallest over N at τ = min τ of the run; per N (at min τ, at median τ_k over "
                              "all steps): " + "; ".join(f"N={num(n)}: {g3(r.log10_term_min_tau)}, "
                                                         f"{g3(r.log10_term_median_tau)} (τ_min {g3(r.min_tau)}, "
                                                         f"median τ_k {g3(r.median_tau)})" for n, r in per_n.iterrows())
                              + f"; {figure}"), n=len(g)))
        rows.extend(_matched_rows(t, problem, figure, n_boot, seed))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """E[gap] vs N per optimizer (log-log: seed mean with min–max, fitted slope, a 1/N guide anchored at
    each curve's own first point); the matched-loss gaps CLion vs Lion per N."""
    paths = []
    for stem, t in table.groupby("figure", sort=True):
        problem = t["problem"].iloc[0]
        with plt.rc_context(STYLE):
            fig, axes = wide(3, max_cols=3)
            a1, a2, a3 = axes[0]
            for ax, col, ylabel in ((a1, "gap", "E[test − train cross-entropy]"),
                                    (a2, "err_gap", "E[train − test accuracy]")):
                for i, (opt, g) in enumerate(t.groupby("optimizer", sort=True)):
                    st = g.groupby("N")[col].agg(["mean", "min", "max"])
                    pos = st[st["mean"] > 0]
                    if pos.empty:
                        continue
                    ax.errorbar(pos.index, pos["mean"], yerr=[pos["mean"] - pos["min"].clip(lower=pos["mean"] * 1e-3),
                                                              pos["max"] - pos["mean"]],
                                fmt=MARKERS[i % len(MARKERS)], color=color(opt), capsize=2)
                    fit = fit_mean_power_law(g["N"], g[col], n_boot=0)
                    xs = np.geomspace(st.index.min(), st.index.max(), 20)
                    if fit is not None:
                        ax.plot(xs, fit.predict(xs), color=color(opt), linewidth=1, label=f"{opt}: slope {fit.slope:.2f}")
                    x0, y0 = float(pos.index[0]), float(pos["mean"].iloc[0])
                    ax.plot(xs, y0 * (xs / x0) ** -1.0, **{**REF, "color": color(opt)})
                loglog(ax)
                ax.set(xlabel="training-set size N", ylabel=ylabel, title=f"{problem}: {ylabel} (dotted: ∝ 1/N)")
                if ax.get_legend_handles_labels()[0]:
                    legend(ax, "no data", loc="best")
            m = t[t["base_optimizer"] == "clion"].groupby("N")[["matched_gap", "lion_matched_gap"]].mean()
            if not m.empty:
                a3.plot(m.index, m["matched_gap"], "o-", color=color("clion"), label="CLion")
                a3.plot(m.index, m["lion_matched_gap"], "s-", color=color("lion"), label="Lion")
                legend(a3, "no data", loc="best")
            logx(a3)
            a3.set(xlabel="training-set size N", ylabel="gap at matched train loss", title="CLion vs Lion, matched loss")
            paths.append(save(fig, out_dir, stem))
    return paths
