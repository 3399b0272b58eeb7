"""Run a preset's sweep through the real command line, analyse it, write its REPORT.md and the top one.

    from lionconv import run_preset
    result = run_preset("negative_controls", jobs=2, out_dir="results", overrides=["steps=30"])
    result.verdicts          # the verdict rows (DataFrame, as in results/negative_controls/verdicts.csv)
    result.report            # results/negative_controls/REPORT.md; result.figures: its PNGs

scripts/reproduce.py (and `lionconv reproduce`, `lionconv list`) is `main` here: the command line and
the Python API are one code path. Runs go to <out_dir>/runs/<sweep>/ (resumable: a second call skips
finished runs), each preset's analysis to <out_dir>/<preset>/ (<out_dir>/paper/<preset>/ at paper
scale), the verdicts of every preset analysed so far to <out_dir>/REPORT.md.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lionconv import progress, runio
from lionconv.analysis import NoRunsError
from lionconv.analysis.report import counts, kind_sections, portable_argv, write_analysis
from lionconv.claims import claims_for, presets
from lionconv.resources import _PACKAGE

REPO = _PACKAGE.parent         # the checkout (the sweeps run from here), or site-packages in a wheel
PRESETS = list(presets())      # every preset some claim runs on (lionconv/claims/*.py PRESETS)
SCALES = ("small", "paper")
SCRIPT = "scripts/reproduce.py"  # how the reports name the command that made them
DESCRIPTION = "Reproduce every claim: run each experiment preset, analyse it, write results/REPORT.md."


@dataclass(frozen=True)
class PresetResult:
    """One preset reproduced: its verdict rows, REPORT.md, figure PNGs, runs folder and sweep time
    (None when only analysed)."""
    name: str
    verdicts: pd.DataFrame
    report: Path
    figures: list
    runs_dir: Path
    seconds: float | None


def closed_form(experiment: str, extra: list[str]) -> bool:
    """Whether every problem the preset sweeps has a stacked gradient (its sweep then runs on the
    batched launcher; a run with an option the batch lacks still runs alone in that process)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lionconv.config import register_configs
    from lionconv.problems import PROBLEMS
    from lionconv.resources import config_dir

    register_configs()
    parsed = OverridesParser.create().parse_overrides(list(extra))
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    swept = {o.key_or_group: [str(v) for v in o.sweep_iterator()] for o in parsed if o.is_sweep_override()}
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}", *fixed],
                      return_hydra_config=True)
    preset_sweep = cfg.hydra.sweeper.params.get("problem")
    names = (swept.get("problem") or (str(preset_sweep).split(",") if preset_sweep is not None
                                      else [cfg.problem.name]))
    return all(getattr(PROBLEMS.get(n.strip()), "stackable", False) for n in names)


def run_sweep(name: str, scale: str, results: Path, jobs: int, extra: list[str]) -> tuple[Path, float]:
    """One preset's multirun through the real command line; returns its runs folder and seconds."""
    experiment = name if scale == "small" else f"paper/{name}"
    sweep = name if scale == "small" else f"paper_{name}"
    runs_dir = results / "runs" / sweep
    runs_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "lionconv", "train", "-m", f"experiment={experiment}",
           f"out_dir={results / 'runs'}", "progress=off", *extra]
    if closed_form(experiment, extra):
        # the sweep's runs as stacked tensors (lionconv.batched), dealt into `jobs` processes of
        # one thread each (its batches are dispatch bound at small d, and two processes beat one
        # process on two threads at large d too); threads are not part of a run's identity
        cmd += ["hydra/launcher=batched", f"hydra.launcher.n_jobs={jobs}", "threads=1"]
    elif jobs > 1:
        cmd += ["hydra/launcher=local_parallel", f"hydra.launcher.n_jobs={jobs}"]
    print(f"[{name}] {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    with open(runs_dir / "train.log", "a") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        progress.watch(proc, runs_dir, name, progress.sweep_jobs(cmd[cmd.index("train") + 1:]))
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"[{name}] the sweep failed (exit {proc.returncode}); see {runs_dir / 'train.log'}")
    print(f"[{name}] sweep done in {seconds:.0f} s", flush=True)
    return runs_dir, seconds


def reproduce_preset(name: str, scale: str, results: Path, jobs: int, overrides: list[str], argv: list[str],
                     analysis_only: bool = False, n_boot: int = 2000) -> PresetResult:
    """Sweep (unless analysis_only) and analyse one preset; argv is the portable command line that
    the reports record. Raises NoRunsError (no runs to analyse), OSError, SystemExit (sweep failed)."""
    sweep = name if scale == "small" else f"paper_{name}"
    if analysis_only:
        runs_dir, seconds = results / "runs" / sweep, None
    else:
        runs_dir, seconds = run_sweep(name, scale, results, jobs, overrides)
    out = report_root(results, scale) / name
    analysis = write_analysis(runs_dir, claims_for(name), out, argv=argv, n_boot=n_boot)
    if seconds is not None:
        runio.write_json(out / "sweep_time.json", {"seconds": seconds, "argv": argv})
    print(f"[{name}] wrote {analysis.report}", flush=True)
    return PresetResult(name, analysis.verdicts, analysis.report, analysis.figures, runs_dir, seconds)


