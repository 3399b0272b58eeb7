"""Progress of a running sweep, read from its run folders (no hook in the runs themselves).

    [rate_in_K] 37/100 runs, 2 diverged, 0:41 elapsed, ~0:30 left

The runs done are the run folders whose summary.json says `finished` or `diverged`
(docs/RUN_LAYOUT.md); the number of jobs is the size of the Hydra sweep (the preset's
`hydra.sweeper.params` and the command line's sweep overrides, the command line winning per key).
"""
from __future__ import annotations

import math
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from lionconv import runio


@dataclass(frozen=True)
class Counts:
    """Run folders of a sweep by the status in their summary.json."""

    finished: int = 0
    diverged: int = 0
    running: int = 0  # started: summary.json says running, or is not there yet

    @property
    def done(self) -> int:
        return self.finished + self.diverged


def count_runs(sweep_dir) -> Counts:
    """Count the run folders directly under `sweep_dir` (hidden and moved-aside ones skipped)."""
    tally = {"finished": 0, "diverged": 0, "running": 0}
    root = Path(sweep_dir)
    if not root.is_dir():
        return Counts()
    for run in root.iterdir():
        if not run.is_dir() or run.name.startswith(".") or ".replaced-" in run.name:
            continue
        if not (run / "config.yaml").exists() and not (run / "summary.json").exists():
            continue
        try:
            status = runio.read_json(run / "summary.json").get("status")
        except (OSError, ValueError):  # not written yet
            status = "running"
        tally[status if status in runio.DONE_STATUSES and status in tally else "running"] += 1
    return Counts(**tally)


def clock(seconds: float) -> str:
    """0:41, 12:05, 1:02:03 (whole seconds, rounded)."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(label: str, counts: Counts, jobs: int | None, elapsed: float) -> str:
    """`[label] done/jobs runs, n diverged, elapsed, ~left` (left = elapsed per run done × runs
    to go; no estimate before the first run is done, none once all are)."""
    done = min(counts.done, jobs) if jobs else counts.done
    line = f"[{label}] {done}/{jobs} runs" if jobs else f"[{label}] {done} runs"
    line += f", {counts.diverged} diverged, {clock(elapsed)} elapsed"
    if jobs and 0 < done < jobs:
        line += f", ~{clock(elapsed * (jobs - done) / done)} left"
    return line


def sweep_jobs(train_args: Sequence[str]) -> int | None:
    """Number of jobs `lionconv train -m *train_args` launches (flags such as -m are skipped);
    None if it cannot be worked out (a glob sweep, a config that does not compose — the sweep
    itself then reports why)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lionconv.config import register_configs
    from lionconv.resources import config_dir

    parser = OverridesParser.create()
    try:
        given = parser.parse_overrides([a for a in train_args if not a.startswith("-")])
        fixed = [o.input_line for o in given if not o.is_sweep_override()]
        register_configs()
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=fixed, return_hydra_config=True)
        params = cfg.hydra.sweeper.get("params") or {}
        preset = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
        by_key = {o.get_key_element(): o for o in [*preset, *given]}  # the command line wins
        return math.prod(len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1
                         for o in by_key.values())
    except Exception:  # noqa: BLE001 — a count we cannot make only drops the "/total"
        return None


def watch(proc: subprocess.Popen, sweep_dir, label: str, jobs: int | None, *,
          every: float = 10.0, poll: float = 1.0, out: Callable[[str], None] | None = None,
          now: Callable[[], float] = time.monotonic) -> Counts:
    """Print a progress line whenever a run finishes, and at least every `every` seconds, until
    `proc` (the sweep) exits; the last line is the sweep's summary. Returns the final counts."""
    out = out or (lambda line: print(line, flush=True))
    start = last_print = now()
    last_done = -1
    while True:
        try:
            proc.wait(timeout=poll)
            exited = True
        except subprocess.TimeoutExpired:
            exited = False
        counts, t = count_runs(sweep_dir), now()
        if exited or counts.done != last_done or t - last_print >= every:
            out(progress_line(label, counts, jobs, t - start))
            last_print, last_done = t, counts.done
        if exited:
            return counts
