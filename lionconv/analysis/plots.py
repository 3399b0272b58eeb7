"""Figures of the report: one style, PNG + PDF, log-log where a rate is shown, theory/bounds dashed.

Each plot_* function takes the usable runs and returns the PNG paths it wrote ([] when the data
for it is absent). Colours are fixed per optimizer so every figure reads the same way.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lionconv import theory  # noqa: E402

STYLE = {"figure.figsize": (5.6, 3.9), "axes.grid": True, "grid.alpha": 0.3, "grid.linestyle": "-",
         "font.size": 9, "axes.titlesize": 9, "legend.fontsize": 7, "legend.frameon": False,
         "savefig.dpi": 150, "savefig.bbox": "tight", "lines.markersize": 4}
OPT_COLORS = {"lion": "C0", "clion": "C1", "signsgd": "C2", "sgd": "C3"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
REF = dict(color="0.45", linestyle=":", linewidth=1.2)      # theory rate / reference lines
BOUND = dict(linestyle="--", linewidth=1.2)                  # upper bounds


def _slug(v) -> str:
    s = f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)
    return re.sub(r"[^A-Za-z0-9_.]+", "_", s)


def figure_stem(kind: str, row) -> str:
    """File stem of a figure for the runs like `row` (a runs-table row): claims cite it as evidence."""
    wd = float(row["weight_decay"])
    suffix = f"-wd{_slug(wd)}" if wd > 0 else ""
    if kind == "rate_K":
        return f"rate_K-{_slug(row['problem'])}-d{_slug(row['d'])}{suffix}"
    if kind == "rate_d":
        return f"rate_d-{_slug(row['problem'])}-K{_slug(row['K'])}{suffix}"
    if kind in ("ratio", "training"):
        return f"{kind}-{_slug(row['problem'])}"
    if kind == "kkt":
        return f"kkt-{_slug(row['problem'])}{suffix}"
    raise ValueError(f"kind={kind!r}; allowed: rate_K, rate_d, ratio, kkt, training")


def _color(opt: str) -> str:
    return OPT_COLORS.get(opt, f"C{4 + sum(map(ord, str(opt))) % 6}")


def _loglog(ax, x=True) -> None:
    """Log axes (y, and x unless x=False) labelled with plain numbers at 1, 2, 5 × 10^k."""
    if x:
        ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis) if x else (ax.yaxis,):
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))
        axis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))


def _save(fig, out_dir: Path, stem: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{stem}.png"
    fig.savefig(png)
    fig.savefig(out_dir / f"{stem}.pdf")
    plt.close(fig)
    return png


def _label(scope: str) -> str:
    """Legend text: the scope without the problem name and the fixed K/d (they are in the title)."""
    parts = scope.split(" · ")
    return " · ".join([parts[0]] + parts[3:])


def _rate_figure(runs, vary, checks, out_dir, fixed_col, stem_kind, xlabel, ref_exp, ref_text):
    from lionconv.analysis.claims import comparable_groups, measure_column
    # the same groups the claims fit, one figure per (problem, fixed K or d, λ): the stem the claims cite
    figures: dict = {}
    for s, g in comparable_groups(runs, vary):
        if g[vary].nunique() >= 2:
            figures.setdefault(figure_stem(stem_kind, g.iloc[0]), []).append((s, g))
    paths = []
    for stem, groups in figures.items():
        sub = pd.concat([g for _, g in groups])
        wd = float(sub["weight_decay"].iloc[0])
        panels = [measure_column(wd)] + ([("avg ‖∇f‖₁", "avg_grad_l1")] if wd > 0 else [])
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, len(panels), squeeze=False,
                                     figsize=(STYLE["figure.figsize"][0] * len(panels), STYLE["figure.figsize"][1]))
            for ax, (label, col) in zip(axes[0], panels):
                anchor = None
                for i, (scope, g) in enumerate(groups):
                    color, marker = _color(g["optimizer"].iloc[0]), MARKERS[i % len(MARKERS)]
                    st = g.groupby(vary)[col].agg(["mean", "min", "max"]).dropna()
                    st = st[st["mean"] > 0]
                    if st.empty:
                        continue
                    ax.errorbar(st.index, st["mean"], yerr=[st["mean"] - st["min"], st["max"] - st["mean"]],
                                fmt=marker, color=color, capsize=2, label=_label(scope) + " (seed mean, min–max)")
                    if len(st) >= 2:
                        slope, icpt = np.polyfit(np.log(st.index.values.astype(float)), np.log(st["mean"]), 1)
                        xs = np.geomspace(st.index.min(), st.index.max(), 50)
                        ax.plot(xs, np.exp(icpt) * xs**slope, color=color, linewidth=1, label=f"{_label(scope)} fit: slope {slope:.3f}")
                    if anchor is None:
                        anchor = (float(st.index[0]), float(st["mean"].iloc[0]), float(st.index[-1]))
                    if checks is not None:
                        b = checks[checks["run"].isin(g["run"]) & checks["bound"].notna()]
                        if col == measure_column(wd)[1] and not b.empty:
                            bm = b.groupby(vary)["bound"].mean()
                            ax.plot(bm.index, bm.values, color=color, marker=marker, markerfacecolor="none",
                                    label=f"{_label(scope)} bound (THEORY §4)", **BOUND)
                if anchor is not None:
                    x0, y0, x1 = anchor
                    xs = np.geomspace(x0, x1, 20)
                    ax.plot(xs, y0 * (xs / x0) ** ref_exp, label=ref_text, **REF)
                _loglog(ax)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(f"{label.removeprefix('avg ')} averaged over k < K")
            first = sub.iloc[0]
            fig.suptitle(f"{first['problem']}, {fixed_col}={_slug(first[fixed_col])}"
                         + (f", λ={wd:g}" if wd > 0 else ""), fontsize=9)
            for ax in axes[0]:   # below each panel: a legend never hides a curve
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
            paths.append(_save(fig, out_dir, stem))
    return paths


def plot_rate_K(runs, checks, out_dir):
    """Averaged ℓ1 gradient (or G_λ) vs K per optimizer, fitted line, bound dashed, K^{-1/4} dotted."""
    return _rate_figure(runs, "K", checks, out_dir, "d", "rate_K", "iterations K", -0.25, "∝ K^-1/4 (theory rate)")


def plot_rate_d(runs, checks, out_dir):
    """Averaged ℓ1 gradient (or G_λ) vs d at fixed K, with the √d reference dotted."""
    return _rate_figure(runs, "d", checks, out_dir, "K", "rate_d", "dimension d (trainable scalars)", 0.5,
                        "∝ √d (theory ≤)")


def plot_ratio(runs, out_dir):
    """‖∇f‖₁/‖∇f‖₂ (full: filled, minibatch: open) vs √d with the √d·r references of THEORY §5."""
    paths = []
    for problem, sub in runs.groupby("problem", sort=True):
        if sub["d"].nunique() < 2 or sub["mean_l1_l2"].notna().sum() == 0:
            continue
        with plt.rc_context(STYLE):
            fig, ax = plt.subplots()
            for opt, g in sub.groupby("optimizer", sort=True):
                st = g.groupby("d")[["mean_l1_l2", "mean_mb_l1_l2"]].mean()
                sd = np.sqrt(st.index.values.astype(float))
                ax.plot(sd, st["mean_l1_l2"], "o-", color=_color(opt), label=f"{opt}: full ∇f")
                if st["mean_mb_l1_l2"].notna().any():
                    ax.plot(sd, st["mean_mb_l1_l2"], "o--", color=_color(opt), markerfacecolor="none",
                            linewidth=0.8, label=f"{opt}: minibatch g")
            xs = np.geomspace(np.sqrt(sub["d"].min()), np.sqrt(sub["d"].max()), 20)
            ax.plot(xs, xs, label="√d (r = 1, equal magnitudes)", **REF)
            ax.plot(xs, theory.RATIO_REFERENCE["gaussian"] * xs, color="0.45", label="√(2/π)·√d (Gaussian)", **BOUND)
            _loglog(ax)
            ax.set(xlabel="√d  (d = trainable scalars)", ylabel="‖∇f‖₁ / ‖∇f‖₂ (time-averaged)",
                   title=f"{problem}: ℓ1/ℓ2 ratio vs √d")
            ax.legend(loc="best")
            paths.append(_save(fig, out_dir, figure_stem("ratio", sub.iloc[0])))
    return paths


def _representatives(sub: pd.DataFrame) -> pd.DataFrame:
    """One run per optimizer, at the K shared by the most optimizers (the largest such K) when
    possible so the curves compare like with like; then the largest K, then the smallest seed."""
    shared = sub.groupby("K")["optimizer"].nunique()
    best_k = max(shared.index, key=lambda k: (shared[k], k))
    order = sub.assign(_at=sub["K"] == best_k).sort_values(["_at", "K", "seed"], ascending=[False, False, True],
                                                            kind="stable")
    return order.groupby("optimizer", sort=True).head(1).sort_values("optimizer")


def plot_kkt(runs, load_metrics, out_dir):
    """KKT residual G_λ(x_k) and feasibility violation vs step for λ > 0 runs, with §3's box envelope."""
    paths = []
    for _, sub in runs[runs["weight_decay"] > 0].groupby(["problem", "weight_decay"], sort=True):
        reps = _representatives(sub)
        data = [(r, load_metrics(r.run_dir, ["step", "kkt_residual", "feasibility"])) for r in reps.itertuples(index=False)]
        data = [(r, m) for r, m in data if m is not None and m["kkt_residual"].notna().any()]
        if not data:
            continue
        with plt.rc_context(STYLE):
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(2 * STYLE["figure.figsize"][0], STYLE["figure.figsize"][1]))
            for r, m in data:
                c = _color(r.optimizer)
                a1.plot(m["step"], m["kkt_residual"], color=c, label=f"{r.optimizer} (K={r.K:g}, seed {r.seed})")
                a2.plot(m["step"], m["feasibility"], color=c, label=f"{r.optimizer}: max(0, λ‖x‖∞ − 1)")
                x0 = getattr(r, "x0_linf", np.nan)
                if np.isfinite(x0) and r.lr * r.weight_decay <= 1:
                    env = theory.box_envelope(x0, r.lr, r.weight_decay, m["step"].to_numpy(dtype=float))
                    a2.plot(m["step"], np.maximum(0.0, r.weight_decay * env - 1), color=c,
                            label=f"{r.optimizer}: §3 envelope", **BOUND)
            _loglog(a1, x=False)
            a1.set(xlabel="step k", ylabel="G_λ(x_k) = ‖∇f‖₁ + λ⟨∇f, x⟩", title="KKT residual")
            a2.set(xlabel="step k", ylabel="feasibility violation (λ‖x‖∞ − 1)₊", title="box ‖x‖∞ ≤ 1/λ")
            a1.legend(loc="best")
            a2.legend(loc="best")
            paths.append(_save(fig, out_dir, figure_stem("kkt", sub.iloc[0])))
    return paths


