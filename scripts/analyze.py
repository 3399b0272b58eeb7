#!/usr/bin/env python
"""Analyse a sweep folder: verdicts on its preset's claims, figures and REPORT.md.

    python scripts/analyze.py results/runs/<sweep> [--out DIR] [--claims a,b] [--n-boot 2000] [--seed 0]

The claims are those of the preset recorded in the runs' configs (`preset:` key, set by each
conf/experiment preset), or the ones named by --claims.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import yaml  # noqa: E402

from lionconv.analysis import NoRunsError, write_report  # noqa: E402
from lionconv.analysis.load import find_run_dirs  # noqa: E402
from lionconv.claims import CLAIMS, claims_for  # noqa: E402


def recorded_presets(runs_dir: Path) -> list:
    """The distinct preset names in the runs' config.yaml (key `preset`), sorted; unreadable configs skipped
    (the report lists them as broken runs)."""
    found = set()
    for run_dir in find_run_dirs(runs_dir):
        try:
            preset = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("preset")
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if preset:
            found.add(str(preset))
    return sorted(found)


def choose_claims(runs_dir: Path, names: str | None) -> list:
    """Claim modules from --claims, else from the preset(s) the runs record. Raises ValueError."""
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in CLAIMS]
        if unknown:
            raise ValueError(f"--claims {','.join(unknown)}: unknown; allowed: {', '.join(CLAIMS)}")
        return [CLAIMS[n] for n in wanted]
    presets = recorded_presets(runs_dir)
    if not presets:
        raise ValueError(f"the runs under '{runs_dir}' record no preset (config key 'preset'); "
                         f"name the claims with --claims (allowed: {', '.join(CLAIMS)})")
    chosen = []
    for p in presets:
        chosen += [c for c in claims_for(p) if c not in chosen]
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="sweep folder holding run folders")
    parser.add_argument("--out", default=None, help="output folder (default RUNS_DIR/analysis)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples per fit (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed (default 0)")
    parser.add_argument("--claims", default=None, metavar="A,B",
                        help=f"evaluate these claims (default: the runs' preset's); any of {', '.join(CLAIMS)}")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    args = parser.parse_args(argv)
    if args.n_boot < 0:
        parser.error(f"--n-boot={args.n_boot} must be >= 0")
    runs_dir = Path(args.runs_dir)
    try:
        if not runs_dir.is_dir():
            raise NoRunsError(f"RUNS_DIR '{runs_dir}' does not exist or is not a folder")
        claims = choose_claims(runs_dir, args.claims)
        report = write_report(runs_dir, claims, args.out, argv=sys.argv if argv is None else ["analyze.py", *argv],
                              n_boot=args.n_boot, seed=args.seed, figures=not args.no_figures)
    except (NoRunsError, ValueError, OSError) as err:  # OSError: --out is a file, read-only or on a full disk
        print(f"analyze.py: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