def report_root(results: Path, scale: str) -> Path:
    return results if scale == "small" else results / "paper"


def top_report(root: Path, argv: list[str], scale: str) -> Path:
    """results/REPORT.md from every preset analysed so far (each <root>/<preset>/verdicts.csv); every
    path in it is relative to root. Headline counts are of theory rows only (THEORY §10)."""
    frames, timings = [], {}
    for name in PRESETS:
        if not (root / name / "verdicts.csv").exists():
            continue
        frame = pd.read_csv(root / name / "verdicts.csv", keep_default_na=False, na_values=[""])
        frame.insert(0, "preset", name)
        frames.append(frame)
        timing = root / name / "sweep_time.json"
        timings[name] = runio.read_json(timing)["seconds"] if timing.exists() else None
    verdicts = pd.concat(frames, ignore_index=True)
    by_kind = verdicts["kind"].value_counts().to_dict()
    lines = [
        "# lionconv: does the theory hold? (all presets)", "",
        f"Made by `{shlex.join(argv)}` ({scale} scale), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Provenance: git {runio.provenance()['git_commit']}; each run folder holds its config, seed and versions.",
        "",
        f"**Theory verdicts** ({by_kind.get('theory', 0)} rows): {counts(verdicts)}. "
        f"Sanity checks: {by_kind.get('sanity', 0)} rows ({counts(verdicts, 'sanity')}); "
        f"context rows (no claim): {by_kind.get('context', 0)}.", "",
        "Only *theory* rows are claims of the papers put at risk: each of their rules has a control test on "
        "data that violates the claim and must say *no*. A *no* is a measured disagreement with THEORY.md "
        "(or, for a negative control, a control that did not fail); it is reported, never tuned away. "
        "*unclear* is what a rule says when the interval straddles its threshold, or when it has fewer than "
        "5 seeds and is not exact. Each preset's report has the figures, the rules with their thresholds "
        "and reasons, and the runs left out.", "",
        "| preset | claims | report | sweep time |", "|---|---|---|---|",
    ]
    for name, seconds in timings.items():
        lines.append(f"| {name} | {', '.join(c.NAME for c in claims_for(name))} | [{name}/REPORT.md]({name}/REPORT.md) | "
                     + (f"{seconds:.0f} s |" if seconds is not None else "(analysis only) |"))
    lines += ["", "## Verdicts", ""] + kind_sections(verdicts, evidence=False)
    missing = [n for n in PRESETS if n not in timings]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    path = root / "REPORT.md"
    runio.write_text(path, "\n".join(lines) + "\n")
    runio.write_text(root / "verdicts.csv", verdicts.to_csv(index=False))
    return path


def run_preset(name: str, scale: str = "small", jobs: int | None = None, out_dir="results",
               overrides=(), analysis_only: bool = False, n_boot: int = 2000) -> PresetResult:
    """Reproduce one preset as `scripts/reproduce.py --only NAME` does: its sweep through
    `python -m lionconv train -m experiment=NAME ...` (`overrides`: extra Hydra overrides, e.g.
    ["steps=30", "seed=0"] to shrink it), its analysis, and the top REPORT.md of out_dir.
    jobs: parallel runs (default: all cores). Raises ValueError for a bad argument, NoRunsError when
    there is nothing to analyse, SystemExit when the sweep fails."""
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} is unknown; allowed: {', '.join(PRESETS)}")
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is not allowed; allowed: {', '.join(SCALES)}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} is not allowed: it must be an integer >= 1")
    overrides = [str(o) for o in overrides]
    results = Path(out_dir).resolve()
    typed = ["--only", name, "--scale", scale, "--jobs", str(jobs), "--results", str(results),
             *(["--analysis-only"] if analysis_only else []), *overrides]
    argv = portable_argv([SCRIPT, *typed], report_root(results, scale))
    result = reproduce_preset(name, scale, results, jobs, overrides, argv, analysis_only, n_boot)
    top_report(report_root(results, scale), argv, scale)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--scale", choices=SCALES, default="small")
    parser.add_argument("--only", nargs="+", choices=PRESETS, default=None, metavar="NAME",
                        help=f"run only these presets ({', '.join(PRESETS)})")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="parallel runs (joblib launcher); default: all cores")
    parser.add_argument("--results", type=Path, default=REPO / "results", help="output folder")
    parser.add_argument("--analysis-only", action="store_true", help="analyse runs already on disk")
    parser.add_argument("--list", action="store_true", help="print each preset and its claims, then exit")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every preset")
    args = parser.parse_args(argv)
    if args.list:
        for name, claims in presets().items():
            print(f"{name}: {', '.join(claims)}")
        return 0
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs} must be >= 1")
    results = args.results.resolve()
    root = report_root(results, args.scale)
    full_argv = portable_argv([SCRIPT, *(sys.argv[1:] if argv is None else argv)], root)
    start = time.perf_counter()
    try:
        for name in args.only or PRESETS:
            reproduce_preset(name, args.scale, results, args.jobs, args.overrides, full_argv, args.analysis_only)
        path = top_report(root, full_argv, args.scale)
    except (NoRunsError, OSError) as err:  # no runs for --analysis-only; --results unwritable
        print(f"reproduce.py: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0
