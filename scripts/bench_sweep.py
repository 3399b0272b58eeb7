#!/usr/bin/env python
"""Batched runs against one run at a time: the rate_in_K sweep, and run-steps/s against d and R.

    python scripts/bench_sweep.py                    # everything (minutes on 2 cores)
    python scripts/bench_sweep.py --parts sweep      # only the sweep wall times
    python scripts/bench_sweep.py --parts d runs --steps 100

`sweep`: wall time of `experiments/train.py -m experiment=rate_in_K` (75 runs) with
  hydra/launcher=batched in one process, and dealt into two (n_jobs=2 threads=1, as
  scripts/reproduce.py runs it), against its largest run (Lion, the largest K, 3e4) alone, and
  (with --per-run, slow) with the basic and local_parallel launchers; each a fresh process on an
  empty out_dir, as a user types it. `--sweep-steps` narrows the K grid (e.g. 100,300,1000).
`d`: one batch of R runs (Lion/CLion/SignSGD/SGD mix, float32, every step logged) at
  d = 1e2 … 1e6: ms per step, run-steps/s, and the floor, drawing the step's noise (R draws of
  d N(0, 1) from the runs' generators, one after another, the kernel torch.randn calls): the
  ratio step / noise; and the same draws as the batch makes them (with --threads 2, rows of
  d ≥ 65536 on two threads at once, plus the add): step / drawn. With --threads 2 a batch of
  R·d ≥ 2^18 draws the next step's noise and sums this step's gradients on a worker thread.
`runs`: the same at d = 1000 against the number of stacked runs R.
Each figure is the least of its rounds (3; the sweep's: --rounds) taken in turn, in one run of this
script.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OPTIMIZERS = ("lion", "clion", "signsgd", "sgd")


def _cli(args: list[str], out: Path) -> float:
    """Seconds of one `experiments/train.py` call (a fresh process)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "experiments" / "train.py"), *args,
                    f"out_dir={out}", "progress=off"], cwd=REPO, check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_sweep(per_run: bool, steps: str | None, root: Path, rounds: int) -> None:
    grid = [f"steps={steps}"] if steps else []
    if steps is None:  # the preset's own K grid
        from omegaconf import OmegaConf
        preset = OmegaConf.load(REPO / "conf" / "experiment" / "rate_in_K.yaml")
        largest = max(int(k) for k in str(preset.hydra.sweeper.params.steps).split(","))
    else:
        largest = max(int(k) for k in steps.split(","))
    sweep = ["-m", "experiment=rate_in_K", *grid]
    cases = [("largest run alone (Lion, K = %d)" % largest,
              ["experiment=rate_in_K", "optimizer=lion", f"steps={largest}", "seed=0"]),
             ("sweep, hydra/launcher=batched", [*sweep, "hydra/launcher=batched"]),
             ("sweep, batched, n_jobs=2 threads=1 (reproduce.py)",
              [*sweep, "hydra/launcher=batched", "hydra.launcher.n_jobs=2", "threads=1"])]
    if per_run:
        cases.append(("sweep, basic launcher (one run at a time)", sweep))
        cases.append(("sweep, local_parallel n_jobs=2",
                      [*sweep, "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2"]))
    # rounds taken in turn, each case on an empty out_dir: the least of each case's rounds (a
    # burst of load, or the first round's cold file cache, then hits one round, not one case)
    best = [math.inf] * len(cases)
    for r in range(rounds):
        for i, (_, args) in enumerate(cases):
            out = root / f"round{r}" / f"case{i}"
            best[i] = min(best[i], _cli(args, out))
            if i == 1:
                n_runs = len(list(out.rglob("summary.json")))
            shutil.rmtree(out, ignore_errors=True)
    base = best[0]
    print(f"\nrate_in_K sweep ({n_runs} runs{', K = ' + steps if steps else ''}), wall time incl. "
          f"process start, the least of {rounds} rounds:")
    for (name, _), seconds in zip(cases, best):
        print(f"  {name:<52} {seconds:8.1f} s   {seconds / base:5.2f}x the largest run")


