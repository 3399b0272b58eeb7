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


# figures of the preset claims (preset_claims.py): one per problem
PRESET_KINDS = ("feasibility", "negative_controls", "clion_gates", "lion_vs_sgd", "lion_vs_sgd_curves",
                "generalization", "stability")


def _slug(v) -> str:
    s = f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)
    return re.sub(r"[^A-Za-z0-9_.]+", "_", s)


def figure_stem(kind: str, row) -> str:
    """File stem of a figure for the runs like `row` (a runs-table row): claims cite it as evidence."""
    wd = float(row.get("weight_decay", 0.0))
    suffix = f"-wd{_slug(wd)}" if wd > 0 else ""
    if kind == "rate_K":
        return f"rate_K-{_slug(row['problem'])}-d{_slug(row['d'])}{suffix}"
    if kind == "rate_d":
        return f"rate_d-{_slug(row['problem'])}-K{_slug(row['K'])}{suffix}"
    if kind in ("ratio", "training"):
        return f"{kind}-{_slug(row['problem'])}"
    if kind == "kkt":
        return f"kkt-{_slug(row['problem'])}{suffix}"
    if kind == "constants_d":
        return "constants_d"
    if kind in PRESET_KINDS:
        return f"{kind}-{_slug(row['problem'])}"
    raise ValueError(f"kind={kind!r}; allowed: rate_K, rate_d, ratio, kkt, training, constants_d, "
                     + ", ".join(PRESET_KINDS))


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


def _logx(ax, plain=True) -> None:
    """Log x axis; plain numbers (as _loglog) unless the range spans many decades (plain=False)."""
    ax.set_xscale("log")
    if plain:
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))


def _logy(ax) -> None:
    """Log y axis labelled with plain numbers (as _loglog)."""
    _loglog(ax, x=False)


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


# ---------------------------------------------------------------------------- preset figures


def _wide(n: int, max_cols: int = 3):
    """n panels of the standard size, at most max_cols per row; unused panels hidden.
    Returns (fig, axes) with axes[0] the flat list of the n panels."""
    w, h = STYLE["figure.figsize"]
    cols = min(n, max_cols)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(w * cols, h * rows * (1.15 if rows > 1 else 1)))
    flat = axes.ravel().tolist()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, [flat[:n]]


def plot_feasibility(runs, load_metrics, out_dir):
    """THEORY §3 from outside the box: violation v_k = (λ‖x_k‖∞ − 1)₊ vs k (log y) with the envelope
    (1−ηλ)^k·v0 (dashed) and the fastest path (v0+2)(1−ηλ)^k − 2 (dotted); fitted rate vs ln(1−ηλ)."""
    from lionconv.analysis.preset_claims import feasibility_table
    table = feasibility_table(runs, load_metrics)
    paths = []
    for problem, t in table.groupby("problem", sort=True):
        with plt.rc_context(STYLE):
            fig, axes = _wide(2)
            a1, a2 = axes[0]
            for i, (lam, g) in enumerate(t.groupby("weight_decay", sort=True)):
                rep = g.sort_values(["K", "seed"], ascending=[False, True]).iloc[0]
                m = load_metrics(runs.loc[runs["run"] == rep["run"], "run_dir"].iloc[0], ["step", "x_linf"])
                if m is None:
                    continue
                k = m["step"].to_numpy(dtype=float)
                v = np.maximum(0.0, lam * m["x_linf"].to_numpy(dtype=float) - 1.0)
                q = 1.0 - rep["lr"] * lam
                color = f"C{i}"
                pos = v > 0
                a1.plot(k[pos], v[pos], color=color, label=f"λ={lam:g} (K={rep['K']:g}, seed {rep['seed']}): measured")
                kk = np.arange(0, max(k[pos].max() if pos.any() else 1, 1) * 1.5 + 2)
                a1.plot(kk, rep["v0"] * q**kk, color=color, label=f"λ={lam:g}: envelope (1−ηλ)^k·v0", **BOUND)
                fast = (rep["v0"] + 2) * q**kk - 2
                a1.plot(kk[fast > 0], fast[fast > 0], color=color, linestyle=":", linewidth=1,
                        label=f"λ={lam:g}: fastest possible path, 0 at k_min={rep['k_min']:.0f}")
                if np.isfinite(rep["k_reach"]):
                    a1.axvline(rep["k_reach"], color=color, linewidth=0.6, alpha=0.6)
                fitted = g[g["rate"].notna()]
                a2.plot(-fitted["theory_rate"], -fitted["rate"], MARKERS[i % len(MARKERS)], color=color,
                        label=f"λ={lam:g} (each run)")
            _loglog(a1, x=False)
            a1.set(xlabel="step k", ylabel="violation (λ‖x_k‖∞ − 1)₊", title=f"{problem}: reaching the box (k_reach: thin line)")
            a1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
            fitted = t[t["rate"].notna()]
            if not fitted.empty:
                lo, hi = float((-fitted["theory_rate"]).min()), float((-fitted["theory_rate"]).max())
                xs = np.geomspace(lo / 1.5, hi * 1.5, 20)
                a2.plot(xs, xs, color="0.45", label="= −ln(1−ηλ) (envelope rate)", **BOUND)
            _loglog(a2)
            a2.set(xlabel="−ln(1−ηλ) per step (theory)", ylabel="−slope of ln v_k on k (measured, per step)",
                   title="geometric rate of the violation")
            a2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
            paths.append(_save(fig, out_dir, figure_stem("feasibility", t.iloc[0])))
    return paths


