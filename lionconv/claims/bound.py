"""Under the bound: every Lion or CLion run with known Δ, L, σ stays under THEORY §4's bound_template
evaluated with the run's own K, d, η, β, λ and ‖e0‖₂ = ‖∇f(x0)‖₂ (m0 = 0). Checked per run, which is
stricter than the theorem (it bounds the expectation); *no* if any run is over its bound. The rule is
exact on the measured numbers. SignSGD's rows are context, marked vacuous: with β = 0 the bound keeps
the constant floor 4√d·σ, far above any measured average, so they cannot fail and confirm nothing. Runs that start outside the box or whose
step 0 was not logged are not checkable (context)."""
from __future__ import annotations

import math

import pandas as pd

from lionconv.analysis.bounds import bound_checks, bound_summary
from lionconv.analysis.groups import num
from lionconv.analysis.plots import BOUND, color, figure_stem, legend, loglog, plt, save, STYLE
from lionconv.analysis.verdict import EXACT, VerdictRow, ge, judge_exact

NAME = "bound"
THEORY = "§4"
PRESETS = ("rate_in_K", "rate_in_d", "kkt_constrained", "kkt_interior", "clion_rate")
THRESHOLDS: dict = {}     # no tolerance: slack = bound/measured ≥ 1 for every run


def table(data) -> pd.DataFrame:
    """bound_checks of the runs: one row per Lion-family run with known constants, plus its figure."""
    t = bound_checks(data.runs)
    t["run_dir"] = t["run"].map(dict(zip(data.runs["run"], data.runs["run_dir"]))) if len(t) else []
    t["figure"] = [figure_stem(NAME, problem=p, wd=w) for p, w in zip(t["problem"], t["weight_decay"])]
    return t


def judge_bound(slacks) -> str:
    """yes if every slack ≥ 1, no if the smallest is < 1 (exact rule on the measured numbers)."""
    return judge_exact(float(min(slacks)), ge(1.0))


def verdicts(table: pd.DataFrame, n_boot=2000, seed=0) -> list[VerdictRow]:
    rows = []
    for (opt, problem, lam), g in table.groupby(["optimizer", "problem", "weight_decay"], sort=True):
        scope = f"{opt} · {problem}" + (f" · λ={num(lam)}" if lam > 0 else "")
        summary, all_under = bound_summary(g)
        label = g["measure"].iloc[0]
        if all_under is None:
            notes = "; ".join(sorted(set(g["note"])))
            rows.append(VerdictRow(f"under the bound: {label}", "context", scope, "measured ≤ bound", math.nan,
                                   evidence=f"{len(g)} runs, none checkable: {notes}"))
            continue
        done = g[g["under"].notna()]
        kinds = ", ".join(sorted({str(k) for k in done["constants_kind"]}))
        worst = float(done["slack"].min())
        evidence = f"{summary}; constants {kinds}; figures/{g['figure'].iloc[0]}.png; bound.csv"
        if opt == "signsgd":     # β = 0: the bound's (1−β1)σ and √(1−β2)σ terms never vanish
            floor = float((4 * done["d"].astype(float) ** 0.5 * done["sigma"].astype(float)).min())
            rows.append(VerdictRow(
                f"under the bound: {label}", "context", scope,
                "vacuous: β = 0 leaves the constant floor 4√d·σ in the bound, not a confirmation", worst, worst, worst,
                EXACT, "n.a.", f"floor 4√d·σ ≥ {floor:.3g}; {evidence}", len(done)))
            continue
        rows.append(VerdictRow(
            f"under the bound: {label}", "theory", scope,
            "slack = bound/measured ≥ 1 for every run", worst, worst, worst, EXACT, judge_bound(done["slack"]),
            evidence, len(done)))
    return rows


def figures(table: pd.DataFrame, data, out_dir) -> list:
    """Slack bound/measured per run vs K (log-log), one figure per (problem, λ); 1 dashed."""
    paths = []
    for stem, t in table[table["slack"].notna()].groupby("figure", sort=True):
        with plt.rc_context(STYLE):
            fig, ax = plt.subplots()
            x = "K" if t["K"].nunique() > 1 else "d"
            for (opt, other), g in t.groupby(["optimizer", "d" if x == "K" else "K"], sort=True):
                ax.plot(g[x], g["slack"], "o", color=color(opt), label=f"{opt}, {'d' if x == 'K' else 'K'}={num(other)}")
            ax.axhline(1.0, color="0.45", label="bound = measured", **BOUND)
            loglog(ax)
            ax.set(xlabel="iterations K" if x == "K" else "dimension d", ylabel="slack = bound / measured (per run)",
                   title=f"{t['problem'].iloc[0]}: THEORY §4 bound")
            legend(ax, "no data", loc="best")
            paths.append(save(fig, out_dir, stem))
    return paths
