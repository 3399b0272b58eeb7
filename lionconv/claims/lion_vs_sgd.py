"""Lion vs SGD (the main paper): Lion reaches lower training loss and higher test accuracy than SGD,
each at the best of its own learning-rate grid (the lr_scale with the lowest mean final training loss
over seeds, among configs with every seed finished). *yes* if every seed of Lion beats every seed of
SGD, *no* if every seed of SGD beats every seed of Lion, *unclear* if the seed ranges overlap — and
at most *unclear* with fewer than 5 seeds per optimizer (the min–max of n seeds covers the median with
probability 1 − 2^(1−n))."""
from __future__ import annotations

import math

import pandas as pd

from lionconv.analysis.groups import column, finite, g3, identity_groups
from lionconv.analysis.load import LION_FAMILY
from lionconv.analysis.plots import STYLE, color, figure_stem, loglog, logx, plt, save, wide
from lionconv.analysis.verdict import MIN_SEEDS, VerdictRow

NAME = "lion_vs_sgd"
THEORY = "main paper"
PRESETS = ("lion_vs_sgd",)
THRESHOLDS: dict = {}      # no tolerance: seed ranges compared


def table(data) -> pd.DataFrame:
    runs = data.runs
    """Per (problem, optimizer, lr_scale): seeds, lr, final train loss and test accuracy (mean, min, max),
    and whether it is the optimizer's best of the grid (lowest mean final loss among the configs with
    every seed finished). Only problem groups that hold SGD and a Lion-family optimizer."""
    cols = ["figure", "group", "problem", "optimizer", "lr_scale", "lr", "seeds", "loss_mean", "loss_min", "loss_max",
            "acc_mean", "acc_min", "acc_max", "best", "run_dirs"]
    if runs.empty or "final_loss" not in runs:
        return pd.DataFrame(columns=cols)
    runs = runs.assign(lr_scale=column(runs, "cfg.lr_scale", 1.0).astype(float).fillna(1.0))
    out = []
    for gi, g in enumerate(identity_groups(runs, free={"optimizer", "cfg.optimizer", "cfg.lr_scale", "seed"})):
        opts = set(g["optimizer"])
        if "sgd" not in opts or not opts & set(LION_FAMILY):
            continue
        if g.groupby("optimizer")["lr_scale"].nunique().min() < 2:
            continue  # best-of-grid needs a grid: other sweeps (e.g. over K) are not this claim
        for (opt, scale), c in g.groupby(["optimizer", "lr_scale"], sort=True):
            acc = column(c, "final_test_acc")
            out.append(dict(figure=figure_stem(NAME, problem=c["problem"].iloc[0], group=gi), group=gi, problem=c["problem"].iloc[0], optimizer=opt, lr_scale=scale,
                            lr=float(c["lr"].iloc[0]), seeds=len(c), loss_mean=float(c["final_loss"].mean()),
                            loss_min=float(c["final_loss"].min()), loss_max=float(c["final_loss"].max()),
                            acc_mean=float(acc.mean()), acc_min=float(acc.min()), acc_max=float(acc.max()),
                            best=False, run_dirs=tuple(c["run_dir"])))
    t = pd.DataFrame(out, columns=cols)
    for _, c in t.groupby(["group", "optimizer"]):
        full = c[(c["seeds"] == c["seeds"].max()) & c["loss_mean"].notna()]
        if not full.empty:
            t.loc[full["loss_mean"].idxmin(), "best"] = True
    return t