def plot_constants_d(runs, out_dir):
    """THEORY §6: Δ, L, σ against d per problem family (log-log), ∝ d and ∝ √d references dotted."""
    from lionconv.analysis.preset_claims import constants_table
    table = constants_table(runs)
    table = table[table.groupby("problem")["d"].transform("nunique") >= 2]
    if table.empty:
        return []
    with plt.rc_context(STYLE):
        fig, axes = _wide(3)
        for ax, (col, label, ref) in zip(axes[0], (("Delta", "Δ = f(x0) − inf f", 1.0), ("L", "L (ℓ2 smoothness)", 0.0),
                                                   ("sigma", "σ (ℓ2 noise std)", 0.5))):
            for i, (problem, g) in enumerate(table.groupby("problem", sort=True)):
                st = g.groupby("d")[col].agg(["mean", "min", "max"])
                ax.errorbar(st.index, st["mean"], yerr=[st["mean"] - st["min"], st["max"] - st["mean"]],
                            fmt=MARKERS[i % len(MARKERS)] + "-", color=f"C{i}", capsize=2, label=f"{problem} (seed min–max)")
                if ref and problem.startswith("naive"):
                    xs = st.index.values.astype(float)
                    ax.plot(xs, st["mean"].iloc[0] * (xs / xs[0]) ** ref, label=f"∝ d^{ref:g} (THEORY §6)", **REF)
            ax.set_xscale("log")     # many decades: matplotlib's 10^k labels read better than plain numbers
            if (table[col] > 0).all():
                ax.set_yscale("log")
            ax.set(xlabel="dimension d (trainable scalars)", ylabel=label, title=f"{col} across d")
            ax.legend(loc="best")
        paths = [_save(fig, out_dir, figure_stem("constants_d", table.iloc[0]))]
    return paths


