"""§8 negative controls: runs that must FAIL to converge, on f = ½‖θ‖², λ = 0 (*yes* = the control
failed as THEORY predicts). Cells of the preset (conf/control/):
- Skewed two-point noise (+a w.p. b/(a+b), −b otherwise), started at the minimiser, "late" = the last
  `skewed_late_fraction` of the steps. Lion with β1 fixed: late mean θ (the `grad_mean` column) at the
  largest K within `fixed_point_tol`·a of θ* = −(1−β1)·a, the whole seed range; and late mean |f'|
  flat in K (slope on K, whole CI > `flat_slope`). SignSGD: late mean θ within `fixed_point_tol`·a
  of −a. Annealed β1 (horizon): slope of the late |f'| on K, whole CI ≤ `converge_slope`.
- Constant η, β, exact gradient, for every θ0 of the preset: late mean ‖∇f‖₁ (last `late_fraction`)
  ≥ `cycle_level_min`·dη/2 at every K (exact; the level, not the cycle). A sanity row checks the exact
  2-cycle |f'_i| = η/2 where θ0 ≡ η/2 (mod η) (`cycle_rtol_*`). Contrast (horizon, σ = 0): slope on K
  of (1/K)Σ‖∇f‖₁ and of the late ‖∇f‖₁ ≤ `converge_slope` (exact).
- Constant β1 with symmetric (Gaussian) noise is no control: its slope is context ("converges anyway").
The σ = 0 runs are deterministic (exact rows); the noisy rows need ≥ 5 seeds to decide."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lionconv import theory
from lionconv.analysis.groups import finite, fit_text, fit_xy, g3, is_constant_schedule, num
from lionconv.analysis.plots import BOUND, MARKERS, STYLE, figure_stem, legend, loglog, plt, save, wide
from lionconv.analysis.verdict import (EXACT, Threshold, VerdictRow, fit_interval, ge, judge, judge_exact,
                                       judge_fit, le, within)

NAME = "negative_controls"
THEORY = "§8"
PRESETS = ("negative_controls", "negative_controls_exact")
THRESHOLDS = {
    "late_fraction": Threshold(0.1, "the last 10 % of the steps: past the transient at every K of the preset"),
    "skewed_late_fraction": Threshold(0.5, "the issue's Bar: the second half of the steps; from θ0 = 0 the fixed "
                                           "point is reached within ≈ (1−β1)a/η ≪ K/2 steps at every K ≥ 1e2"),
    "fixed_point_tol": Threshold(0.05, "in units of a: β2 = 1 − 1/√K leaves m ≠ ∇f, which moves the fixed point "
                                       "by a few % (THEORY §8's transcription: 0.49–0.50 at K ≥ 1e3); the Bar's 0.05"),
    "cycle_rtol_float64": Threshold(1e-6, "float64 rounding of θ0 − kη over ≤ 1e4 steps"),
    "cycle_rtol_float32": Threshold(1e-3, "θ0 − kη rounded in float32 (≈ 1e-4 relative offset)"),
    "cycle_level_min": Threshold(0.9, "|θ_k| + |θ_k+1| ≥ η forces a late mean ≥ η/2 up to one step of the window; a "
                                      "converging run falls far below, a 10 % margin covers the window's phase"),
    "converge_slope": Threshold(-0.2, "the K^-1/4 rate with the rate claim's pre-asymptotic drift (−0.22) and "
                                      "margin; a stalled run has slope ≈ 0"),
    "flat_slope": Threshold(-0.1, "a floor: the late |f'| falls by < 20 % over the 2 decades of K"),
}


def schedule_kind(row) -> str:
    """The preset cell of a run (THEORY §8): 'constant', 'horizon' (σ = 0), 'skewed_fixed_beta1',
    'skewed_annealed', 'skewed_signsgd', 'symmetric_fixed_beta1', 'symmetric_annealed'."""
    if is_constant_schedule(row.get("schedule")):
        return "constant"
    fixed = finite(row.get("cfg.schedule.beta1"))
    if str(row.get("cfg.problem.noise", "gaussian")) == "two_point":
        if row.get("optimizer") == "signsgd":
            return "skewed_signsgd"
        return "skewed_fixed_beta1" if fixed else "skewed_annealed"
    if _noise_sigma(row) > 0:
        return "symmetric_fixed_beta1" if fixed else "symmetric_annealed"
    return "fixed_beta1" if fixed else str(row.get("schedule"))


def _noise_sigma(row) -> float:
    s = row.get("cfg.problem.sigma")
    return float(s) if finite(s) else float(row.get("sigma", math.nan))


def late_window(m: pd.DataFrame, K: float, fraction=None) -> pd.DataFrame:
    """Rows of the last `fraction` (default THRESHOLDS['late_fraction']) of the K steps; at least the last 2 logged rows."""
    fraction = float(THRESHOLDS["late_fraction"]) if fraction is None else float(fraction)
    start = K - max(2, math.ceil(fraction * K))
    late = m[m["step"] >= start]
    return late if len(late) >= 2 else m.tail(2)


def table(data) -> pd.DataFrame:
    """Lion and SignSGD with λ = 0 on the quadratic θ²/2 (THEORY §8), one row per run.

    late_grad_l1 = mean ‖∇f‖₁ over the last 10 % of the steps; cycle_level = d·η/2 (the mean of |f'_i|
    over any 2-cycle {θ, θ−η} around 0 is η/2); last4 = |f'_i| = ‖∇f‖₁/d at the last 4 logged steps
    (consecutive when last4_consecutive), last4_dev = their max |·/(η/2) − 1|, nonuniform = max
    relative gap between ‖∇f‖₁/d and ‖∇f‖₂/√d there (0 iff all |f'_i| are equal); init = θ0.
    Skewed noise: late_abs = mean ‖∇f‖₁/d and late_theta = mean grad_mean (= mean θ) over the last
    `skewed_late_fraction` of the steps; theta_star = −(1−β1)·a (SignSGD: −a; annealed β1: 0).
    """
    runs = data.runs
    cols = ["figure", "run", "run_dir", "optimizer", "problem", "d", "K", "seed", "kind", "sigma", "noise_a",
            "noise_b", "lr", "beta1", "beta2", "dtype", "init", "avg_grad_l1", "late_grad_l1", "late_abs",
            "late_theta", "theta_star", "cycle_level", "last4", "last4_consecutive", "last4_dev", "nonuniform"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    cand = runs[runs["optimizer"].isin(["lion", "signsgd"]) & (runs["problem"] == "quadratic")
                & (runs["weight_decay"] == 0)]
    out = []
    for _, r in cand.iterrows():
        m = data.metrics(r["run_dir"], ["step", "grad_l1", "grad_l2", "grad_mean"])
        if m is None or m.empty:
            continue
        m = m.sort_values("step")
        d, K, lr = float(r["d"]), float(r["K"]), float(r["lr"])
        kind = schedule_kind(r)
        if r["optimizer"] == "signsgd" and kind != "skewed_signsgd":
            continue
        tail = m.tail(4)
        per = tail["grad_l1"].to_numpy(dtype=float) / d
        l2 = tail["grad_l2"].to_numpy(dtype=float) / math.sqrt(d)
        half = late_window(m, K, THRESHOLDS["skewed_late_fraction"])
        a = float(r.get("cfg.problem.noise_a", math.nan))
        if kind == "skewed_fixed_beta1":
            star = theory.skewed_fixed_point(float(r["beta1"]), a)
        elif kind == "skewed_signsgd":
            star = theory.skewed_fixed_point(0.0, a)
        else:
            star = 0.0 if kind.startswith("skewed") else math.nan
        out.append(dict(
            figure=figure_stem(NAME, problem=r["problem"], d=r["d"]), run=r["run"], run_dir=r["run_dir"],
            optimizer=r["optimizer"], problem=r["problem"], d=d, K=K, seed=r["seed"], kind=kind, sigma=_noise_sigma(r),
            noise_a=a, noise_b=float(r.get("cfg.problem.noise_b", math.nan)), lr=lr,
            beta1=r["beta1"], beta2=r["beta2"], dtype=str(r.get("dtype")), init=float(r.get("cfg.problem.init", math.nan)),
            avg_grad_l1=r["avg_grad_l1"], late_grad_l1=float(late_window(m, K)["grad_l1"].mean()),
            late_abs=float(half["grad_l1"].mean()) / d, late_theta=float(half["grad_mean"].mean()), theta_star=star,
            cycle_level=d * theory.two_cycle_amplitude(lr), last4=tuple(float(v) for v in per),
            last4_consecutive=bool(len(tail) == 4 and np.all(np.diff(tail["step"].to_numpy()) == 1)),
            last4_dev=float(np.max(np.abs(per / theory.two_cycle_amplitude(lr) - 1.0))),
            nonuniform=float(np.max(np.abs(per - l2) / np.maximum(per, 1e-300)))))
    return pd.DataFrame(out, columns=cols)


def _slope(g, col, n_boot, seed):
    return fit_xy(g["K"], g[col], g["seed"], n_boot, seed)


def _seed_range(values) -> tuple[float, float, str]:
    """(min, max, interval name) over seeds: a distribution-free interval for the median (verdict.decisive)."""
    n = len(values)
    return float(np.min(values)), float(np.max(values)), f"seed range ({n} seed{'s' if n != 1 else ''})"


def _per_k(g, col) -> str:
    st = g.groupby("K")[col].mean()
    return ", ".join(f"K={num(k)}: {g3(v)}" for k, v in st.items())


def _constant_rows(base, figure, const, rows):
    """Constant η, β: the level per θ0 (theory, exact) and the exact 2-cycle where θ0 ≡ η/2 (mod η) (sanity)."""
    for (sigma, init), g in const.groupby(["sigma", "init"], sort=True, dropna=False):
        g = g.sort_values(["K", "seed"])
        lr = float(g["lr"].iloc[0])
        phase = init / lr if finite(init) else math.nan
        scope = (f"{base} · constant η={num(lr)}, β=({num(g['beta1'].iloc[0])}, {num(g['beta2'].iloc[0])}) · "
                 f"σ={num(sigma)} · θ0/η={phase:.4g}")
        if sigma == 0 and finite(phase) and abs((phase % 1.0) - 0.5) < 1e-9:
            big = g[g["K"] == g["K"].max()]
            rtol = float(THRESHOLDS["cycle_rtol_float64"]) if (big["dtype"] == "float64").all() \
                else float(THRESHOLDS["cycle_rtol_float32"])
            dev = float(max(big["last4_dev"].max(), big["nonuniform"].max()))
            ok = bool(big["last4_consecutive"].all()) and dev <= rtol
            r0 = big.iloc[0]
            last = ", ".join(f"{v:.6g}" for v in r0["last4"])
            rows.append(VerdictRow(
                "§8 control: exact 2-cycle, |f'_i| = η/2 at the last steps", "sanity", scope,
                f"|f'_i| = η/2 = {g3(r0['lr'] / 2)} at every late step (relative tol {rtol:g})", dev,
                dev, dev, EXACT, "yes" if ok else "no",
                evidence=(f"measured = max |(|f'_i|)/(η/2) − 1| over the last 4 steps at K={num(r0['K'])} "
                          f"(and the spread across coordinates); last 4 |f'_i|: {last}; dtype {r0['dtype']}; {figure}"),
                n=len(big)))
        levels = g["late_grad_l1"] / g["cycle_level"]
        level = float(levels.min())
        rows.append(VerdictRow(
            "§8 control: constant η does not converge (late ‖∇f‖₁ ≥ dη/2)", "theory" if sigma == 0 else "context",
            scope,
            "late ‖∇f‖₁/(dη/2) ≥ 1 at every K (annealing η is necessary)" if sigma == 0 else
            "reported: THEORY's level is for the exact gradient", level, level, level, EXACT,
            judge_exact(level, ge(float(THRESHOLDS["cycle_level_min"]))) if sigma == 0 else "n.a.",
            evidence=(f"measured = min over K of late ‖∇f‖₁ (last {THRESHOLDS['late_fraction'].value:.0%} of steps) "
                      f"/ (dη/2 = {g3(g['cycle_level'].iloc[0])}); late ‖∇f‖₁/(dη/2) per K: "
                      + ", ".join(f"K={num(r.K)}: {r.late_grad_l1 / r.cycle_level:.4g}" for r in g.itertuples())
                      + f"; {figure}"), n=len(g)))


def _skewed_rows(base, figure, t, rows, n_boot, seed):
    """Skewed two-point noise: the fixed points of fixed-β1 Lion and SignSGD, the floor, the annealed contrast."""
    skewed = t[t["kind"].str.startswith("skewed")]
    for (a, b), s in skewed.groupby(["noise_a", "noise_b"], sort=True):
        tol = float(THRESHOLDS["fixed_point_tol"]) * a
        window = f"last {THRESHOLDS['skewed_late_fraction'].value:.0%} of the steps"
        for kind, who in (("skewed_fixed_beta1", "Lion, β1 fixed"), ("skewed_signsgd", "SignSGD")):
            g = s[s["kind"] == kind].sort_values(["K", "seed"])
            if g.empty:
                continue
            beta1 = float(g["beta1"].iloc[0]) if kind == "skewed_fixed_beta1" else 0.0
            scope = f"{base} · {who}" + (f" β1={num(beta1)}" if kind == "skewed_fixed_beta1" else "") + \
                    f" · two-point noise a={num(a)}, b={num(b)} · θ0 = 0"
            star = float(g["theta_star"].iloc[0])
            top = g[g["K"] == g["K"].max()]
            lo, hi, interval = _seed_range(top["late_theta"].to_numpy())
            rows.append(VerdictRow(
                f"§8 control: skewed noise, {who} settles at θ* = " + ("−(1−β1)·a" if beta1 else "−a"), "theory", scope,
                f"late mean θ within {tol:g} of θ* = {g3(star)}", float(top["late_theta"].mean()), lo, hi, interval,
                judge(lo, hi, within(star, tol), interval),
                evidence=(f"mean θ over coordinates and the {window} (grad_mean), at K={num(top['K'].iloc[0])}; "
                          f"per K: {_per_k(g, 'late_theta')}; late |f'| per K: {_per_k(g, 'late_abs')} "
                          f"(predicted {g3(abs(star))}); {figure}"), n=len(top)))
            if kind != "skewed_fixed_beta1" or g["K"].nunique() < 2:
                continue
            fit = _slope(g, "late_abs", n_boot, seed)
            if fit is not None:
                rows.append(VerdictRow(
                    "§8 control: skewed noise, β1 fixed: late |f'| ≈ (1−β1)·a flat in K", "theory", scope,
                    f"slope of late |f'| on K > {THRESHOLDS['flat_slope'].value} (a floor at {g3(abs(star))})",
                    fit.slope, fit.ci_low, fit.ci_high, fit_interval(fit), judge_fit(fit, ge(float(THRESHOLDS["flat_slope"]))),
                    f"late |f'| = ‖∇f‖₁/d over the {window}: {_per_k(g, 'late_abs')}; {figure}", fit.n))
        g = s[s["kind"] == "skewed_annealed"].sort_values(["K", "seed"])
        if g["K"].nunique() >= 2:
            fit = _slope(g, "late_abs", n_boot, seed)
            if fit is not None:
                rows.append(VerdictRow(
                    "§8 contrast: skewed noise, annealed β1 converges (late |f'| vs K)", "theory",
                    f"{base} · Lion, β1 = 1 − c1/√K · two-point noise a={num(a)}, b={num(b)} · θ0 = 0",
                    f"slope ≤ {THRESHOLDS['converge_slope'].value}", fit.slope, fit.ci_low, fit.ci_high,
                    fit_interval(fit), judge_fit(fit, le(float(THRESHOLDS["converge_slope"]))),
                    f"late |f'| per K: {_per_k(g, 'late_abs')}; late mean θ per K: {_per_k(g, 'late_theta')}; {figure}",
                    fit.n))


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    """THEORY §8. *yes* on a control row means the control failed to converge as THEORY predicts."""
    rows = []
    several_dtypes = table["dtype"].nunique() > 1
    for (problem, d, dtype), t in table.groupby(["problem", "d", "dtype"], sort=True):
        base = f"{problem} · d={num(d)}" + (f" · {dtype}" if several_dtypes else "")
        figure = f"figures/{t['figure'].iloc[0]}.png; negative_controls.csv"
        _constant_rows(base, figure, t[t["kind"] == "constant"], rows)
        # --- the converging contrast: horizon schedule (η and β annealed), noise-free
        horizon = t[t["kind"] == "horizon"]
        for sigma, g in horizon.groupby("sigma", sort=True):
            if sigma != 0 or g["K"].nunique() < 2:
                continue
            scope = f"{base} · Lion, horizon (annealed η, β1, β2) · σ=0"
            for label, col in (("(1/K)Σ‖∇f‖₁", "avg_grad_l1"), ("late ‖∇f‖₁", "late_grad_l1")):
                fit = _slope(g, col, n_boot, seed)
                if fit is None:
                    continue
                rows.append(VerdictRow(
                    f"§8 contrast: annealed schedule converges ({label} vs K)", "theory", scope,
                    # σ = 0: the runs are deterministic, so the slope is judged on its value and no
                    # sampling interval is shown (the OLS interval measures only lack of fit in K)
                    f"slope ≤ {THRESHOLDS['converge_slope'].value}", fit.slope, math.nan, math.nan,
                    EXACT, judge_exact(fit.slope, le(float(THRESHOLDS["converge_slope"]))),
                    f"{_per_k(g, col)}; OLS lack-of-fit interval {fit_text(fit)}; {figure}", fit.n))
        _skewed_rows(base, figure, t, rows, n_boot, seed)
        # --- constant β1 with symmetric noise: no control, it converges anyway (context)
        for kind, g in t[t["kind"].isin(["symmetric_fixed_beta1", "symmetric_annealed"])].groupby("kind", sort=True):
            g = g.sort_values(["K", "seed"])
            fit = _slope(g, "late_abs", n_boot, seed) if g["K"].nunique() >= 2 else None
            if fit is None:
                continue
            fixed = kind == "symmetric_fixed_beta1"
            rows.append(VerdictRow(
                "§8 context: constant β1, symmetric noise converges anyway" if fixed else
                "§8 context: annealed β1, symmetric noise", "context",
                f"{base} · Lion" + (f", β1={num(g['beta1'].iloc[0])} fixed" if fixed else ", annealed β1")
                + f" · Gaussian noise σ={num(g['sigma'].iloc[0])} · θ0 = {num(g['init'].iloc[0])}",
                "reported: E sign(μ + ξ) has the sign of μ for symmetric ξ, so no floor is forced",
                fit.slope, fit.ci_low, fit.ci_high, fit_interval(fit), "n.a.",
                f"slope of late |f'| on K {fit_text(fit)}; late |f'| per K: {_per_k(g, 'late_abs')}; {figure}", fit.n))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """Per-coordinate |f'_i| vs step for constant η (η/2 dashed), and the late |f'| per coordinate vs K per
    cell, with the 2-cycle level η/2 and the skewed fixed point |θ*| = (1−β1)·a dashed."""
    paths = []
    for stem, t in table.groupby("figure", sort=True):
        problem, d = t["problem"].iloc[0], t["d"].iloc[0]
        with plt.rc_context(STYLE):
            fig, axes = wide(2)
            a1, a2 = axes[0]
            const = t[(t["kind"] == "constant") & (t["sigma"] == 0)].sort_values(["K", "init"])
            if not const.empty:   # σ = 0 and a constant schedule: shorter runs are prefixes of the longest
                r = const.iloc[-1]
                m = data.metrics(r["run_dir"], ["step", "grad_l1"])
                if m is not None:
                    a1.plot(m["step"] + 1, m["grad_l1"] / d, color="C0", linewidth=0.8,
                            label=f"constant η={r['lr']:g}, θ0/η={r['init'] / r['lr']:.3g}, K={r['K']:g}")
            contrast = t[(t["kind"] == "horizon") & (t["sigma"] == 0)]
            if not contrast.empty:
                r = contrast.sort_values("K").iloc[-1]
                m = data.metrics(r["run_dir"], ["step", "grad_l1"])
                if m is not None:
                    a1.plot(m["step"] + 1, m["grad_l1"] / d, color="k", linewidth=0.8,
                            label=f"horizon (annealed), K={r['K']:g}")
            if not const.empty:
                a1.axhline(const["lr"].iloc[0] / 2, color="0.45", label="η/2 (THEORY §8 level)", **BOUND)
            loglog(a1)
            a1.set(xlabel="step k + 1", ylabel="|f'_i| = ‖∇f‖₁/d per coordinate", title=f"{problem}, d={d:g}: σ = 0")
            legend(a1, "no σ = 0 run in this sweep", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
            late = np.where(t["kind"].str.startswith(("skewed", "symmetric")), t["late_abs"], t["late_grad_l1"] / t["d"])
            t = t.assign(late_plot=late)
            for i, ((kind, init), g) in enumerate(t.groupby(["kind", "init"], sort=True)):
                st = g.groupby("K")["late_plot"].mean()
                label = kind.replace("_", " ") + (f", θ0/η={init / g['lr'].iloc[0]:.3g}" if kind == "constant" else "")
                a2.plot(st.index, st.values, MARKERS[i % len(MARKERS)] + "-", color=f"C{i}", label=label)
                if kind in ("skewed_fixed_beta1", "skewed_signsgd"):
                    a2.axhline(abs(g["theta_star"].iloc[0]), color=f"C{i}", label=f"|θ*| = {abs(g['theta_star'].iloc[0]):g}",
                               **BOUND)
            if not const.empty:
                a2.axhline(const["lr"].iloc[0] / 2, color="0.45", label="η/2", **BOUND)
            loglog(a2)
            a2.set(xlabel="iterations K", ylabel="late |f'| per coordinate",
                   title="does the late gradient vanish with K?")
            legend(a2, "no runs", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize="small")
            paths.append(save(fig, out_dir, stem))
    return paths