def plot_training(runs, load_metrics, out_dir):
    """Full loss f(x_k) and test/train accuracy (where a test split exists) vs step, one run per optimizer."""
    paths = []
    for problem, sub in runs.groupby("problem", sort=True):
        reps = _representatives(sub)
        data = [(r, load_metrics(r.run_dir, ["step", "loss", "test_acc", "train_acc"])) for r in reps.itertuples(index=False)]
        data = [(r, m) for r, m in data if m is not None and m["loss"].notna().any()]
        if not data:
            continue
        has_acc = any(m["test_acc"].notna().any() for _, m in data)
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, 2 if has_acc else 1, squeeze=False,
                                     figsize=(STYLE["figure.figsize"][0] * (2 if has_acc else 1), STYLE["figure.figsize"][1]))
            a1 = axes[0][0]
            for r, m in data:
                c = _color(r.optimizer)
                a1.plot(m["step"], m["loss"], color=c, label=f"{r.optimizer} (K={r.K:g}, seed {r.seed})")
                if has_acc:
                    axes[0][1].plot(m["step"], m["test_acc"], color=c, label=f"{r.optimizer}: test")
                    if m["train_acc"].notna().any():
                        axes[0][1].plot(m["step"], m["train_acc"], color=c, linestyle="--", linewidth=0.8,
                                        label=f"{r.optimizer}: train")
            positive = all((m["loss"].dropna() > 0).all() for _, m in data)
            if positive:
                _loglog(a1, x=False)
            a1.set(xlabel="step k", ylabel="loss f(x_k) (full objective)",
                   title=f"{problem}: loss")
            a1.legend(loc="best")
            if has_acc:
                axes[0][1].set(xlabel="step k", ylabel="accuracy (fraction)", title=f"{problem}: accuracy")
                axes[0][1].legend(loc="best")
            paths.append(_save(fig, out_dir, figure_stem("training", sub.iloc[0])))
    return paths


def make_figures(runs: pd.DataFrame, load_metrics, out_dir, checks=None) -> list[Path]:
    """All figures for the usable runs into out_dir; returns the PNG paths."""
    if runs.empty:
        return []
    out_dir = Path(out_dir)
    return (plot_rate_K(runs, checks, out_dir) + plot_rate_d(runs, checks, out_dir) + plot_ratio(runs, out_dir)
            + plot_kkt(runs, load_metrics, out_dir) + plot_training(runs, load_metrics, out_dir))
