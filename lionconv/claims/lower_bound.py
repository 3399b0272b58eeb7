"""Lower bound on the zero-chain instance (THEORY §9): K(ε), the first step with ‖∇f(x_k)‖₂ ≤ 2ε,
against 1/ε for Lion, SignSGD, SGD (and CLion at paper scale), beside Arjevani et al.'s bound.
What the bound says on this instance: every support growth of a zero-respecting method needs a
revealing draw (probability p), the chain needs T of them, and ‖∇f‖₂ > 2ε until it is traversed;
by Wald's identity E[K(ε)] ≥ E[traversal step] ≥ T/p, for ANY such method, at every ε. Theory row,
per optimizer: the pooled ratio ΣK/Σ(T/p) over its runs ≥ 1 with the whole seed-bootstrap CI (no:
the whole CI below 1; a censored run only shows K ≥ its last step + 1, so with censored runs a
"no" is capped at "unclear"). The fitted exponent of K on 1/ε is context, not a verdict: the bound
is on the level of K, not on its slope. T/p ∝ ε^-4 only asymptotically (⌊·⌋ in T, σ² + 2116ε² in
p; T/p's own slope over the grid is reported beside 4), and a method far above the line (SGD with
lr = 1 is movement-limited at large ε) can show any slope over a finite grid, below 4 too, while
it comes down to the line. A slope CI wholly below 4 at small ε thus means either a pre-asymptotic
grid (compare with T/p's slope and with K/(T/p) → 1), or, if K already sits at T/p, a bound that
would break at smaller ε — which only a method that is not zero-respecting (or a leaking oracle)
can do, and which the theory row and the sanity rows catch at the ε measured. The paper's
"Lion matches the lower bound in K" is the upper bound's √d·K^-1/4 against this Ω(K^-1/4); this
instance shows the lower side: Lion (lr = 1, constant β) is reveal-limited, K/(T/p) ≈ 1. Sanity
rows (exact, over every run of an optimizer): ‖∇f‖₂/2ε > 1 at every logged step before the
traversal; the support prog_0 grows by ≤ 1 coordinate per step; the progress per step
Σprog_{1/4}/Σp·k ≤ 1 (each run stopped at its traversal or last step, a stopping time; Wald: its
expectation is ≤ 1) with the whole seed-bootstrap CI. Context: ‖∇f‖₁/‖∇f‖₂ before the traversal
beside √T and √d — the gradient lives on the chain's frontier (≈ 2 non-zero coordinates), so the
ratio is O(1), not Θ(√d): on this worst case the √d of the ℓ1 upper bound (via ‖∇f‖₁ ≤ √d‖∇f‖₂)
is loose by ≈ √d/1.4, and the ℓ1 rate gains nothing over the ℓ2 lower bound there."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from lionconv import runio
from lionconv.analysis.fit import fit_power_law
from lionconv.analysis.groups import num, set_text
from lionconv.analysis.plots import figure_stem, legend, loglog, MARKERS, OPT_COLORS, plt, REF, save, STYLE
from lionconv.analysis.verdict import EXACT, Threshold, VerdictRow, judge, judge_exact, le

NAME = "lower_bound"
THEORY = "§9"
PRESETS = ("lower_bound",)
THRESHOLDS = {
    "hit_factor": Threshold(2.0, "THEORY §9: ‖∇f‖₂ > 2ε until the chain is traversed, so K(ε) is the first "
                                 "step with ‖∇f‖₂ ≤ 2ε"),
    "level": Threshold(1.0, "Wald's identity: E[K] ≥ E[traversal step] ≥ T/p exactly for every "
                            "zero-respecting method, no slack needed"),
    "progress": Threshold(1.0, "Wald's identity: E[prog_{1/4} at a stopping time k] ≤ p·E[k] exactly, no "
                               "slack needed"),
    "support_growth": Threshold(1.0, "zero-respecting: one revealing draw adds at most one coordinate"),
}
HIT_FACTOR = float(THRESHOLDS["hit_factor"])
LOWER_BOUND_EXPONENT = 4.0
METRIC_COLUMNS = ["step", "grad_l2", "l1_l2", "prog_1_4", "prog_1", "prog_0"]
GROUP = ["optimizer", "schedule", "lr"]


# ------------------------------------------------------------------------------------------------
# per run


def hitting_step(steps, grad_l2, threshold: float, last_step: int) -> tuple[int, bool]:
    """(K, censored): K = the first of `steps` with grad_l2 ≤ threshold; if there is none,
    (last_step + 1, True) — the run only shows K > last_step."""
    steps, grad_l2 = np.asarray(steps), np.asarray(grad_l2, dtype=float)
    hit = np.flatnonzero(grad_l2 <= threshold)
    if len(hit):
        return int(steps[hit[0]]), False
    return int(last_step) + 1, True


def run_measurements(metrics: pd.DataFrame, constants: dict, steps_done: int) -> dict:
    """One run's quantities from its metrics rows (sorted by step) and summary constants (T, p,
    epsilon): K and censoring; the traversal step (first prog_1 = T); the progress per step
    (stopped at the first prog_{1/4} = T, else the last row); the smallest ‖∇f‖₂/2ε before the
    traversal; the largest one-step growth of prog_0; mean ℓ1/ℓ2 before and after the traversal."""
    m = metrics.sort_values("step")
    T, p, eps = int(constants["T"]), float(constants["p"]), float(constants["epsilon"])
    K, censored = hitting_step(m["step"], m["grad_l2"], HIT_FACTOR * eps, steps_done - 1)
    traversed = np.flatnonzero(m["prog_1"].to_numpy() >= T)
    k_traversed = int(m["step"].iloc[traversed[0]]) if len(traversed) else None
    before = m if k_traversed is None else m[m["step"] < k_traversed]
    after = m.iloc[0:0] if k_traversed is None else m[m["step"] >= k_traversed]
    full = np.flatnonzero(m["prog_1_4"].to_numpy() >= T)
    stop = m.iloc[full[0]] if len(full) else m.iloc[-1]
    k_stop = int(stop["step"])
    # growth per step: the support's increase divided by the steps between two logged rows
    growth = (m["prog_0"].diff() / m["step"].diff()).iloc[1:]
    return {"T": T, "p": p, "epsilon": eps, "inv_epsilon": 1.0 / eps, "T_over_p": T / p,
            "K": K, "censored": censored, "K_over_T_over_p": K / (T / p),
            "traversed_step": math.nan if k_traversed is None else k_traversed,
            "progress": float(stop["prog_1_4"]), "progress_steps": k_stop,
            "progress_per_step": float(stop["prog_1_4"]) / k_stop if k_stop else math.nan,
            "min_grad_over_2eps_before": float((before["grad_l2"] / (HIT_FACTOR * eps)).min())
            if len(before) else math.nan,
            "max_support_growth": float(growth.max()) if len(growth) else 0.0,
            "l1_l2_before": float(before["l1_l2"].mean()) if len(before) else math.nan,
            "l1_l2_after": float(after["l1_l2"].mean()) if len(after) else math.nan,
            "sqrt_T": math.sqrt(T)}


def table(data) -> pd.DataFrame:
    """One row per usable zero_chain run: optimizer, seed, lr, schedule, d, run_dir, scope, figure
    and `run_measurements`."""
    cols = ["scope", "figure", "run", "run_dir", "optimizer", "schedule", "lr", "seed", "d"]
    runs = data.runs
    if runs.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for _, run in runs[runs["problem"] == "zero_chain"].iterrows():
        summary = runio.read_json(Path(run["run_dir"]) / "summary.json")
        metrics = data.metrics(run["run_dir"], columns=METRIC_COLUMNS)
        if metrics is None or metrics.empty:
            continue
        rows.append({"scope": f"zero_chain {run['optimizer']} lr={num(run['lr'])} {run['schedule']}",
                     "figure": figure_stem(NAME, plot="K"), "run": run.get("run", Path(run["run_dir"]).name),
                     "run_dir": run["run_dir"], "optimizer": run["optimizer"], "schedule": run["schedule"],
                     "lr": run["lr"], "seed": run["seed"], "d": run["d"],
                     **run_measurements(metrics, summary["constants"], summary["steps_done"])})
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)


# ------------------------------------------------------------------------------------------------
# across runs


def _censoring_side(inv_eps: np.ndarray, censored: np.ndarray) -> str:
    """Which way censoring can move the OLS slope of log K on log(1/ε). The slope is
    Σ w_i·log K_i with w_i ∝ (log x_i − mean); a censored K_i is only a lower bound, so raising
    it raises the slope where w_i > 0 and lowers it where w_i < 0."""
    if not censored.any():
        return "none"
    w = np.log(inv_eps) - np.log(inv_eps).mean()
    if (w[censored] >= 0).all():
        return "up"      # the true slope is ≥ the fitted one
    if (w[censored] <= 0).all():
        return "down"
    return "both"


def hitting_exponent(table: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per optimizer (and schedule, lr): the slope of log K(ε) on log(1/ε) with its seed-bootstrap
    CI, beside the slope of log(T/p) on the same grid and the lower bound's 4. Censored runs
    enter at their censoring step (a lower bound on K); the CI is then opened on the side the
    censoring can move the slope (ci_low → −inf and/or ci_high → +inf), never narrowed."""
    rows = []
    for (opt, schedule, lr), g in table.groupby(GROUP, dropna=False):
        if g["inv_epsilon"].nunique() < 2:
            continue
        fit = fit_power_law(g["inv_epsilon"], g["K"], groups=g["seed"], n_boot=n_boot, seed=seed)
        grid = g.drop_duplicates("inv_epsilon")
        ref = fit_power_law(grid["inv_epsilon"], grid["T_over_p"], n_boot=0)
        side = _censoring_side(g["inv_epsilon"].to_numpy(), g["censored"].to_numpy(bool))
        lo = -math.inf if side in ("down", "both") else fit.ci_low
        hi = math.inf if side in ("up", "both") else fit.ci_high
        rows.append({"optimizer": opt, "schedule": schedule, "lr": lr, "slope": fit.slope,
                     "ci_low": lo, "ci_high": hi, "method": fit.method, "n": fit.n,
                     "n_seeds": fit.n_groups, "n_censored": int(g["censored"].sum()),
                     "censoring": side, "T_over_p_slope": ref.slope,
                     "lower_bound_slope": LOWER_BOUND_EXPONENT,
                     "K_over_T_over_p": float(g["K_over_T_over_p"].mean())})
    return pd.DataFrame(rows)