def plot_negative_controls(runs, load_metrics, out_dir):
    """THEORY §8: per-coordinate |f'_i| vs step for constant η (η/2 dashed), and the late ‖∇f‖₁ vs K
    per schedule and σ with the 2-cycle level dη/2 and the noise floor 2√d(1−β1)σ dashed."""
    from lionconv.analysis.preset_claims import control_table
    table = control_table(runs, load_metrics)
    paths = []
    for (problem, d), t in table.groupby(["problem", "d"], sort=True):
        with plt.rc_context(STYLE):
            fig, axes = _wide(2)
            a1, a2 = axes[0]
            const = t[(t["kind"] == "constant") & (t["sigma"] == 0)].sort_values("K")
            if not const.empty:   # σ = 0 and a constant schedule: shorter runs are prefixes of the longest
                r = const.iloc[-1]
                m = load_metrics(runs.loc[runs["run"] == r["run"], "run_dir"].iloc[0], ["step", "grad_l1"])
                if m is not None:
                    a1.plot(m["step"] + 1, m["grad_l1"] / d, color="C0", linewidth=0.8,
                            label=f"constant η={r['lr']:g}, β=({r['beta1']:g}, {r['beta2']:g}), K={r['K']:g}")
            contrast = t[(t["kind"] == "horizon") & (t["sigma"] == 0)]
            if not contrast.empty:
                r = contrast.sort_values("K").iloc[-1]
                m = load_metrics(runs.loc[runs["run"] == r["run"], "run_dir"].iloc[0], ["step", "grad_l1"])
                if m is not None:
                    a1.plot(m["step"] + 1, m["grad_l1"] / d, color="k", linewidth=0.8,
                            label=f"horizon (annealed), K={r['K']:g}")
            if not const.empty:
                a1.axhline(const["lr"].iloc[0] / 2, color="0.45", label="η/2 (THEORY §8 2-cycle)", **BOUND)
            _loglog(a1)
            a1.set(xlabel="step k + 1", ylabel="|f'_i| = ‖∇f‖₁/d per coordinate", title=f"{problem}, d={d:g}: σ = 0")
            a1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
            for i, ((kind, sigma), g) in enumerate(t.groupby(["kind", "sigma"], sort=True)):
                st = g.groupby("K")["late_grad_l1"].mean()
                a2.plot(st.index, st.values, MARKERS[i % len(MARKERS)] + "-", color=f"C{i}",
                        label=f"{kind.replace('_', ' ')}, σ={sigma:g}")
                if kind == "constant" and sigma == 0:
                    a2.axhline(g["cycle_level"].iloc[0], color=f"C{i}", label="dη/2 (2-cycle level)", **BOUND)
                if kind == "fixed_beta1" and (g["floor"] > 0).any():
                    a2.axhline(g["floor"].iloc[0], color=f"C{i}", label=f"floor 2√d(1−β1)σ, σ={sigma:g}", **BOUND)
            _loglog(a2)
            a2.set(xlabel="iterations K", ylabel=f"late ‖∇f‖₁ (mean over the last 10 % of steps)",
                   title="does the late gradient vanish with K?")
            a2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
            paths.append(_save(fig, out_dir, figure_stem("negative_controls", t.iloc[0])))
    return paths


def plot_clion_gates(runs, load_metrics, out_dir):
    """THEORY §2: CLion's sign-branch fraction vs ν (log x), one line per gate; final loss vs ν."""
    from lionconv.analysis.preset_claims import GATE_ORDER, gates_table
    table = gates_table(runs, load_metrics)
    paths = []
    for (problem, K, lr), t in table.groupby(["problem", "K", "lr"], sort=True):
        with plt.rc_context(STYLE):
            fig, axes = _wide(2)
            a1, a2 = axes[0]
            gates = [g for g in GATE_ORDER if g in set(t["gate"])] + sorted(set(t["gate"]) - set(GATE_ORDER))
            for i, gate in enumerate(gates):
                g = t[t["gate"] == gate].sort_values("nu")
                a1.plot(g["nu"], g["sign_fraction"], MARKERS[i] + "-", color=f"C{i}", label=f"gate={gate}")
                a2.plot(g["nu"], g["final_loss"], MARKERS[i] + "-", color=f"C{i}", label=f"gate={gate}")
            tau = t.loc[t["gate"] == "global", "median_tau"].median()
            if np.isfinite(tau):
                a1.axvline(tau, label=f"median τ_k = min|c_j| (global runs): {tau:.2g}", **REF)
            _logx(a1, plain=False)
            a1.set_ylim(-0.03, 1.03)
            a1.set(xlabel="ν (CLion gate threshold)", ylabel="sign-branch fraction (mean over steps)",
                   title=f"{problem}: CLion, K={K:g}, η={lr:g}")
            a1.legend(loc="best")
            _logy(a2)
            _logx(a2, plain=False)
            a2.set(xlabel="ν (CLion gate threshold)", ylabel="final training loss f(x_K)", title="final loss")
            a2.legend(loc="best")
            paths.append(_save(fig, out_dir, figure_stem("clion_gates", t.iloc[0])))
    return paths


