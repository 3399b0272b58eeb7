#!/usr/bin/env python
"""Analyse a sweep folder: verdicts on THEORY.md's claims, figures and REPORT.md.

    python scripts/analyze.py results/runs/<sweep> [--out DIR] [--n-boot 2000] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from lionconv.analysis import CLAIMS, NoRunsError, write_report  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="sweep folder holding run folders")
    parser.add_argument("--out", default=None, help="output folder (default RUNS_DIR/analysis)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples per fit (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed (default 0)")
    parser.add_argument("--claims", nargs="+", default=None, choices=sorted(CLAIMS),
                        help="evaluate only these claims (default all)")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    args = parser.parse_args(argv)
    if args.n_boot < 0:
        parser.error(f"--n-boot={args.n_boot} must be >= 0")
    try:
        report = write_report(args.runs_dir, args.out, argv=sys.argv if argv is None else ["analyze.py", *argv],
                              n_boot=args.n_boot, seed=args.seed, figures=not args.no_figures, claims=args.claims)
    except (NoRunsError, OSError) as err:  # OSError: --out is a file, read-only or on a full disk
        print(f"analyze.py: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