def ratio_of_sums(num, den, groups, n_boot: int, seed: int) -> tuple[float, float, float]:
    """(Σnum/Σden, lo, hi): the 95 % percentile bootstrap over whole seed groups (a resample
    draws G seeds with replacement: multinomial counts times the per-seed sums, vectorised);
    lo = hi = nan with fewer than 2 seeds or n_boot = 0."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    _, index = np.unique(np.asarray(groups), return_inverse=True)
    G = int(index.max()) + 1 if len(index) else 0
    estimate = float(num.sum() / den.sum())
    if G < 2 or n_boot <= 0:
        return estimate, math.nan, math.nan
    num_g, den_g = np.bincount(index, num, G), np.bincount(index, den, G)
    counts = np.random.default_rng(seed).multinomial(G, np.full(G, 1.0 / G), size=n_boot)
    lo, hi = np.quantile(counts @ num_g / (counts @ den_g), [0.025, 0.975])
    return estimate, float(lo), float(hi)


def _progress_over_p(g: pd.DataFrame, n_boot: int, seed: int):
    return ratio_of_sums(g["progress"], g["p"] * g["progress_steps"], g["seed"], n_boot, seed)


def _K_over_T_over_p(g: pd.DataFrame, n_boot: int, seed: int):
    return ratio_of_sums(g["K"], g["T_over_p"], g["seed"], n_boot, seed)


def progress_ratio(table: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per optimizer: Σ prog_{1/4} / Σ p·k over its runs (expected ≤ 1) with a seed-bootstrap
    95 % CI, the largest support growth and the smallest ‖∇f‖₂/2ε before the traversal."""
    rows = []
    for (opt, schedule, lr), g in table.groupby(GROUP, dropna=False):
        est, lo, hi = _progress_over_p(g, n_boot, seed)
        rows.append({"optimizer": opt, "schedule": schedule, "lr": lr, "progress_over_p": est,
                     "ci_low": lo, "ci_high": hi, "n": len(g),
                     "max_support_growth": float(g["max_support_growth"].max()),
                     "min_grad_over_2eps_before": float(g["min_grad_over_2eps_before"].min())})
    return pd.DataFrame(rows)


