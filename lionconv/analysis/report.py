"""REPORT.md, the verdict table (Markdown + CSV) and each claim's table, for one sweep folder.

    write_report("results/runs/rate_in_K", claims=[rate_in_K_module, bound_module])

`claims` are claim modules (the interface is in lionconv/claims/__init__.py): this core never imports
one. Every path written into the report is relative to the output folder, and figures are linked by
their PNG only (PDFs are not committed).
"""
from __future__ import annotations

import datetime
import math
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lionconv.analysis.load import (PROBLEM_KINDS, load_metrics, load_runs, load_tensor_metrics,
                                    safe_loader)
from lionconv.analysis.verdict import KINDS, MIN_SEEDS, VERDICT_COLUMNS

MAX_TABLE_ROWS = 40
KIND_TITLES = {"theory": "Theory claims", "sanity": "Sanity checks (exact algebra, closed forms, invariants)",
               "context": "Context (reported, no claim)"}

HOW_TO_READ = f"""\
Each verdict row is one claim checked on one set of runs of this preset that differ only in the
swept variable (and the seed). Its **kind** says what a "yes" means (THEORY §10): *theory* rows are
claims of the papers that data violating them would fail (each rule has a control test that makes it
say "no"); *sanity* rows check exact algebra, closed-form constants or implementation invariants (they
cannot fail on correct code); *context* rows report a number with no claim. "yes" needs the whole
interval inside the accepted region, "no" the whole interval outside it, anything else is "unclear";
the **interval** column names it: a seed bootstrap needs ≥ {MIN_SEEDS} seeds to decide, an OLS-t
interval or a seed range on fewer seeds can say at most "unclear", an exact (deterministic) rule
decides on its value. Figures are log-log where a rate is shown: points are seed means with min–max
bars, solid lines the fits, dotted grey lines the theory rate, dashed lines the bounds. Diverged,
unfinished and broken runs are listed above and never enter a fit."""


class NoRunsError(ValueError):
    """The runs folder is missing or holds no run."""


@dataclass(frozen=True)
class RunData:
    """What a claim's table is built from: the usable runs and the loaders of their per-step tables
    (each returns None, never raises, for an unreadable file)."""
    runs: pd.DataFrame
    metrics: object           # metrics(run_dir, columns=None) -> DataFrame | None
    tensor_metrics: object    # tensor_metrics(run_dir, columns=None) -> DataFrame | None


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


def verdict_frame(rows, claim_name: str | None = None) -> pd.DataFrame:
    """The rows as a table, VERDICT_COLUMNS, with claim_module (the claim module's NAME) first."""
    frame = pd.DataFrame([r.as_dict() for r in rows], columns=VERDICT_COLUMNS)
    frame.insert(0, "claim_module", claim_name)
    return frame


def verdict_markdown(v: pd.DataFrame, evidence: bool = True) -> str:
    """The verdict table as Markdown, the CI written as [low, high]."""
    if v.empty:
        return "_(none)_\n"
    shown = v.assign(ci=[f"[{_fmt(a)}, {_fmt(b)}]" if not math.isnan(a) else "—" for a, b in zip(v.ci_low, v.ci_high)])
    cols = ["claim", "scope", "theory", "measured", "ci", "interval", "holds"] + (["evidence"] if evidence else [])
    return markdown_table(shown[[c for c in ["preset"] + cols if c in shown]].rename(columns={"ci": "95% CI"}))


def kind_sections(v: pd.DataFrame, level: str = "###", evidence: bool = True) -> list[str]:
    """One heading and table per kind (theory first); kinds without rows are left out."""
    out = []
    for kind in KINDS:
        sub = v[v["kind"] == kind]
        if not sub.empty:
            out += [f"{level} {KIND_TITLES[kind]} ({len(sub)} rows)", "", verdict_markdown(sub, evidence), ""]
    return out


def counts(v: pd.DataFrame, kind: str = "theory") -> str:
    """'yes: 3, no: 1, unclear: 2' for the rows of one kind."""
    held = v.loc[v["kind"] == kind, "holds"].astype(str).value_counts().to_dict()
    return ", ".join(f"{k}: {held[k]}" for k in ("yes", "no", "unclear", "n.a.") if k in held) or "none"


def rule_text(claim) -> str:
    """A claim's rule for the report: its docstring, then each threshold with its value and reason."""
    doc = " ".join((claim.__doc__ or "").strip().split())
    lines = [f"- **{claim.NAME}** (THEORY {claim.THEORY}; presets {', '.join(claim.PRESETS)}): {doc}"]
    lines += [f"  - `{name}` = {float(t):g}: {t.reason}" for name, t in claim.THRESHOLDS.items()]
    return "\n".join(lines)


def _status_table(runs: pd.DataFrame) -> pd.DataFrame:
    kind = runs["issue"].where(~runs["usable"], "used").str.split(":").str[0]
    table = pd.crosstab(runs["optimizer"].fillna("?").astype(str), kind)
    columns = ["used", *PROBLEM_KINDS]
    for col in columns:
        if col not in table:
            table[col] = 0
    return table[columns].reset_index()


def _csv_ready(t: pd.DataFrame, out: Path) -> pd.DataFrame:
    """A claim table for its CSV: tuple columns dropped, run folders and every other absolute path
    (such as cfg.out_dir) relative to the output folder."""
    t = t.drop(columns=[c for c in t.columns if t[c].map(lambda v: isinstance(v, tuple)).any()])
    if "run_dir" in t:
        t = t.assign(run_dir=[os.path.relpath(p, out) for p in t["run_dir"]])
    absolute = lambda v: isinstance(v, str) and os.path.isabs(v)
    for col in [c for c in t.columns if not pd.api.types.is_numeric_dtype(t[c]) and t[c].map(absolute).any()]:
        t = t.assign(**{col: [os.path.relpath(v, out) if absolute(v) else v for v in t[col]]})
    return t