def _compare(a_lo, a_hi, b_lo, b_hi, a_better_if_lower: bool) -> str:
    """yes if every seed of a beats every seed of b, no if the reverse, unclear if the ranges overlap."""
    if a_better_if_lower:
        return "yes" if a_hi < b_lo else "no" if a_lo > b_hi else "unclear"
    return "yes" if a_lo > b_hi else "no" if a_hi < b_lo else "unclear"


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    for _, t in table.groupby("group", sort=True):
        best = t[t["best"]].set_index("optimizer")
        if "sgd" not in best.index:
            continue
        s = best.loc["sgd"]
        edge = lambda o: (" (edge of the grid)" if best.at[o, "lr_scale"] in  # noqa: E731
                          (t[t.optimizer == o]["lr_scale"].min(), t[t.optimizer == o]["lr_scale"].max()) else "")
        for opt in [o for o in best.index if o in LION_FAMILY]:
            b = best.loc[opt]
            scope = f"{opt} vs sgd · {b['problem']}"
            figure = f"figures/{b['figure']}.png, figures/{b['figure']}-curves.png; lion_vs_sgd.csv"
            desc = lambda o, r, c: (f"{o} lr_scale={g3(r['lr_scale'])} (η={g3(r['lr'])}): {g3(r[c + '_mean'])} "  # noqa: E731
                                    f"[seeds {g3(r[c + '_min'])}–{g3(r[c + '_max'])}, n={int(r['seeds'])}]{edge(o)}")
            seeds = int(min(b["seeds"], s["seeds"]))
            interval = f"seed range ({seeds} seeds each)"
            cap = (lambda v: v if seeds >= MIN_SEEDS else "unclear")  # noqa: E731
            rows.append(VerdictRow(
                f"paper: {opt} reaches lower training loss than SGD", "theory", scope,
                "final train loss(lion)/(sgd) < 1, every seed (best of each lr grid)",
                b["loss_mean"] / s["loss_mean"] if s["loss_mean"] > 0 else math.nan,
                interval=interval, holds=cap(_compare(b["loss_min"], b["loss_max"], s["loss_min"], s["loss_max"], True)),
                evidence=f"measured = ratio of seed means; {desc(opt, b, 'loss')}; {desc('sgd', s, 'loss')}; {figure}",
                n=int(b["seeds"] + s["seeds"])))
            if finite(b["acc_mean"]) and finite(s["acc_mean"]):
                rows.append(VerdictRow(
                    f"paper: {opt} reaches higher test accuracy than SGD", "theory", scope,
                    "test acc(lion) − acc(sgd) > 0, every seed (configs chosen by train loss)",
                    b["acc_mean"] - s["acc_mean"],
                    interval=interval, holds=cap(_compare(b["acc_min"], b["acc_max"], s["acc_min"], s["acc_max"], False)),
                    evidence=(f"measured = difference of seed means; {desc(opt, b, 'acc')}; {desc('sgd', s, 'acc')}; "
                              f"{figure}"), n=int(b["seeds"] + s["seeds"])))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """Final train loss and test accuracy vs lr_scale per optimizer (seed mean, min–max bars, best of
    the grid starred); then loss and test accuracy vs step of each optimizer's best config."""
    paths = []
    for _, t in table.groupby("group", sort=True):
        first = t.iloc[0]
        with plt.rc_context(STYLE):
            fig, axes = wide(2)
            for ax, (c, label) in zip(axes[0], (("loss", "final training loss f(x_K)"), ("acc", "final test accuracy (fraction)"))):
                for opt, g in t.groupby("optimizer", sort=True):
                    g = g.sort_values("lr_scale")
                    ax.errorbar(g["lr_scale"], g[c + "_mean"], yerr=[g[c + "_mean"] - g[c + "_min"], g[c + "_max"] - g[c + "_mean"]],
                                fmt="o-", color=color(opt), capsize=2, label=f"{opt} (seed mean, min–max)")
                    b = g[g["best"]]
                    ax.plot(b["lr_scale"], b[c + "_mean"], "*", color=color(opt), markersize=11,
                            label=f"{opt}: best by train loss")
                if c == "loss":
                    loglog(ax)
                else:
                    logx(ax)
                ax.set(xlabel="lr_scale (× each optimizer's default η)", ylabel=label,
                       title=f"{first['problem']}: {label.split(' (')[0]}")
                ax.legend(loc="best")
            paths.append(save(fig, out_dir, first["figure"]))
            fig, axes = wide(2)
            a1, a2 = axes[0]
            positive = True
            for opt, b in t[t["best"]].groupby("optimizer", sort=True):
                b = b.iloc[0]
                for j, run_dir in enumerate(b["run_dirs"]):
                    m = data.metrics(run_dir, ["step", "loss", "test_acc"])
                    if m is None:
                        continue
                    positive &= bool(m["loss"].notna().any() and (m["loss"].dropna() > 0).all())
                    lab = dict(label=f"{opt}, lr_scale={b['lr_scale']:g}") if j == 0 else {}
                    a1.plot(m["step"] + 1, m["loss"], color=color(opt), linewidth=1, alpha=0.85, **lab)
                    a2.plot(m["step"] + 1, m["test_acc"], color=color(opt), linewidth=1, alpha=0.85, **lab)
            if positive:
                loglog(a1)
            else:
                logx(a1)
            logx(a2)
            a1.set(xlabel="step k + 1", ylabel="training loss f(x_k) (full objective)",
                   title=f"{first['problem']}: best configs, one line per seed")
            a2.set(xlabel="step k + 1", ylabel="test accuracy (fraction)", title="test accuracy")
            a1.legend(loc="best")
            a2.legend(loc="best")
            paths.append(save(fig, out_dir, first["figure"] + "-curves"))
    return paths