def l1_l2_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer and T: mean ‖∇f‖₁/‖∇f‖₂ before and after the traversal, beside √T (what
    it would be for a dense gradient of T equal entries)."""
    return (table.groupby(["optimizer", "T"], as_index=False)
            .agg(l1_l2_before=("l1_l2_before", "mean"), l1_l2_before_max=("l1_l2_before", "max"),
                 l1_l2_after=("l1_l2_after", "mean"), sqrt_T=("sqrt_T", "first"), runs=("K", "size")))


def _interval(g: pd.DataFrame) -> str:
    seeds = g["seed"].nunique()
    return f"seed-bootstrap ({seeds} seed{'s' if seeds != 1 else ''})"


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    if table.empty:
        return rows
    exponents = hitting_exponent(table, n_boot, seed)
    exponents = exponents.set_index(GROUP) if not exponents.empty else None
    for key, g in table.groupby(GROUP, dropna=False, sort=True):
        scope, n = g["scope"].iloc[0], len(g)
        where = (f"{n} runs, ε ∈ {set_text(g['epsilon'])}, T ∈ {set_text(g['T'])}, seeds {set_text(g['seed'])}; "
                 f"figures/{g['figure'].iloc[0]}.png")
        per_eps = "; ".join(f"ε={num(e)}: {h['K_over_T_over_p'].mean():.3g}"
                            for e, h in g.groupby("epsilon", sort=False))
        # theory: the level E[K] ≥ T/p
        est, lo, hi = _K_over_T_over_p(g, n_boot, seed)
        holds = judge(lo, hi, (float(THRESHOLDS["level"]), math.inf), _interval(g))
        n_cens = int(g["censored"].sum())
        if n_cens and holds == "no":
            holds = "unclear"   # a censored K is only a lower bound: it cannot show K < T/p
        rows.append(VerdictRow(
            "lower bound: ΣK(ε)/Σ(T/p) ≥ 1", "theory", scope,
            "E[K(ε)] ≥ T/p for every zero-respecting method (Wald; THEORY §9)", est, lo, hi, _interval(g),
            holds, f"mean K/(T/p) per ε: {per_eps}; {n_cens} censored; " + where, n))
        # sanity: exact invariants
        grad = float(g["min_grad_over_2eps_before"].min())
        if not math.isnan(grad):
            rows.append(VerdictRow("‖∇f‖₂ > 2ε until the chain is traversed", "sanity", scope,
                                   "min ‖∇f‖₂/2ε over logged steps before the traversal > 1 (THEORY §9)",
                                   grad, holds=judge_exact(grad, (1.0 + 1e-12, math.inf)),
                                   interval=EXACT, evidence=where, n=n))
        growth = float(g["max_support_growth"].max())
        rows.append(VerdictRow("support grows ≤ 1 coordinate per step", "sanity", scope,
                               "max over steps of Δprog_0 ≤ 1 (zero-respecting, THEORY §9)", growth,
                               holds=judge_exact(growth, le(float(THRESHOLDS["support_growth"]))),
                               interval=EXACT, evidence=where, n=n))
        est, lo, hi = _progress_over_p(g, n_boot, seed)
        rows.append(VerdictRow("progress per step ≤ p: Σprog_{1/4}/Σp·k", "sanity", scope,
                               "≤ 1 (Wald, each run stopped at its traversal)", est, lo, hi, _interval(g),
                               judge(lo, hi, le(float(THRESHOLDS["progress"])), _interval(g)),
                               "mean per-run progress per step / p: "
                               f"{(g['progress_per_step'] / g['p']).mean():.3g}; " + where, n))
        # context: the exponent, ℓ1/ℓ2
        if exponents is not None and key in exponents.index:
            e = exponents.loc[key]
            rows.append(VerdictRow(
                "K(ε) ∝ (1/ε)^a", "context", scope,
                f"lower bound: a = 4 asymptotically; T/p on this grid: {e['T_over_p_slope']:.3g}",
                float(e["slope"]), float(e["ci_low"]), float(e["ci_high"]),
                f"{e['method']} ({int(e['n_seeds'])} seeds)", "n.a.",
                f"K/(T/p) mean {e['K_over_T_over_p']:.3g}; censoring: {e['censoring']} "
                f"({int(e['n_censored'])} runs); a slope below 4 is no violation while K ≥ T/p "
                "(module docstring); " + where, int(e["n"])))
        ratio = float(g["l1_l2_before"].mean())
        if not math.isnan(ratio):
            d = float(g["d"].max())
            rows.append(VerdictRow(
                "‖∇f‖₁/‖∇f‖₂ before the traversal", "context", scope,
                "none; O(1) on the chain's frontier, vs √T ≤ √d for a dense gradient (THEORY §9)", ratio,
                float(g["l1_l2_before"].min()), float(g["l1_l2_before"].max()),
                f"min–max over {n} runs", "n.a.",
                f"√T ∈ {set_text(np.round(g['sqrt_T'], 2))}, √d up to {math.sqrt(d):.3g}; after the traversal "
                f"{g['l1_l2_after'].mean():.3g}; the √d of the ℓ1 upper bound is loose here by ≈ "
                f"{math.sqrt(d) / ratio:.3g}; " + where, n))
    return rows


# ------------------------------------------------------------------------------------------------
# figures


def progress_curves(table: pd.DataFrame, load_metrics) -> pd.DataFrame:
    """Long table (optimizer, epsilon, p, T, seed, step, prog_1_4) of every run in `table`."""
    frames = []
    for _, run in table.iterrows():
        m = load_metrics(run["run_dir"], columns=["step", "prog_1_4"])
        if m is not None:
            frames.append(m.assign(optimizer=run["optimizer"], epsilon=run["epsilon"], p=run["p"],
                                   T=run["T"], seed=run["seed"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_hitting_times(table: pd.DataFrame, out_dir: Path, stem: str) -> Path:
    """K(ε) against 1/ε, log-log, one colour per optimizer (seed medians with min–max bars,
    censored runs hollow), with the lower bound's T/p line."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for i, (opt, g) in enumerate(table.groupby("optimizer")):
            color = OPT_COLORS.get(opt, f"C{i + 4}")
            stats = g.groupby("inv_epsilon")["K"].agg(["median", "min", "max"])
            # markers shrink per optimizer so identical curves (Lion and SignSGD here) stay visible
            ax.errorbar(stats.index, stats["median"], fmt=f"{MARKERS[i % len(MARKERS)]}-", color=color,
                        label=opt, markersize=8 - 2 * (i % 3), capsize=2,
                        yerr=[stats["median"] - stats["min"], stats["max"] - stats["median"]])
            cens = g[g["censored"].astype(bool)]
            ax.scatter(cens["inv_epsilon"], cens["K"], facecolors="none", edgecolors=color)
        grid = table.drop_duplicates("inv_epsilon").sort_values("inv_epsilon")
        ax.plot(grid["inv_epsilon"], grid["T_over_p"], label="T/p (lower bound)", **REF)
        loglog(ax)
        ax.set(xlabel="1/ε", ylabel="K(ε): first step with ‖∇f‖₂ ≤ 2ε",
               title="Zero-chain instance (THEORY §9): steps to 2ε-stationarity")
        legend(ax, "no data")
        return save(fig, Path(out_dir), stem)


