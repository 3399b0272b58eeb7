#!/usr/bin/env python
"""Reproduce every claim: run each experiment preset, analyse it, write results/REPORT.md.

    python scripts/reproduce.py                       # small scale, every preset (make demo)
    python scripts/reproduce.py --only rate_in_K      # one preset
    python scripts/reproduce.py --scale paper --jobs 16
    python scripts/reproduce.py --analysis-only       # re-analyse the runs already on disk

Runs go to results/runs/<preset>/ (resumable: a second call skips finished runs), the analysis of
each preset to results/<preset>/, and the verdicts of all presets to results/REPORT.md.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without install

import pandas as pd  # noqa: E402

from lionconv import progress, runio  # noqa: E402
from lionconv.analysis import NoRunsError, write_report  # noqa: E402
from lionconv.analysis.report import counts, kind_sections  # noqa: E402
from lionconv.claims import claims_for, presets  # noqa: E402

PRESETS = list(presets())      # every preset some claim runs on (lionconv/claims/*.py PRESETS)


def run_preset(name: str, scale: str, results: Path, jobs: int, extra: list[str]) -> tuple[Path, float]:
    """One preset's multirun through the real command line; returns its runs folder and seconds."""
    experiment = name if scale == "small" else f"paper/{name}"
    sweep = name if scale == "small" else f"paper_{name}"
    runs_dir = results / "runs" / sweep
    runs_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "lionconv", "train", "-m", f"experiment={experiment}",
           f"out_dir={results / 'runs'}", "progress=off", *extra]
    if jobs > 1:
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


def analyse(name: str, runs_dir: Path, out: Path, argv: list[str], seconds: float | None) -> None:
    report = write_report(runs_dir, claims_for(name), out, argv=argv)
    if seconds is not None:
        runio.write_json(out / "sweep_time.json", {"seconds": seconds, "argv": argv})
    print(f"[{name}] wrote {report}", flush=True)


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["small", "paper"], default="small")
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
    full_argv = ["scripts/reproduce.py", *(sys.argv[1:] if argv is None else argv)]
    names = args.only or PRESETS
    results = args.results.resolve()
    start = time.perf_counter()
    report_root = results if args.scale == "small" else results / "paper"
    try:
        for name in names:
            sweep = name if args.scale == "small" else f"paper_{name}"
            if args.analysis_only:
                runs_dir, seconds = results / "runs" / sweep, None
            else:
                runs_dir, seconds = run_preset(name, args.scale, results, args.jobs, args.overrides)
            analyse(name, runs_dir, report_root / name, full_argv, seconds)
        path = top_report(report_root, full_argv, args.scale)
    except (NoRunsError, OSError) as err:  # no runs for --analysis-only; --results unwritable
        print(f"reproduce.py: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