def plot_lion_vs_sgd(runs, load_metrics, out_dir):
    """Final train loss and test accuracy vs lr_scale per optimizer (seed mean, min–max bars, best of
    the grid starred); then loss and test accuracy vs step of each optimizer's best config."""
    from lionconv.analysis.preset_claims import lr_grid_table
    table = lr_grid_table(runs)
    paths = []
    for _, t in table.groupby("group", sort=True):
        first = t.iloc[0]
        with plt.rc_context(STYLE):
            fig, axes = _wide(2)
            for ax, (c, label) in zip(axes[0], (("loss", "final training loss f(x_K)"), ("acc", "final test accuracy (fraction)"))):
                for opt, g in t.groupby("optimizer", sort=True):
                    g = g.sort_values("lr_scale")
                    ax.errorbar(g["lr_scale"], g[c + "_mean"], yerr=[g[c + "_mean"] - g[c + "_min"], g[c + "_max"] - g[c + "_mean"]],
                                fmt="o-", color=_color(opt), capsize=2, label=f"{opt} (seed mean, min–max)")
                    b = g[g["best"]]
                    ax.plot(b["lr_scale"], b[c + "_mean"], "*", color=_color(opt), markersize=11,
                            label=f"{opt}: best by train loss")
                if c == "loss":
                    _loglog(ax)
                else:
                    _logx(ax)
                ax.set(xlabel="lr_scale (× each optimizer's default η)", ylabel=label,
                       title=f"{first['problem']}: {label.split(' (')[0]}")
                ax.legend(loc="best")
            paths.append(_save(fig, out_dir, figure_stem("lion_vs_sgd", first)))
            fig, axes = _wide(2)
            a1, a2 = axes[0]
            positive = True
            for opt, b in t[t["best"]].groupby("optimizer", sort=True):
                b = b.iloc[0]
                for j, run_dir in enumerate(b["run_dirs"]):
                    m = load_metrics(run_dir, ["step", "loss", "test_acc"])
                    if m is None:
                        continue
                    positive &= bool(m["loss"].notna().any() and (m["loss"].dropna() > 0).all())
                    lab = dict(label=f"{opt}, lr_scale={b['lr_scale']:g}") if j == 0 else {}
                    a1.plot(m["step"] + 1, m["loss"], color=_color(opt), linewidth=1, alpha=0.85, **lab)
                    a2.plot(m["step"] + 1, m["test_acc"], color=_color(opt), linewidth=1, alpha=0.85, **lab)
            if positive:
                _loglog(a1)
            else:
                _logx(a1)
            _logx(a2)
            a1.set(xlabel="step k + 1", ylabel="training loss f(x_k) (full objective)",
                   title=f"{first['problem']}: best configs, one line per seed")
            a2.set(xlabel="step k + 1", ylabel="test accuracy (fraction)", title="test accuracy")
            a1.legend(loc="best")
            a2.legend(loc="best")
            paths.append(_save(fig, out_dir, figure_stem("lion_vs_sgd_curves", first)))
    return paths


