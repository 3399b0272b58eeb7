"""§7 stability: E‖x_T − x'_T‖₂ for neighbouring training sets (one example replaced,
problem.replace_index, same seed and minibatch order) against N. Each run with a replaced example is
paired with the full-set run of the same seed, N and optimizer; ‖x_t − x'_t‖₂ comes from their
snapshots. CLion (theory): the slope of ln E‖x_T − x'_T‖₂ on ln N (the mean over the seeds at each N)
has its whole CI ≤ −1 + `div_tol` (∝ 1/N). Lion and SignSGD (context): the slope is reported — one
changed example can flip sign(c_j) wherever |c_j| is below the perturbation, so their divergence need
not shrink with N. CLion vs Lion (theory): *yes* if CLion's final distance ≤ Lion's for every (N,
seed), *no* if larger for every one, *unclear* otherwise, and at most *unclear* with < 5 seeds. A pair
whose full-set run did not train (theory.did_train) makes its optimizer's rows "n.a.". The twin run
calibrates its own ν (nu_quantile): the calibration is part of what CLion does on S'."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from lionconv import theory
from lionconv.analysis.fit import fit_mean_power_law
from lionconv.analysis.groups import clion_variant, column, drop_index, finite, g3, identity_groups, num, set_text
from lionconv.analysis.plots import color, figure_stem, legend, loglog, MARKERS, plt, REF, save, STYLE, wide
from lionconv.analysis.verdict import MIN_SEEDS, Threshold, VerdictRow, fit_interval, judge_fit, le

NAME = "stability"
THEORY = "§7"
PRESETS = ("clion_generalization", "clion_generalization_mnist1d")
THRESHOLDS = {
    "div_tol": Threshold(0.1, "∝ 1/N read as slope ≤ −0.9: over 1.5 decades of N a slope error of 0.1 is a factor "
                              "1.4 in the distance, inside the constant of a bound (the CLion/Lion ratio has no tolerance)"),
}


def _load_snapshots(run_dir):
    """(steps, X) from snapshots.npz, or None if absent or unreadable."""
    path = Path(run_dir) / "snapshots.npz"
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            return np.asarray(z["step"]), np.asarray(z["x"], dtype=np.float64)
    except Exception:  # a truncated npz raises several types
        return None


def pair_table(runs: pd.DataFrame) -> pd.DataFrame:
    """THEORY §7 stability probe: each run with drop_index set is paired with the run that is the same
    in every other respect (same seed, N, optimizer) but trains on the full set; one row per pair
    and common logged step: ‖x_t − x'_t‖₂ from the two snapshots.npz, and moved = ‖x_t − x_0‖₂ of
    the full-set run (how far training went: a method that hardly moves hardly diverges)."""
    cols = ["problem", "optimizer", "N", "seed", "drop_index", "step", "distance", "moved", "run", "run_changed",
            "initial_loss", "final_loss", "min_tau", "median_tau", "K"]
    if runs.empty or not {"cfg.problem.drop_index", "cfg.problem.replace_index"} & set(runs.columns):
        return pd.DataFrame(columns=cols)
    runs = runs.assign(_drop=drop_index(runs), _variant=clion_variant(runs))
    out = []
    for g in identity_groups(runs, free={"cfg.problem.drop_index", "cfg.problem.replace_index"}):
        for _, sub in g.groupby("seed", sort=True):
            full = sub[sub["_drop"].isna()]
            changed = sub[sub["_drop"].notna()]
            if len(full) != 1 or changed.empty:
                continue
            a = _load_snapshots(full["run_dir"].iloc[0])
            if a is None:
                continue
            for _, c in changed.iterrows():
                b = _load_snapshots(c["run_dir"])
                if b is None or a[1].shape[1] != b[1].shape[1]:
                    continue
                steps, ia, ib = np.intersect1d(a[0], b[0], return_indices=True)
                dist = np.linalg.norm(a[1][ia] - b[1][ib], axis=1)
                moved = np.linalg.norm(a[1][ia] - a[1][0], axis=1)
                n = column(sub, "cfg.problem.n_train").iloc[0]
                f = full.iloc[0]
                extra = dict(initial_loss=f.get("initial_loss", math.nan), final_loss=f.get("final_loss", math.nan),
                             min_tau=f.get("min_tau", math.nan), median_tau=f.get("tau_median_all", math.nan),
                             K=f.get("K", math.nan))
                out.extend(dict(problem=c["problem"], optimizer=c["_variant"], N=float(n) if finite(n) else math.nan,
                                seed=c["seed"], drop_index=c["_drop"], step=int(s), distance=float(v), moved=float(w),
                                run=full["run"].iloc[0], run_changed=c["run"], **extra)
                           for s, v, w in zip(steps, dist, moved))
    return pd.DataFrame(out, columns=cols)


def stability_final(stab: pd.DataFrame) -> pd.DataFrame:
    """The distance at the last common logged step of each pair, the largest over steps, how far the
    full-set run moved from x_0 and relative = distance / moved."""
    keys = ["problem", "optimizer", "N", "seed", "drop_index"]
    cols = keys + ["step", "distance", "max_distance", "moved", "relative", "trained", "min_tau", "median_tau", "K"]
    if stab.empty:
        return pd.DataFrame(columns=cols)
    last = stab.sort_values("step").groupby(keys, dropna=False).tail(1).set_index(keys)
    last["max_distance"] = stab.groupby(keys, dropna=False)["distance"].max()
    last["relative"] = last["distance"] / last["moved"].where(last["moved"] > 0)
    last = last.reset_index()
    ref = last[last["optimizer"] == "lion"].groupby(["problem", "N"])["moved"].mean()
    refs = [None if o == "lion" else ref.get((p, n), math.nan) for p, o, n in zip(last["problem"], last["optimizer"], last["N"])]
    last["trained"] = [bool(theory.did_train(a, b, m, r)) for a, b, m, r in
                       zip(last["initial_loss"], last["final_loss"], last["moved"], refs)]
    return last[cols].sort_values(keys).reset_index(drop=True)



def table(data) -> pd.DataFrame:
    """One row per pair and common logged step (pair_table), figure per problem."""
    t = pair_table(data.runs)
    return t.assign(figure=[figure_stem(NAME, problem=p) for p in t["problem"]])


def _slope_rows(f, problem, figure, n_boot, seed) -> list:
    """E‖x_T − x'_T‖₂ ∝ N^s per optimizer: theory for CLion, context for Lion and SignSGD."""
    rows = []
    tol = float(THRESHOLDS["div_tol"])
    for opt, g in f.groupby("optimizer", sort=True):
        is_clion = str(opt).startswith("clion")
        rule = (f"slope of ln E‖x_T − x'_T‖₂ on ln N ≤ −1 + {THRESHOLDS['div_tol'].value} (∝ 1/N)" if is_clion
                else "reported: one changed example can flip sign(c_j) where |c_j| is small; need not shrink with N")
        claim = "§7 stability: E‖x_T − x'_T‖₂ ∝ N^s"
        scope = f"{opt} · {problem} · T={set_text(g['K'])}"
        per_n = g.groupby("N")["distance"].agg(["mean", "count"])
        tau = (f"min τ over the runs {g3(g['min_tau'].min())}, median τ_k over all steps {g3(g['median_tau'].median())}"
               + (f", log10 of Lion's bound term 1/(N·τ^T) at min τ: "
                  + "; ".join(f"N={num(n)}: {g3(theory.lion_generalization_log10_term(n, k, t))}"
                              for n, k, t in g.groupby("N")[["K", "min_tau"]].min().itertuples() if finite(t) and t > 0)
                  if g["min_tau"].gt(0).any() else ""))
        evidence = ("mean final distance " + "; ".join(f"N={num(n)}: {g3(v['mean'])} ({int(v['count'])} pairs)"
                                                      for n, v in per_n.iterrows())
                    + f"; mean ‖x_T − x_0‖₂ {g3(g['moved'].mean())}; {tau}; {figure}")
        untrained = g[~g["trained"].astype(bool)]
        if len(untrained):
            rows.append(VerdictRow(claim, "theory" if is_clion else "context", scope, "n.a.: " + rule, math.nan,
                                   holds="n.a.", evidence=(f"{len(untrained)} of {len(g)} full-set runs did not train "
                                                           f"(theory.did_train); {evidence}"), n=len(g)))
            continue
        fit = fit_mean_power_law(g["N"], g["distance"], n_boot, seed)
        if fit is None:
            rows.append(VerdictRow(claim, "theory" if is_clion else "context", scope, rule, math.nan,
                                   holds="unclear" if is_clion else "n.a.", evidence=f"< 2 N with a distance; {evidence}",
                                   n=len(g)))
            continue
        rows.append(VerdictRow(claim, "theory" if is_clion else "context", scope, rule, fit.slope, fit.ci_low,
                               fit.ci_high, fit_interval(fit), judge_fit(fit, le(-1.0 + tol)) if is_clion else "n.a.",
                               evidence, fit.n))
    return rows


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    final = stability_final(table)
    figure_of = table.groupby("problem")["figure"].first().to_dict()
    for problem, f in final.groupby("problem", sort=True):
        rows.extend(_slope_rows(f, problem, f"figures/{figure_of[problem]}.png; stability.csv", n_boot, seed))
        f = f[f["trained"].astype(bool)]
        piv = f.pivot_table(index=["N", "seed"], columns="optimizer", values="distance")
        rel = f.pivot_table(index=["N", "seed"], columns="optimizer", values="relative")
        moved = f.groupby("optimizer")["moved"].mean()
        if "lion" not in piv.columns:
            continue
        for variant in [c for c in piv.columns if str(c).startswith("clion")]:
            pair = piv[[variant, "lion"]].dropna()
            pair = pair[pair["lion"] > 0]
            if pair.empty:
                continue
            ratio = pair[variant] / pair["lion"]
            holds = "yes" if (ratio <= 1).all() else "no" if (ratio > 1).all() else "unclear"
            seeds = ratio.index.get_level_values("seed").nunique()
            if seeds < MIN_SEEDS:
                holds = "unclear"
            scope = f"{variant} vs lion · {problem}"
            rows.append(VerdictRow(
                "§7 stability: CLion's divergence under a one-example change ≤ Lion's", "theory", scope,
                "‖x_T − x'_T‖₂(CLion) / (Lion) ≤ 1 for every (N, seed)", float(np.exp(np.log(ratio).mean())),
                float(ratio.min()), float(ratio.max()), f"seed range ({seeds} seed{'s' if seeds != 1 else ''})", holds,
                evidence=("measured = geometric mean over (N, seed) of the ratio of final distances; ratios "
                          + ", ".join(f"N={num(n)} s{s}: {g3(v)}" for (n, s), v in ratio.items())
                          + "; final distances (mean over seeds): "
                          + "; ".join(f"{o} {g3(v)}" for o, v in f.groupby("optimizer")["distance"].mean().items())
                          + f"; figures/{figure_of[problem]}.png; stability.csv"), n=len(ratio)))
            rel_pair = rel[[variant, "lion"]].dropna()
            rel_pair = rel_pair[rel_pair["lion"] > 0]
            if rel_pair.empty:
                continue
            rel_ratio = rel_pair[variant] / rel_pair["lion"]
            rows.append(VerdictRow(
                "§7 stability context: divergence relative to ‖x_T − x_0‖₂, CLion vs Lion", "context", scope,
                "reported: a method that hardly moves hardly diverges", float(np.exp(np.log(rel_ratio).mean())),
                holds="n.a.",
                evidence=("measured = geometric mean over (N, seed) of [‖x_T − x'_T‖/‖x_T − x_0‖](CLion) / (Lion); "
                          "‖x_T − x_0‖₂ (mean): " + "; ".join(f"{o} {g3(v)}" for o, v in moved.items())
                          + "; relative divergence (mean): "
                          + "; ".join(f"{o} {g3(v)}" for o, v in f.groupby("optimizer")["relative"].mean().items())
                          + "; stability.csv"), n=len(rel_ratio)))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """Left: E‖x_T − x'_T‖₂ vs N per optimizer (log-log: seed mean with min–max, fitted slope, a 1/N
    guide anchored at each curve's own first point). Right: ‖x_t − x'_t‖₂ vs step at the largest N."""
    paths = []
    final = stability_final(table)
    for stem, t in table[table["distance"] > 0].groupby("figure", sort=True):
        problem = t["problem"].iloc[0]
        f = final[(final["problem"] == problem) & (final["distance"] > 0)]
        with plt.rc_context(STYLE):
            fig, axes = wide(2)
            a1, a2 = axes[0]
            for i, (opt, g) in enumerate(f.groupby("optimizer", sort=True)):
                st = g.groupby("N")["distance"].agg(["mean", "min", "max"])
                a1.errorbar(st.index, st["mean"], yerr=[st["mean"] - st["min"], st["max"] - st["mean"]],
                            fmt=MARKERS[i % len(MARKERS)], color=color(opt), capsize=2)
                xs = np.geomspace(st.index.min(), st.index.max(), 20)
                fit = fit_mean_power_law(g["N"], g["distance"], n_boot=0)
                if fit is not None:
                    a1.plot(xs, fit.predict(xs), color=color(opt), linewidth=1, label=f"{opt}: slope {fit.slope:.2f}")
                x0, y0 = float(st.index[0]), float(st["mean"].iloc[0])
                a1.plot(xs, y0 * (xs / x0) ** -1.0, **{**REF, "color": color(opt)})
            loglog(a1)
            a1.set(xlabel="training-set size N", ylabel="E‖x_T − x'_T‖₂ (one example replaced)",
                   title=f"{problem}: divergence vs N (dotted: ∝ 1/N)")
            if a1.get_legend_handles_labels()[0]:
                legend(a1, "no data", loc="best")
            n = t["N"].max()
            for opt, g in t[t["N"] == n].groupby("optimizer", sort=True):
                for _, s in g.groupby("seed"):
                    a2.plot(s["step"] + 1, s["distance"], color=color(opt), linewidth=0.6, alpha=0.5)
                mean = g.groupby("step")["distance"].mean()
                a2.plot(mean.index + 1, mean.values, color=color(opt), linewidth=1.6, label=f"{opt} (mean over seeds)")
            loglog(a2)
            a2.set(xlabel="step t + 1", ylabel="‖x_t − x'_t‖₂", title=f"{problem}, N={n:g}")
            legend(a2, "no data", loc="best")
            paths.append(save(fig, out_dir, stem))
    return paths