def _batch(R: int, d: int, steps: int, root: Path, threads: int):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import torch

    from lionconv import batched
    from lionconv.config import register_configs

    register_configs()
    runs = []
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for i, opt in zip(range(R), itertools.cycle(OPTIMIZERS)):
            cfg = compose(config_name="config", overrides=[
                "experiment=rate_in_K", f"optimizer={opt}", "steps=10000", f"seed={i}",
                f"threads={threads}",
                f"problem.d={d}", f"out_dir={root}", "progress=off"])
            cfg = OmegaConf.to_container(cfg, resolve=True)
            runs.append(batched.BatchedRun(cfg, root / f"run{i}", f"run{i}"))
    return batched.Batch(runs, chunk=steps + 10)


def _time_steps(batch, steps: int, rounds: int = 3) -> tuple[float, float, float]:
    """(seconds per batched step, per serial draw of the step's noise: R draws one after another
    with the runs' generators, the kernel torch.randn calls; per draw as the batch draws it:
    problem.draw_stacked_noise and the add, rows on threads at large d), each the least of
    `rounds` rounds taken in turn (so a burst of load on the machine hits one round, not one part)."""
    import torch

    torch.set_grad_enabled(False)  # as run_batch steps
    batch.step(0)  # warm-up
    noise = batch.noise
    work = torch.empty((len(batch.runs), batch.d), dtype=batch.dtype)
    best = [math.inf] * 3
    for _ in range(rounds):
        start = time.perf_counter()
        for k in range(steps):
            batch.step(k, draw_next=k + 1 < steps)  # as run_batch steps between host copies
        best[0] = min(best[0], (time.perf_counter() - start) / steps)
        start = time.perf_counter()
        for _ in range(steps):
            for row, generator in zip(work, batch.generators):
                row.normal_(generator=generator)
        best[1] = min(best[1], (time.perf_counter() - start) / steps)
        start = time.perf_counter()
        for _ in range(steps):
            batch.problem.draw_stacked_noise(batch.generators, noise.buffers[0], noise.threads)
            batch.problem.add_stacked_noise(batch.full_grad, noise.buffers[0], out=batch.g, x=batch.x)
        best[2] = min(best[2], (time.perf_counter() - start) / steps)
    return tuple(best)


def bench_d(R: int, steps: int, root: Path, threads: int, ds: list[int]) -> None:
    print(f"\nOne batch of R = {R} runs (float32, every step logged) against d:")
    print(f"  {'d':>9} {'ms/step':>9} {'run-steps/s':>12} {'noise ms':>9} {'step/noise':>11} "
          f"{'as drawn ms':>12} {'step/drawn':>11}")
    for d in ds:
        n = max(10, min(steps, int(steps * 1000 / d)))
        step, noise, drawn = _time_steps(_batch(R, d, n, root, threads), n)
        print(f"  {d:>9} {step * 1e3:9.3f} {R / step:12.0f} {noise * 1e3:9.3f} {step / noise:11.2f} "
              f"{drawn * 1e3:12.3f} {step / drawn:11.2f}")


def bench_runs(d: int, steps: int, root: Path, threads: int) -> None:
    print(f"\nStacked runs at d = {d} (float32, every step logged):")
    print(f"  {'R':>5} {'ms/step':>9} {'run-steps/s':>12} {'vs R = 1':>9}")
    first = None
    for R in (1, 4, 16, 64, 100):
        step, _, _ = _time_steps(_batch(R, d, steps, root, threads), steps)
        first = first or R / step
        print(f"  {R:>5} {step * 1e3:9.3f} {R / step:12.0f} {R / step / first:8.1f}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=["sweep", "d", "runs"], default=["sweep", "d", "runs"])
    parser.add_argument("--per-run", action="store_true", help="also time the per-run launchers (slow)")
    parser.add_argument("--sweep-steps", default=None, help="K grid of the sweep, e.g. 100,300,1000")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the sweep part (its least is quoted)")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per point (d, runs)")
    parser.add_argument("--runs", type=int, default=4, help="R of the d part")
    parser.add_argument("--d", default="100,1000,10000,100000,1000000",
                        help="the d values of the d part, e.g. 8388608 for rate_in_d's largest")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the d and runs parts (a run's `threads`; 1 by default)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads={args.threads}, load average {os.getloadavg()[0]:.1f}")
    root = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    try:
        if "sweep" in args.parts:
            bench_sweep(args.per_run, args.sweep_steps, root / "sweep", args.rounds)
        if "d" in args.parts:
            bench_d(args.runs, args.steps, root / "d", args.threads, [int(d) for d in args.d.split(",")])
        if "runs" in args.parts:
            bench_runs(1000, args.steps, root / "runs", args.threads)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
