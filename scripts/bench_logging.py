#!/usr/bin/env python
"""What logging costs a run: wall time with the default log grid vs logging only steps 0 and K−1.

    python scripts/bench_logging.py [--problem digits_mlp] [--steps 2000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from lionconv.config import register_configs  # noqa: E402
from lionconv.train import launch  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
MINIMAL = ["log.grid=geometric", "log.points=2", "log.per_tensor=false"]


def wall_time(overrides: list[str], out_dir: str) -> tuple[float, int]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides + [f"out_dir={out_dir}", "restart=true",
                                                                   "progress=off"])
    summary = launch(OmegaConf.to_container(cfg, resolve=True), echo=lambda m: None)
    return summary["wall_time_s"], summary["averages"]["n"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="digits_mlp")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    register_configs()
    base = [f"problem={args.problem}", f"steps={args.steps}", "problem.estimate_constants=false"]
    times = {}
    with tempfile.TemporaryDirectory() as out:
        for label, extra in (("only steps 0 and K-1", MINIMAL), ("default log grid", [])):
            runs = [wall_time(base + extra, out) for _ in range(args.repeats)]
            times[label] = statistics.median(t for t, _ in runs)
            print(f"{label:>22}: {times[label]:.3f} s (median of {args.repeats}), {runs[0][1]} logged steps")
    overhead = times["default log grid"] / times["only steps 0 and K-1"] - 1
    print(f"logging adds {100 * overhead:.1f}% to the run's wall time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
