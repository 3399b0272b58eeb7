"""REPORT.md, the verdict table (Markdown + CSV) and the side tables of one sweep folder."""
from __future__ import annotations

import datetime
import math
import shlex
import sys
from pathlib import Path

import pandas as pd

from lionconv import theory
from lionconv.analysis.claims import (TOLERANCE, bound_checks, evaluate_claims, ratio_table,
                                      tensor_ratio_table)
from lionconv.analysis.load import (PROBLEM_KINDS, load_metrics, load_runs, load_tensor_metrics,
                                    safe_loader)
from lionconv.analysis.plots import make_figures
from lionconv.analysis.preset_claims import RULE, side_tables

MAX_TABLE_ROWS = 40

RULES = f"""\
- **Rate in K** (Lion, CLion, SignSGD; horizon schedule): OLS slope a of log(average measure) on
  log K, measure G_λ if λ > 0 else ‖∇f‖₁. The theorem is an upper bound O(K^-1/4), so faster decay
  is allowed: *yes* if a ≤ −0.25 + {TOLERANCE['rate_K']} and no run with known Δ, L, σ exceeds its
  bound; *no* if the whole CI lies above −0.25 + {TOLERANCE['rate_K']} or some run exceeds its bound;
  *unclear* otherwise.
- **Rate in d** (fixed K): slope b of the same average on log d; *yes* if b ≤ 0.5 + {TOLERANCE['rate_d']},
  *no* if the CI lies above it, *unclear* otherwise — only on families whose Δ, L, σ do not grow
  with d (scaled_separable, or estimated constants within a factor 1.5). The naive family is the
  contrast row (n.a.).
- **ℓ1/ℓ2 ratio**: slope s of log(‖v‖₁/‖v‖₂) on log d; *yes* if |s − 0.5| ≤ {TOLERANCE['ratio']}, *no* if the CI
  misses [0.5 − {TOLERANCE['ratio']}, 0.5 + {TOLERANCE['ratio']}], *unclear* otherwise.
- **Bound**: THEORY §4's bound_template with each run's own K, d, η, β, λ and ‖e0‖₂ = ‖∇f(x0)‖₂;
  *yes* if every checkable run is under it (per run — stricter than the theorem, which bounds the
  expectation). Slack = bound / measured. SGD runs are never checked (the Lion bound does not apply).
- **Box envelope** (Lion, SignSGD, λ > 0): every logged ‖x_k‖∞ ≤ 1/λ + (1−ηλ)^k(‖x0‖∞ − 1/λ)
  (THEORY §3, exact algebra; relative tolerance 1e-5). *no* means an implementation bug.
- **§3 feasibility** (Lion, SignSGD, λ > 0, runs with λ‖x0‖∞ > 1 only): v_k = (λ‖x_k‖∞ − 1)₊ must stay
  under the envelope (1−ηλ)^k·v0 (relative tolerance {RULE['envelope_rtol']:g} on ‖x‖∞) and cannot reach 0
  before k_min = ln((λ‖x0‖∞+1)/2)/−ln(1−ηλ) (each step moves a coordinate by at most η(1+λ|x_i|));
  *yes* if under the envelope, never early, and 0 reached within K in every run; *unclear* if some run
  had not reached 0 (the envelope itself never does); *no* if above the envelope or earlier than k_min.
  measured = median k_reach/k_min. Rate row: slope of ln v_k on k while v_k > 0 over ln(1−ηλ);
  *yes* if the smallest ratio over runs ≥ {RULE['rate_ratio_min']}. The KKT-residual rate of these runs is the
  "rate in K: avg G_λ" row; runs that start outside the box are left out of the bound check (the bound
  assumes a feasible start) but not out of the rate fit.
- **§4 density** (Lion-family runs under an annealing schedule): r = ‖∇f‖₁/(√d‖∇f‖₂) averaged over
  logged steps; *yes* if its minimum over runs ≥ {RULE['r_dense']} (a vector with r ≥ ½ has effective support
  ≥ d/4) and, with a d sweep, the slope of ln r on ln d ≥ −{RULE['r_slope_tol']}; *no* if r < {RULE['r_dense']} and the
  slope's CI lies below −{RULE['r_slope_tol']}; *unclear* otherwise. The context row avg ‖∇f‖₂/(ΔLσ²/K)^¼ is n.a.
  (Arjevani's constant is unknown and the bound is for the worst-case instance).
- **§6 constants** across a d sweep: scaled family *yes* if max/min of each of Δ, L, σ ≤ {RULE['constants_ratio']};
  naive family (contrast): fitted exponents of Δ and σ on d must be 1 and ½ (judged like the ℓ1/ℓ2
  ratio, tolerance {RULE['exponent_tol']}); other problems n.a.
- **§8 negative controls** (Lion, λ = 0, f = ½‖θ‖²; *yes* = the control failed to converge as predicted).
  "late" = mean over the last {RULE['late_fraction']:.0%} of the steps. 2-cycle row: at the largest K, the last 4
  (consecutive) |f'_i| = ‖∇f‖₁/d must equal η/2 and all coordinates agree, relative tolerance
  {RULE['cycle_rtol_float64']:g} (float64) or {RULE['cycle_rtol_float32']:g} (float32: θ0 and η are rounded). Level row: *yes* if the late
  ‖∇f‖₁ ≥ {RULE['cycle_level_min']}·dη/2 at every K (any 2-cycle {{θ, θ−η}} around 0 has mean |f'| = η/2; a converging
  run would fall below it); with noise it is reported (n.a.). Contrast (horizon schedule, σ = 0):
  slope of (1/K)Σ‖∇f‖₁ and of the late ‖∇f‖₁ on K, *yes* if ≤ {RULE['converge_slope']} (CI rule as for rates).
  Constant β1 with noise: (i) slope(fixed β1) − slope(annealed) of (1/K)Σ‖∇f‖₁, *yes* if >
  {RULE['flatter_margin']}, *no* if < −{RULE['flatter_margin']}; (ii) slope of the late ‖∇f‖₁ on K, *yes* if > {RULE['flat_slope']}
  (levels off); else *no* if the floor 2√d(1−β1)σ is ≥ {RULE['floor_share']:.0%} of the run's bound at the largest K
  (the floor should show there), *unclear* if the K-decaying terms still dominate the bound.
- **§2 CLion gates**: the sign-branch fraction (mean over steps and seeds) may rise by at most
  {RULE['gate_tol']} between consecutive ν, and coordinate ≥ tensor ≥ global at each ν within {RULE['gate_tol']}
  (structural for a common c; runs at different ν follow different paths, hence the tolerance).
  Global gate: the per-step choice must match τ_k = min|c_j| ≥ ν at every logged step (definition).
  §2's remark, per ν: *yes* if the global fraction ≤ {RULE['global_almost_never']} where ν exceeds the median τ_k;
  n.a. where ν is below it (the gate is meant to pass there).
- **Lion vs SGD** (main paper): each optimizer's best lr_scale = lowest mean final training loss
  over seeds (configs with every seed finished); *yes* if every seed of Lion beats every seed of SGD
  (loss lower, test accuracy higher), *no* if the reverse, *unclear* if the seed ranges overlap.
- **§7 generalization**: slope of ln(test − train loss) on ln N over the runs on full training sets;
  CLion *yes* if ≤ −1 + {RULE['gap_tol']} (rate rule with CI), Lion/SignSGD n.a. (their bound O(1/(N·τ^T)) fixes
  no exponent); gaps ≤ 0 cannot be logged and are left out, counted in the evidence. Stability:
  runs with drop_index set are paired with the full-set run of the same seed and N; *yes* if
  CLion's final ‖x_T − x'_T‖₂ ≤ Lion's for every (N, seed), *no* if larger for every one, else *unclear*.
- **CI**: 95 %, bootstrap over whole seeds (≥ 4 seeds; half-widths stretched by √(G/(G−1))·t/z for
  few seeds), else the OLS t-interval. *n.a.*: the theory makes no claim there."""