def plot_generalization(runs, load_metrics, out_dir):
    """THEORY §7: gap = test − train loss vs N (log-log, seed mean with min–max, fits solid, N^-1
    dotted); log10 of Lion's bound term 1/(N·τ^T) vs N."""
    from lionconv.analysis.preset_claims import generalization_table
    table = generalization_table(runs, load_metrics)
    paths = []
    for problem, t in table.groupby("problem", sort=True):
        with plt.rc_context(STYLE):
            fig, axes = _wide(2)
            a1, a2 = axes[0]
            anchor = None
            for i, (opt, g) in enumerate(t.groupby("optimizer", sort=True)):
                pos = g[g["gap"] > 0]
                if pos.empty:
                    continue
                st = pos.groupby("N")["gap"].agg(["mean", "min", "max"])
                a1.errorbar(st.index, st["mean"], yerr=[st["mean"] - st["min"], st["max"] - st["mean"]],
                            fmt=MARKERS[i % len(MARKERS)], color=_color(opt), capsize=2, label=f"{opt} (seed mean, min–max)")
                if len(st) >= 2:
                    slope, icpt = np.polyfit(np.log(pos["N"].astype(float)), np.log(pos["gap"]), 1)
                    xs = np.geomspace(st.index.min(), st.index.max(), 30)
                    a1.plot(xs, np.exp(icpt) * xs**slope, color=_color(opt), linewidth=1, label=f"{opt} fit: slope {slope:.2f}")
                if anchor is None or opt == "clion":
                    anchor = (float(st.index[0]), float(st["mean"].iloc[0]), float(st.index[-1]))
                term = g.groupby("N")["log10_term_min_tau"].mean()
                if term.notna().any():
                    a2.plot(term.index, term.values, MARKERS[i % len(MARKERS)] + "-", color=_color(opt),
                            label=f"{opt}: τ = min τ of the run")
            if anchor is not None:
                x0, y0, x1 = anchor
                xs = np.geomspace(x0, x1, 20)
                a1.plot(xs, y0 * (xs / x0) ** -1.0, label="∝ 1/N (CLion's bound)", **REF)
            _loglog(a1)
            a1.set(xlabel="training-set size N", ylabel="final test loss − train loss", title=f"{problem}: generalization gap")
            if a1.get_legend_handles_labels()[0]:
                a1.legend(loc="best")
            _logx(a2)
            a2.set(xlabel="training-set size N", ylabel="log10 (1/(N·τ^T)) = −log10 N − T·log10 τ",
                   title="Lion's bound term (THEORY §7)")
            if a2.get_legend_handles_labels()[0]:
                a2.legend(loc="best")
            else:
                a2.text(0.5, 0.5, "τ not logged", transform=a2.transAxes, ha="center", color="0.45")
            paths.append(_save(fig, out_dir, figure_stem("generalization", t.iloc[0])))
    return paths


def plot_stability(runs, out_dir):
    """THEORY §7 stability probe: ‖x_t − x'_t‖₂ vs step (log-log) for the pairs that differ in one
    training example; one panel per N, seed mean thick, each seed thin, one colour per optimizer."""
    from lionconv.analysis.preset_claims import stability_table
    table = stability_table(runs)
    table = table[table["distance"] > 0]
    paths = []
    for problem, t in table.groupby("problem", sort=True):
        ns = sorted(t["N"].unique())
        with plt.rc_context(STYLE):
            fig, axes = _wide(len(ns), max_cols=2)
            for ax, n in zip(axes[0], ns):
                for opt, g in t[t["N"] == n].groupby("optimizer", sort=True):
                    for _, s in g.groupby("seed"):
                        ax.plot(s["step"] + 1, s["distance"], color=_color(opt), linewidth=0.6, alpha=0.5)
                    mean = g.groupby("step")["distance"].apply(lambda v: float(np.exp(np.log(v).mean())))
                    ax.plot(mean.index + 1, mean.values, color=_color(opt), linewidth=1.6, label=f"{opt} (geometric mean over seeds)")
                _loglog(ax)
                ax.set(xlabel="step t + 1", ylabel="‖x_t − x'_t‖₂ (one example replaced)", title=f"{problem}, N={n:g}")
                ax.legend(loc="best")
            paths.append(_save(fig, out_dir, figure_stem("stability", t.iloc[0])))
    return paths


def make_figures(runs: pd.DataFrame, load_metrics, out_dir, checks=None) -> list[Path]:
    """All figures for the usable runs into out_dir; returns the PNG paths."""
    if runs.empty:
        return []
    out_dir = Path(out_dir)
    return (plot_rate_K(runs, checks, out_dir) + plot_rate_d(runs, checks, out_dir) + plot_ratio(runs, out_dir)
            + plot_kkt(runs, load_metrics, out_dir) + plot_training(runs, load_metrics, out_dir)
            + plot_feasibility(runs, load_metrics, out_dir) + plot_constants_d(runs, out_dir)
            + plot_negative_controls(runs, load_metrics, out_dir) + plot_clion_gates(runs, load_metrics, out_dir)
            + plot_lion_vs_sgd(runs, load_metrics, out_dir) + plot_generalization(runs, load_metrics, out_dir)
            + plot_stability(runs, out_dir))