def plot_progress(curves: pd.DataFrame, out_dir: Path, stem: str) -> Path:
    """prog_{1/4}(x_k) against k, one panel per optimizer, median over seeds per ε, with the
    line min(p·k, T) of each ε (dotted); steps up to 2·max T/p."""
    opts = sorted(curves["optimizer"].unique())
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(opts), figsize=(3.2 * len(opts), 3.0), sharey=True, squeeze=False)
        for ax, opt in zip(axes[0], opts):
            g = curves[curves["optimizer"] == opt]
            for j, (eps, h) in enumerate(sorted(g.groupby("epsilon"), reverse=True)):
                med = h.groupby("step")["prog_1_4"].median()
                ax.plot(med.index, med.to_numpy(), color=f"C{j}", label=f"ε={eps:.3g}")
                line = np.minimum(h["p"].iloc[0] * med.index.to_numpy(), h["T"].iloc[0])
                ax.plot(med.index, line, color=f"C{j}", linestyle=REF["linestyle"], linewidth=REF["linewidth"])
            ax.set(xlabel="step k", title=opt, ylim=(0, None))
            ax.set_xlim(0, min(g["step"].max(), 2 * (g["T"] / g["p"]).max()))
        axes[0][0].set_ylabel("prog_{1/4}(x_k)  (dotted: p·k)")
        legend(axes[0][0], "no data")
        return save(fig, Path(out_dir), stem)


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """K(ε) vs 1/ε with the T/p line (table["figure"]), and progress vs steps with p·k."""
    if table.empty:
        return []
    paths = [plot_hitting_times(table, out_dir, table["figure"].iloc[0])]
    curves = progress_curves(table, data.metrics)
    if not curves.empty:
        paths.append(plot_progress(curves, out_dir, figure_stem(NAME, plot="progress")))
    return paths