HOW_TO_READ = """\
Each verdict row is one claim of THEORY.md checked on one set of runs that differ only in the
swept variable (and the seed). "measured" is a fitted exponent (or, for bounds, the smallest
slack bound/measured); the CI is the 95 % interval of that number. A rate claim is an upper
bound, so a measured exponent below the theory value is consistent with it; easy problems often
decay faster. Figures are log-log where a rate is shown: points are seed means with min–max bars,
solid lines the fits, dotted grey lines the theory rate, dashed lines the bounds. Diverged,
unfinished and broken runs are listed above and never enter a fit."""


class NoRunsError(ValueError):
    """The runs folder is missing or holds no run."""


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e9 else f"{v:.3g}"
    return str(v).replace("|", "\\|")


def markdown_table(df: pd.DataFrame, max_rows: int | None = None) -> str:
    """A pipe table; floats to 3 significant digits; a note when rows were cut."""
    if df.empty:
        return "_(none)_\n"
    shown = df if max_rows is None else df.head(max_rows)
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    if len(shown) < len(df):
        lines.append(f"\n_{len(df) - len(shown)} more rows in the CSV._")
    return "\n".join(lines) + "\n"


def verdict_frame(rows) -> pd.DataFrame:
    cols = ["claim", "scope", "theory", "measured", "ci_low", "ci_high", "holds", "evidence", "n"]
    return pd.DataFrame([r.as_dict() for r in rows], columns=cols)