def portable_argv(argv, base, repo=None) -> list[str]:
    """argv with every absolute path in it (an argument, or the value of `key=value` / `--opt=value`)
    made relative: to the repository when inside it (commands run from its root), else to `base`
    (the results or output folder). Results never name a folder of the machine that made them."""
    repo = Path(repo) if repo is not None else Path(__file__).resolve().parents[2]

    def relative(value: str) -> str:
        if not os.path.isabs(value):
            return value
        path = Path(value).resolve()
        return os.path.relpath(path, repo if path.is_relative_to(repo.resolve()) else Path(base).resolve())

    out = []
    for arg in map(str, argv):
        key, sep, value = arg.partition("=")
        out.append(f"{key}={relative(value)}" if sep and not os.path.isabs(arg) else relative(arg))
    return out


def analyse(claims, runs: pd.DataFrame, problems: list, root, out: Path, n_boot=2000, seed=0, figures=True):
    """Each claim's table, verdict rows and figures -> (verdicts frame, {NAME: table}, [figure PNGs])."""
    usable = runs[runs["usable"]].reset_index(drop=True) if not runs.empty else runs
    data = RunData(usable, safe_loader(load_metrics, problems, root), safe_loader(load_tensor_metrics, problems, root))
    frames, tables, figs = [], {}, []
    for claim in claims:
        table = claim.table(data)
        tables[claim.NAME] = table
        frames.append(verdict_frame(claim.verdicts(table, n_boot=n_boot, seed=seed), claim.NAME))
        if figures and not table.empty:
            figs += claim.figures(table, data, out / "figures")
    dup = sorted({p.name for p in figs if figs.count(p) > 1})
    if dup:
        raise RuntimeError(f"two figures were written to the same file: {dup}")
    verdicts = pd.concat(frames, ignore_index=True) if frames else verdict_frame([])
    return verdicts, tables, figs


@dataclass(frozen=True)
class Analysis:
    """What write_analysis wrote: the REPORT.md, the verdict rows (as in verdicts.csv), the figure PNGs."""
    report: Path
    verdicts: pd.DataFrame
    figures: list


def write_report(runs_dir, claims, out_dir=None, argv=None, n_boot=2000, seed=0, figures=True) -> Path:
    """write_analysis(...).report: the path of the REPORT.md written."""
    return write_analysis(runs_dir, claims, out_dir, argv, n_boot, seed, figures).report


def write_analysis(runs_dir, claims, out_dir=None, argv=None, n_boot=2000, seed=0, figures=True) -> Analysis:
    """Analyse the runs under runs_dir with the given claim modules; write REPORT.md, verdicts.{md,csv},
    runs.csv, <claim>.csv per claim and figures/ into out_dir (default runs_dir/analysis)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise NoRunsError(f"RUNS_DIR '{runs_dir}' does not exist or is not a folder")
    runs, problems = load_runs(runs_dir)
    if runs.empty:
        raise NoRunsError(f"no runs under '{runs_dir}' (no folder with summary.json or config.yaml)")
    out = Path(out_dir) if out_dir is not None else runs_dir / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    verdicts, tables, figs = analyse(claims, runs, problems, runs_dir, out, n_boot, seed, figures)
    verdicts.to_csv(out / "verdicts.csv", index=False)
    (out / "verdicts.md").write_text("\n".join(kind_sections(verdicts)))
    _csv_ready(runs, out).to_csv(out / "runs.csv", index=False)
    for name, table in tables.items():
        _csv_ready(table, out).to_csv(out / f"{name}.csv", index=False)

    argv = portable_argv(sys.argv if argv is None else argv, out)
    shown_dir = os.path.relpath(runs_dir.resolve(), out.resolve())
    md = [f"# lionconv analysis: {', '.join(c.NAME for c in claims)}", "",
          f"Runs: `{shown_dir}` (relative to this folder). Made by `{shlex.join(argv)}` on "
          f"{datetime.datetime.now().isoformat(timespec='seconds')}.", "",
          f"## Runs\n\n{len(runs)} runs found, {int(runs['usable'].sum())} used in the fits.\n",
          markdown_table(_status_table(runs))]
    if problems:
        md += ["### Left out of the fits", ""]
        md += [f"- `{p.run}` — **{p.kind}**: {p.reason}" for p in problems] + [""]
    md += ["## Verdicts", "", f"Theory rows: {counts(verdicts)}.", ""]
    md += kind_sections(verdicts)
    md += ["Also as `verdicts.csv` / `verdicts.md`.", "", "### Rules", "", "\n".join(rule_text(c) for c in claims), ""]
    for claim in claims:
        table = tables[claim.NAME]
        if not table.empty:
            md += [f"## Table of {claim.NAME}", "", markdown_table(_csv_ready(table, out).drop(
                columns=["run_dir", "figure"], errors="ignore"), MAX_TABLE_ROWS), f"Full table: `{claim.NAME}.csv`.", ""]
    if figs:
        md += ["## Figures", ""]
        md += [f"### {p.stem}\n\n![{p.stem}]({p.relative_to(out).as_posix()})\n" for p in figs]
    md += ["## How to read this", "", HOW_TO_READ, ""]
    report = out / "REPORT.md"
    report.write_text("\n".join(md))
    return Analysis(report, verdicts, figs)
