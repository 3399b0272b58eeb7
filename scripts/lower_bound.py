#!/usr/bin/env python
"""The lower-bound measurements (THEORY §9) of a sweep folder: K(ε) exponents, progress per step,
ℓ1/ℓ2 on the instance, as CSV tables and two figures.

    python scripts/lower_bound.py results/runs/lower_bound [--out DIR] [--n-boot 2000] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from lionconv.lower_bound import measure  # noqa: E402

SHOW = {"exponents": ["optimizer", "slope", "ci_low", "ci_high", "method", "n", "n_censored",
                      "censoring", "T_over_p_slope", "lower_bound_slope", "K_over_T_over_p"],
        "progress": ["optimizer", "progress_over_p", "ci_low", "ci_high", "n",
                     "max_support_growth", "min_grad_over_2eps_before"],
        "l1_l2": ["optimizer", "T", "l1_l2_before", "l1_l2_before_max", "l1_l2_after", "sqrt_T",
                  "runs"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="sweep folder holding zero_chain runs")
    parser.add_argument("--out", default=None, help="output folder (default RUNS_DIR/lower_bound)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed (default 0)")
    args = parser.parse_args(argv)
    if args.n_boot < 0:
        parser.error(f"--n-boot={args.n_boot} must be >= 0")
    if not Path(args.runs_dir).is_dir():
        parser.error(f"RUNS_DIR={args.runs_dir!r} is not a folder")
    out = Path(args.out) if args.out else Path(args.runs_dir) / "lower_bound"
    try:
        result = measure(args.runs_dir, n_boot=args.n_boot, seed=args.seed, figures_dir=out)
    except ValueError as err:
        print(f"lower_bound.py: error: {err}", file=sys.stderr)
        return 2
    result["runs"].drop(columns="run_dir").to_csv(out / "runs.csv", index=False)
    for name, columns in SHOW.items():
        result[name].to_csv(out / f"{name}.csv", index=False)
        print(f"\n## {name}\n" + result[name][columns].to_string(index=False, float_format="%.4g"))
    print("\nwrote " + ", ".join(str(p) for p in [out / "runs.csv", *result["figures"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
