"""Lion vs the baselines, trained the way the Lion papers train: Lion reaches a lower training loss and a
higher test accuracy than SGD, SGD with momentum 0.9 and AdamW. Protocol: a cosine lr schedule for every
optimizer, equal step budgets, per optimizer a grid of lr_scale (and of decoupled weight decay λ); each
optimizer's config is SELECTED on the validation split carved from the training set (lowest seed-mean
`select_by`, among configs with every seed finished), then its final train loss and test accuracy are
reported at that config. Rows per problem and baseline X: train loss ratio mean(Lion)/mean(X) < 1 and
test accuracy difference mean(Lion) − mean(X) > 0, each with a seed bootstrap (paired by seed: a seed
fixes init, split and batch order) and judged by its whole CI; "yes"/"no" need ≥ 5 seeds. The rows are
*unclear*, never decided, when a selected config sits on its grid's edge (lowest or highest lr_scale,
highest λ: the optimum is not bracketed; a diverged value does not bracket), when the schedule is not
cosine, or when there is no validation split."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lionconv.analysis.fit import seed_bootstrap
from lionconv.analysis.groups import column, g3, identity_groups, set_text
from lionconv.analysis.plots import color, figure_stem, legend, logx, plt, save, STYLE, wide
from lionconv.analysis.verdict import VerdictRow, judge

NAME = "lion_vs_baselines"
THEORY = "main paper"
PRESETS = ("lion_vs_baselines",)
THRESHOLDS: dict = {}          # no tolerance: the whole CI against 1 (loss ratio) and 0 (accuracy difference)
LION = "lion"
BASELINES = ("sgd", "sgd_momentum", "adamw")
SELECT_BY = "val_loss"         # continuous, unlike a 270-example accuracy, so seed means rarely tie
SCHEDULE = "cosine"            # the papers' lr schedule
BELOW_ONE = (-math.inf, math.nextafter(1.0, 0.0))
ABOVE_ZERO = (math.nextafter(0.0, 1.0), math.inf)


def table(data) -> pd.DataFrame:
    """Per (problem group, optimizer, lr_scale, λ): seeds and per-seed final train loss, test accuracy and
    validation loss/accuracy (tuples in seed order, and their means), `selected` (the optimizer's choice
    by mean `select_by`) and `edge` (that choice is on the grid's edge), plus the protocol: lr schedule
    and validation fraction."""
    runs = data.runs
    cols = ["figure", "group", "problem", "optimizer", "lr_scale", "weight_decay", "lr", "lr_schedule",
            "val_fraction", "K", "seeds", "seed_list", "loss", "test_acc", "val_loss", "val_acc", "loss_mean",
            "test_acc_mean", "val_loss_mean", "val_acc_mean", "selected", "edge", "run_dirs"]
    if runs.empty or "final_loss" not in runs:
        return pd.DataFrame(columns=cols)
    runs = runs.assign(lr_scale=column(runs, "cfg.lr_scale", 1.0).astype(float).fillna(1.0),
                       weight_decay=runs["weight_decay"].astype(float).fillna(0.0))
    free = {"optimizer", "cfg.optimizer", "cfg.lr_scale", "weight_decay", "seed"}
    out = []
    for gi, g in enumerate(identity_groups(runs, free=free)):
        if LION not in set(g["optimizer"]) or not set(BASELINES) & set(g["optimizer"]):
            continue
        problem = str(g["problem"].iloc[0])
        for (opt, scale, wd), c in g.groupby(["optimizer", "lr_scale", "weight_decay"], sort=True):
            c = c.sort_values("seed")
            vals = {k: tuple(column(c, f"final_{k}").astype(float)) for k in ("loss", "test_acc", "val_loss", "val_acc")}
            out.append(dict(figure=figure_stem(NAME, problem=problem, group=gi), group=gi, problem=problem,
                            optimizer=opt, lr_scale=scale, weight_decay=wd, lr=float(c["lr"].iloc[0]),
                            lr_schedule=str(column(c, "cfg.lr_schedule.name", None).iloc[0]),
                            val_fraction=float(column(c, "cfg.problem.val_fraction", 0.0).fillna(0.0).iloc[0]),
                            K=float(c["K"].iloc[0]), seeds=len(c), seed_list=tuple(c["seed"]), **vals,
                            **{f"{k}_mean": float(np.mean(v)) for k, v in vals.items()},
                            selected=False, edge=False, run_dirs=tuple(c["run_dir"])))
    t = pd.DataFrame(out, columns=cols)
    for _, c in t.groupby(["group", "optimizer"]):
        full = c[(c["seeds"] == c["seeds"].max()) & np.isfinite(c[SELECT_BY + "_mean"].astype(float))]
        if full.empty:
            continue
        best = full[SELECT_BY + "_mean"].astype(float).idxmin()
        t.loc[best, "selected"] = True
        wds = sorted(c["weight_decay"].unique())
        t.loc[best, "edge"] = bool(t.at[best, "lr_scale"] in (c["lr_scale"].min(), c["lr_scale"].max())
                                   or (len(wds) > 1 and t.at[best, "weight_decay"] == wds[-1]))
    return t


def _paired(a: pd.Series, b: pd.Series, key: str):
    """Per-seed values of a and b on their common seeds (a seed fixes init, split and batch order)."""
    va, vb = dict(zip(a["seed_list"], a[key])), dict(zip(b["seed_list"], b[key]))
    common = sorted(set(va) & set(vb))
    return np.array([va[s] for s in common], dtype=float), np.array([vb[s] for s in common], dtype=float)


def _describe(r: pd.Series, key: str, grid: pd.DataFrame) -> str:
    v = np.asarray(r[key], dtype=float)
    return (f"{r['optimizer']} lr_scale={g3(r['lr_scale'])} (η={g3(r['lr'])}) λ={g3(r['weight_decay'])} "
            f"[grid lr_scale {set_text(grid['lr_scale'])}, λ {set_text(grid['weight_decay'])}"
            f"{', EDGE' if r['edge'] else ''}; {SELECT_BY} {g3(r[SELECT_BY + '_mean'])}]: "
            f"{key} {g3(np.mean(v))} (seeds {g3(v.min())}–{g3(v.max())}, n={len(v)})")


def _protocol_problems(*rows: pd.Series) -> list[str]:
    issues = []
    for r in rows:
        if r["lr_schedule"] != SCHEDULE:
            issues.append(f"{r['optimizer']} lr_schedule={r['lr_schedule']} (the papers use {SCHEDULE})")
        if not r["val_fraction"] > 0:
            issues.append(f"{r['optimizer']} has no validation split (problem.val_fraction=0)")
        if r["edge"]:
            issues.append(f"{r['optimizer']}'s selected config is on its grid's edge: extend the grid")
    if len({float(r['K']) for r in rows}) > 1:
        issues.append("unequal step budgets")
    return issues


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    for _, t in table.groupby("group", sort=True):
        problem = t["problem"].iloc[0]
        sel = t[t["selected"]].set_index("optimizer", drop=False)
        figure = f"figures/{t['figure'].iloc[0]}.png; lion_vs_baselines.csv"
        for base in BASELINES:
            scope = f"lion vs {base} · {problem}"
            specs = (("reaches lower train loss", "loss", "final train loss mean(lion)/mean(X) < 1", BELOW_ONE,
                      lambda a, b: lambda i: a[i].mean() / b[i].mean()),
                     ("has higher test accuracy", "test_acc", "test acc mean(lion) − mean(X) > 0", ABOVE_ZERO,
                      lambda a, b: lambda i: a[i].mean() - b[i].mean()))
            for what, key, text, accept, stat in specs:
                claim = f"paper: Lion {what} than {base}"
                if LION not in sel.index or base not in sel.index:
                    missing = [o for o in (LION, base) if o not in sel.index]
                    rows.append(VerdictRow(claim, "theory", scope, text, math.nan, holds="unclear",
                                           evidence=f"no selected config for {', '.join(missing)} (no runs with "
                                                    f"every seed finished and a finite {SELECT_BY}); {figure}"))
                    continue
                a, b = sel.loc[LION], sel.loc[base]
                va, vb = _paired(a, b, key)
                ok = np.isfinite(va) & np.isfinite(vb)
                va, vb = va[ok], vb[ok]
                n = len(va)
                est, lo, hi = seed_bootstrap(stat(va, vb), n, n_boot, seed) if n else (math.nan,) * 3
                interval = f"seed-bootstrap ({n} seeds)"
                issues = _protocol_problems(a, b)
                holds = "unclear" if issues else judge(lo, hi, accept, interval)
                grid = lambda o: t[t["optimizer"] == o]  # noqa: E731
                rows.append(VerdictRow(
                    claim, "theory", scope, text, est, lo, hi, interval, holds,
                    (("not decided: " + "; ".join(issues) + "; ") if issues else "")
                    + f"selected on {SELECT_BY} (validation split {g3(a['val_fraction'])}), {a['lr_schedule']} lr, "
                    f"K={g3(a['K'])}; {_describe(a, key, grid(LION))}; {_describe(b, key, grid(base))}; {figure}",
                    2 * n))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """Per problem: validation loss, final train loss and test accuracy vs lr_scale per optimizer and λ
    (seed mean, min–max bars, the selected config starred); then train loss and test accuracy vs step
    at each optimizer's selected config, one line per seed."""
    paths = []
    panels = ((SELECT_BY, f"final {SELECT_BY} (selection)", True), ("loss", "final training loss f(x_K)", True),
              ("test_acc", "final test accuracy (fraction)", False))
    for _, t in table.groupby("group", sort=True):
        first = t.iloc[0]
        with plt.rc_context(STYLE):
            fig, axes = wide(3)
            for ax, (key, label, log_y) in zip(axes[0], panels):
                for (opt, wd), g in t.groupby(["optimizer", "weight_decay"], sort=True):
                    g = g.sort_values("lr_scale")
                    v = [np.asarray(x, dtype=float) for x in g[key]]
                    mean = np.array([x.mean() for x in v])
                    err = [mean - [x.min() for x in v], [x.max() for x in v] - mean]
                    ax.errorbar(g["lr_scale"], mean, yerr=err, fmt="o-", color=color(opt), capsize=2,
                                alpha=1.0 if wd == 0 else 0.6, label=f"{opt}, λ={wd:g}")
                    s = g[g["selected"]]
                    ax.plot(s["lr_scale"], [np.mean(x) for x in s[key]], "*", color=color(opt), markersize=12)
                logx(ax)
                if log_y:
                    ax.set_yscale("log")
                ax.set(xlabel="lr_scale (× each optimizer's default η)", ylabel=label,
                       title=f"{first['problem']}: {label.split(' (')[0]} (★ selected on validation)")
            legend(axes[0][0], "no data", loc="best", fontsize=7)
            paths.append(save(fig, out_dir, first["figure"]))
            fig, axes = wide(2)
            a1, a2 = axes[0]
            for opt, s in t[t["selected"]].groupby("optimizer", sort=True):
                s = s.iloc[0]
                for j, run_dir in enumerate(s["run_dirs"]):
                    m = data.metrics(run_dir, ["step", "loss", "test_acc"])
                    if m is None:
                        continue
                    lab = dict(label=f"{opt}, lr_scale={s['lr_scale']:g}, λ={s['weight_decay']:g}") if j == 0 else {}
                    a1.plot(m["step"] + 1, m["loss"], color=color(opt), linewidth=1, alpha=0.85, **lab)
                    a2.plot(m["step"] + 1, m["test_acc"], color=color(opt), linewidth=1, alpha=0.85, **lab)
            for ax in (a1, a2):
                logx(ax)
            if bool((t["loss"].explode().astype(float) > 0).all()):
                a1.set_yscale("log")
            a1.set(xlabel="step k + 1", ylabel="training loss f(x_k)", title=f"{first['problem']}: selected configs")
            a2.set(xlabel="step k + 1", ylabel="test accuracy (fraction)", title="test accuracy, one line per seed")
            legend(a1, "no data", loc="best", fontsize=7)
            paths.append(save(fig, out_dir, first["figure"] + "-curves"))
    return paths
