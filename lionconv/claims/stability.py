"""§7 stability: CLion's iterates move less than Lion's when one training example is replaced. Each
run with drop_index set is paired with the full-set run of the same seed, N and optimizer, and
‖x_t − x'_t‖₂ is read from their snapshots. *yes* if CLion's final distance ≤ Lion's for every (N,
seed), *no* if larger for every one, *unclear* otherwise — and at most *unclear* with fewer than 5 seeds
(the pairs of one seed share randomness). The distance relative to ‖x_T − x_0‖₂ is context: a method
that hardly moves hardly diverges."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from lionconv.analysis.groups import clion_variant, column, drop_index, finite, g3, identity_groups, num
from lionconv.analysis.plots import STYLE, color, figure_stem, loglog, plt, save, wide
from lionconv.analysis.verdict import MIN_SEEDS, VerdictRow

NAME = "stability"
THEORY = "§7"
PRESETS = ("clion_generalization",)
THRESHOLDS: dict = {}      # no tolerance: distance ratios compared with 1


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
    cols = ["problem", "optimizer", "N", "seed", "drop_index", "step", "distance", "moved", "run", "run_changed"]
    if runs.empty or "cfg.problem.drop_index" not in runs:
        return pd.DataFrame(columns=cols)
    runs = runs.assign(_drop=drop_index(runs), _variant=clion_variant(runs))
    out = []
    for g in identity_groups(runs, free={"cfg.problem.drop_index"}):
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
                out.extend(dict(problem=c["problem"], optimizer=c["_variant"], N=float(n) if finite(n) else math.nan,
                                seed=c["seed"], drop_index=c["_drop"], step=int(s), distance=float(v), moved=float(w),
                                run=full["run"].iloc[0], run_changed=c["run"]) for s, v, w in zip(steps, dist, moved))
    return pd.DataFrame(out, columns=cols)


def stability_final(stab: pd.DataFrame) -> pd.DataFrame:
    """The distance at the last common logged step of each pair, the largest over steps, how far the
    full-set run moved from x_0 and relative = distance / moved."""
    keys = ["problem", "optimizer", "N", "seed", "drop_index"]
    cols = keys + ["step", "distance", "max_distance", "moved", "relative"]
    if stab.empty:
        return pd.DataFrame(columns=cols)
    last = stab.sort_values("step").groupby(keys, dropna=False).tail(1).set_index(keys)
    last["max_distance"] = stab.groupby(keys, dropna=False)["distance"].max()
    last["relative"] = last["distance"] / last["moved"].where(last["moved"] > 0)
    return last.reset_index()[cols].sort_values(keys).reset_index(drop=True)



def table(data) -> pd.DataFrame:
    """One row per pair and common logged step (pair_table), figure per problem."""
    t = pair_table(data.runs)
    return t.assign(figure=[figure_stem(NAME, problem=p) for p in t["problem"]])


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    final = stability_final(table)
    figure_of = table.groupby("problem")["figure"].first().to_dict()
    for problem, f in final.groupby("problem", sort=True):
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

    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """‖x_t − x'_t‖₂ vs step (log-log) per N, seed mean thick, each seed thin, one colour per optimizer."""
    paths = []
    for stem, t in table[table["distance"] > 0].groupby("figure", sort=True):
        problem = t["problem"].iloc[0]
        ns = sorted(t["N"].unique())
        with plt.rc_context(STYLE):
            fig, axes = wide(len(ns), max_cols=2)
            for ax, n in zip(axes[0], ns):
                for opt, g in t[t["N"] == n].groupby("optimizer", sort=True):
                    for _, s in g.groupby("seed"):
                        ax.plot(s["step"] + 1, s["distance"], color=color(opt), linewidth=0.6, alpha=0.5)
                    mean = g.groupby("step")["distance"].apply(lambda v: float(np.exp(np.log(v).mean())))
                    ax.plot(mean.index + 1, mean.values, color=color(opt), linewidth=1.6, label=f"{opt} (geometric mean over seeds)")
                loglog(ax)
                ax.set(xlabel="step t + 1", ylabel="‖x_t − x'_t‖₂ (one example replaced)", title=f"{problem}, N={n:g}")
                ax.legend(loc="best")
            paths.append(save(fig, out_dir, stem))
    return paths

