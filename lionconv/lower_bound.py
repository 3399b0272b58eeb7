"""Measurements on the lower-bound instance (THEORY §9), as pure functions of the run tables.

Per run (`run_table`): K(ε) = the first logged step with ‖∇f(x_k)‖₂ ≤ 2ε, censored at the
run's last step + 1 when it never gets there (K ≥ that, never dropped); the step the chain is
traversed (prog_1 = T, i.e. |x_T| > λ); the progress per step; ‖∇f‖₁/‖∇f‖₂ before and after the
traversal; and the sanity quantities (the smallest ‖∇f‖₂/2ε before the traversal, the largest
one-step growth of the support prog_0).

Across runs, per optimizer: `hitting_exponent` — OLS of log K on log(1/ε) with the seed
bootstrap of `fit_power_law` (the lower bound: 4, or the slope of T/p on the same grid, which
the floor in T and the σ² + 2116ε² in p bend slightly); `progress_ratio` — Σ prog_{1/4} /
Σ p·k over runs, each run stopped at its traversal (a stopping time) or its last step. Every
support growth needs a revealing draw, and by Wald's identity E[#reveals by a stopping time k]
= p·E[k], so the expected ratio is ≤ 1 for every zero-respecting method. `l1_l2_summary` —
the mean ℓ1/ℓ2 ratio before the traversal against √T.

    python scripts/lower_bound.py RUNS_DIR   (tables, exponents and the two figures)
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from lionconv import runio
from lionconv.analysis.fit import fit_power_law

HIT_FACTOR = 2.0
"""K(ε) is the first step with ‖∇f‖₂ ≤ HIT_FACTOR·ε (THEORY §9: > 2ε until the chain is traversed)."""

LOWER_BOUND_EXPONENT = 4.0
METRIC_COLUMNS = ["step", "grad_l2", "l1_l2", "prog_1_4", "prog_1", "prog_0"]


def hitting_step(steps, grad_l2, threshold: float, last_step: int) -> tuple[int, bool]:
    """(K, censored): K = the first of `steps` with grad_l2 ≤ threshold; if there is none,
    (last_step + 1, True) — the run only shows K > last_step."""
    steps, grad_l2 = np.asarray(steps), np.asarray(grad_l2, dtype=float)
    hit = np.flatnonzero(grad_l2 <= threshold)
    if len(hit):
        return int(steps[hit[0]]), False
    return int(last_step) + 1, True


def run_measurements(metrics: pd.DataFrame, constants: dict, steps_done: int) -> dict:
    """The per-run quantities of the module docstring from one run's metrics rows (sorted by
    step, every step or a grid) and its summary constants (T, p, epsilon)."""
    m = metrics.sort_values("step")
    T, p, eps = int(constants["T"]), float(constants["p"]), float(constants["epsilon"])
    K, censored = hitting_step(m["step"], m["grad_l2"], HIT_FACTOR * eps, steps_done - 1)
    traversed = np.flatnonzero(m["prog_1"].to_numpy() >= T)
    k_traversed = int(m["step"].iloc[traversed[0]]) if len(traversed) else None
    before = m if k_traversed is None else m[m["step"] < k_traversed]
    after = m.iloc[0:0] if k_traversed is None else m[m["step"] >= k_traversed]
    # progress per step: stopped at the first step where prog_{1/4} = T, else the last row
    full = np.flatnonzero(m["prog_1_4"].to_numpy() >= T)
    stop = m.iloc[full[0]] if len(full) else m.iloc[-1]
    k_stop = int(stop["step"])
    growth = m["prog_0"].diff().iloc[1:]
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


def run_table(runs: pd.DataFrame, load_metrics) -> pd.DataFrame:
    """One row per usable zero_chain run of `runs` (analysis.load.load_runs' table):
    optimizer, seed, run_dir and `run_measurements`; `load_metrics(run_dir, columns)` reads
    a run's metrics.parquet."""
    rows = []
    use = runs[(runs["problem"] == "zero_chain") & runs["usable"].astype(bool)]
    for _, run in use.iterrows():
        summary = runio.read_json(Path(run["run_dir"]) / "summary.json")
        metrics = load_metrics(run["run_dir"], columns=METRIC_COLUMNS)
        rows.append({"optimizer": run["optimizer"], "seed": run["seed"], "lr": run["lr"],
                     "schedule": run["schedule"], "run_dir": run["run_dir"],
                     **run_measurements(metrics, summary["constants"], summary["steps_done"])})
    return pd.DataFrame(rows)


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
    for (opt, schedule, lr), g in table.groupby(["optimizer", "schedule", "lr"], dropna=False):
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


def _cluster_bootstrap(values: pd.DataFrame, statistic, groups, n_boot: int, seed: int):
    """(estimate, lo, hi): a 95 % percentile bootstrap over whole seed groups of statistic(rows)."""
    estimate = statistic(values)
    labels = np.asarray(groups)
    uniq = np.unique(labels)
    if len(uniq) < 2 or n_boot <= 0:
        return estimate, math.nan, math.nan
    rng = np.random.default_rng(seed)
    index = {u: np.flatnonzero(labels == u) for u in uniq}
    stats = [statistic(values.iloc[np.concatenate([index[u] for u in rng.choice(uniq, len(uniq))])])
             for _ in range(n_boot)]
    lo, hi = np.quantile(stats, [0.025, 0.975])
    return estimate, float(lo), float(hi)


def progress_ratio(table: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per optimizer: Σ prog_{1/4} / Σ p·k over its runs (module docstring; expected ≤ 1),
    with a seed-bootstrap 95 % CI, and the mean per-run progress per step."""
    ratio = lambda g: float(g["progress"].sum() / (g["p"] * g["progress_steps"]).sum())  # noqa: E731
    rows = []
    for (opt, schedule, lr), g in table.groupby(["optimizer", "schedule", "lr"], dropna=False):
        est, lo, hi = _cluster_bootstrap(g, ratio, g["seed"], n_boot, seed)
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


def progress_curves(table: pd.DataFrame, load_metrics) -> pd.DataFrame:
    """Long table (optimizer, epsilon, p, T, seed, step, prog_1_4) of every run in `table`."""
    frames = []
    for _, run in table.iterrows():
        m = load_metrics(run["run_dir"], columns=["step", "prog_1_4"])
        frames.append(m.assign(optimizer=run["optimizer"], epsilon=run["epsilon"], p=run["p"],
                               T=run["T"], seed=run["seed"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ------------------------------------------------------------------------------------------------
# figures


def plot_hitting_times(table: pd.DataFrame, out: Path) -> Path:
    """K(ε) against 1/ε, log-log, one colour per optimizer (seed medians with min–max bars,
    censored runs hollow), with the lower bound's T/p line."""
    import matplotlib.pyplot as plt

    from lionconv.analysis.plots import OPT_COLORS, REF, STYLE

    out = Path(out)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for i, (opt, g) in enumerate(table.groupby("optimizer")):
            color = OPT_COLORS.get(opt, f"C{i + 4}")
            stats = g.groupby("inv_epsilon")["K"].agg(["median", "min", "max"])
            ax.errorbar(stats.index, stats["median"], fmt="o-", color=color, label=opt,
                        yerr=[stats["median"] - stats["min"], stats["max"] - stats["median"]],
                        capsize=2)
            cens = g[g["censored"]]
            ax.scatter(cens["inv_epsilon"], cens["K"], facecolors="none", edgecolors=color)
        grid = table.drop_duplicates("inv_epsilon").sort_values("inv_epsilon")
        ax.plot(grid["inv_epsilon"], grid["T_over_p"], label="T/p (lower bound)", **REF)
        ax.set(xscale="log", yscale="log", xlabel="1/ε", ylabel="K(ε): first step with ‖∇f‖₂ ≤ 2ε",
               title="Zero-chain instance (THEORY §9): steps to 2ε-stationarity")
        ax.legend()
        fig.savefig(out)
        plt.close(fig)
    return out


def plot_progress(curves: pd.DataFrame, out: Path) -> Path:
    """prog_{1/4}(x_k) against k, one panel per optimizer, median over seeds per ε, with the
    line min(p·k, T) of each ε (dotted); steps up to 2·max T/p."""
    import matplotlib.pyplot as plt

    from lionconv.analysis.plots import REF, STYLE

    out = Path(out)
    opts = sorted(curves["optimizer"].unique())
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(opts), figsize=(3.2 * len(opts), 3.0), sharey=True,
                                 squeeze=False)
        for ax, opt in zip(axes[0], opts):
            g = curves[curves["optimizer"] == opt]
            for j, (eps, h) in enumerate(sorted(g.groupby("epsilon"), reverse=True)):
                med = h.groupby("step")["prog_1_4"].median()
                ax.plot(med.index, med.to_numpy(), color=f"C{j}", label=f"ε={eps:.3g}")
                line = np.minimum(h["p"].iloc[0] * med.index.to_numpy(), h["T"].iloc[0])
                ax.plot(med.index, line, color=f"C{j}", linestyle=REF["linestyle"],
                        linewidth=REF["linewidth"])
            ax.set(xlabel="step k", title=opt, ylim=(0, None))
            ax.set_xlim(0, min(g["step"].max(), 2 * (g["T"] / g["p"]).max()))
        axes[0][0].set_ylabel("prog_{1/4}(x_k)  (dotted: p·k)")
        axes[0][0].legend()
        fig.savefig(out)
        plt.close(fig)
    return out


def measure(runs_dir, n_boot: int = 2000, seed: int = 0, figures_dir=None) -> dict:
    """Every table above for a runs folder (and the two figures into figures_dir)."""
    from lionconv.analysis.load import load_metrics, load_runs

    runs, _ = load_runs(runs_dir)
    table = run_table(runs, load_metrics)
    if table.empty:
        raise ValueError(f"no finished zero_chain runs under {runs_dir}")
    result = {"runs": table, "exponents": hitting_exponent(table, n_boot, seed),
              "progress": progress_ratio(table, n_boot, seed), "l1_l2": l1_l2_summary(table)}
    if figures_dir is not None:
        figures_dir = Path(figures_dir)
        figures_dir.mkdir(parents=True, exist_ok=True)
        result["figures"] = [plot_hitting_times(table, figures_dir / "lower_bound_K.png"),
                             plot_progress(progress_curves(table, load_metrics),
                                           figures_dir / "lower_bound_progress.png")]
    return result