def _verdict_markdown(v: pd.DataFrame) -> str:
    shown = v.assign(ci=[f"[{_fmt(a)}, {_fmt(b)}]" if not math.isnan(a) else "—" for a, b in zip(v.ci_low, v.ci_high)])
    return markdown_table(shown[["claim", "scope", "theory", "measured", "ci", "holds", "evidence"]]
                          .rename(columns={"ci": "95% CI"}))


def _status_table(runs: pd.DataFrame) -> pd.DataFrame:
    kind = runs["issue"].where(~runs["usable"], "used").str.split(":").str[0]
    table = pd.crosstab(runs["optimizer"].fillna("?").astype(str), kind)
    columns = ["used", *PROBLEM_KINDS]
    for col in columns:
        if col not in table:
            table[col] = 0
    return table[columns].reset_index()


def write_report(runs_dir, out_dir=None, argv=None, n_boot=2000, seed=0, figures=True, claims=None) -> Path:
    """Analyse every run under runs_dir; write REPORT.md, verdicts.{md,csv}, runs.csv, bounds.csv,
    ratios.csv, tensor_ratios.csv and figures/ into out_dir (default runs_dir/analysis)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise NoRunsError(f"RUNS_DIR '{runs_dir}' does not exist or is not a folder")
    runs, problems = load_runs(runs_dir)
    if runs.empty:
        raise NoRunsError(f"no runs under '{runs_dir}' (no folder with summary.json or config.yaml)")
    out = Path(out_dir) if out_dir is not None else runs_dir / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    usable = runs[runs["usable"]].reset_index(drop=True)
    loader = safe_loader(load_metrics, problems, runs_dir)

    rows = evaluate_claims(usable, loader, names=claims, n_boot=n_boot, seed=seed)
    checks = bound_checks(usable)
    figs = make_figures(usable, loader, out / "figures", checks) if figures else []
    verdicts = verdict_frame(rows)
    verdicts.to_csv(out / "verdicts.csv", index=False)
    (out / "verdicts.md").write_text(_verdict_markdown(verdicts))
    runs.to_csv(out / "runs.csv", index=False)
    checks.to_csv(out / "bounds.csv", index=False)
    ratios = ratio_table(usable)
    ratios.to_csv(out / "ratios.csv", index=False)
    tensors = tensor_ratio_table(usable, safe_loader(load_tensor_metrics, problems, runs_dir))
    tensors.to_csv(out / "tensor_ratios.csv", index=False)
    extra = side_tables(usable, loader)
    for stem, (_, table) in extra.items():
        table.to_csv(out / f"{stem}.csv", index=False)

    argv = sys.argv if argv is None else argv
    md = [f"# lionconv analysis: `{runs_dir}`", "",
          f"Made by `{shlex.join(map(str, argv))}` on {datetime.datetime.now().isoformat(timespec='seconds')}.", "",
          f"## Runs\n\n{len(runs)} runs found, {len(usable)} used in the fits.\n",
          markdown_table(_status_table(runs))]
    if problems:
        md += ["### Left out of the fits", ""]
        md += [f"- `{p.run}` — **{p.kind}**: {p.reason}" for p in problems] + [""]
    md += ["## Verdicts", "", _verdict_markdown(verdicts), "Also as `verdicts.csv` / `verdicts.md`.", "",
           "### Rules", "", RULES, ""]
    if not checks.empty:
        md += ["## Bound check (THEORY §4)", "",
               markdown_table(checks.drop(columns=["constants_kind"]), MAX_TABLE_ROWS), "Full table: `bounds.csv`.", ""]
    if not ratios.empty:
        refs = ", ".join(f"{k} {v:.3f}" for k, v in theory.RATIO_REFERENCE.items())
        md += ["## ℓ1/ℓ2 ratio r = ‖∇f‖₁/(√d‖∇f‖₂) (THEORY §5)", "",
               f"Large-d reference values: {refs}; an s-sparse vector has r ≤ √(s/d). "
               "r bounded away from 0 as d grows ⇔ ‖∇f‖₁/‖∇f‖₂ = Θ(√d).", "",
               markdown_table(ratios, MAX_TABLE_ROWS)]
        if not tensors.empty:
            md += ["Per tensor (averaged over logged steps and runs; all rows in `tensor_ratios.csv`):", "",
                   markdown_table(tensors, MAX_TABLE_ROWS)]
    for stem, (title, table) in extra.items():
        md += [f"## {title}", "", markdown_table(table, MAX_TABLE_ROWS), f"Full table: `{stem}.csv`.", ""]
    if figs:
        md += ["## Figures", ""]
        md += [f"### {p.stem}\n\n![{p.stem}]({p.relative_to(out).as_posix()}) "
               f"([pdf]({p.with_suffix('.pdf').relative_to(out).as_posix()}))\n" for p in figs]
    md += ["## How to read this", "", HOW_TO_READ, ""]
    report = out / "REPORT.md"
    report.write_text("\n".join(md))
    return report
