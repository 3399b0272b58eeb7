"""Sweep progress lines: counting run folders, the sweep's size, the line's format, the watch loop."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lionconv import progress
from lionconv.progress import Counts, clock, count_runs, progress_line, sweep_jobs


def _run(root, name, status=None):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 0\n")
    if status is not None:
        (folder / "summary.json").write_text(json.dumps({"status": status}))
    return folder


def test_count_runs_by_summary_status(tmp_path):
    for i in range(3):
        _run(tmp_path, f"seed={i}__a{i}", "finished")
    _run(tmp_path, "seed=3__b", "diverged")
    _run(tmp_path, "seed=4__c", "running")
    _run(tmp_path, "seed=5__d")                                # started, no summary yet
    _run(tmp_path, "seed=0__a0.replaced-20260101-000000", "finished")  # moved aside: not this sweep
    _run(tmp_path, ".hydra", "finished")
    (tmp_path / "train.log").write_text("")
    (tmp_path / "multirun.yaml").write_text("")
    (tmp_path / "not_a_run").mkdir()
    assert count_runs(tmp_path) == Counts(finished=3, diverged=1, running=2)
    assert count_runs(tmp_path).done == 4
    assert count_runs(tmp_path / "absent") == Counts()


@pytest.mark.parametrize("seconds,text", [(0, "0:00"), (41.4, "0:41"), (59.6, "1:00"), (725, "12:05"),
                                          (3723, "1:02:03"), (-3, "0:00")])
def test_clock(seconds, text):
    assert clock(seconds) == text


def test_progress_line_format_and_estimate():
    # 37 done in 41 s: 41/37 s per run × 63 to go = 69.8 s -> ~1:10
    assert progress_line("rate_in_K", Counts(35, 2, 4), 100, 41) == \
        "[rate_in_K] 37/100 runs, 2 diverged, 0:41 elapsed, ~1:10 left"
    assert progress_line("x", Counts(0, 0, 2), 10, 5) == "[x] 0/10 runs, 0 diverged, 0:05 elapsed"
    assert progress_line("x", Counts(10, 0, 0), 10, 65) == "[x] 10/10 runs, 0 diverged, 1:05 elapsed"
    assert progress_line("x", Counts(12, 1, 0), 10, 65) == "[x] 10/10 runs, 1 diverged, 1:05 elapsed"
    assert progress_line("x", Counts(3, 1, 0), None, 9) == "[x] 4 runs, 1 diverged, 0:09 elapsed"


def test_sweep_jobs_is_the_product_of_the_sweep_axes():
    assert sweep_jobs(["experiment=rate_in_K"]) == 3 * 5 * 5          # optimizer × steps × seed
    assert sweep_jobs(["experiment=rate_in_K", "seed=0,1"]) == 3 * 5 * 2  # the command line wins
    assert sweep_jobs(["experiment=rate_in_K", "seed=7", "out_dir=/tmp/x"]) == 3 * 5
    assert sweep_jobs(["problem.d=10", "seed=0,1", "steps=3,4,5"]) == 6
    assert sweep_jobs(["-m", "seed=range(0,4)"]) == 4                  # the train command's flags skipped
    assert sweep_jobs(["experiment=no_such_preset"]) is None


def test_watch_prints_a_line_per_finished_run_and_a_summary(tmp_path):
    _run(tmp_path, "a", "finished")
    script = (f"import json, pathlib, time\n"
              f"root = pathlib.Path({str(tmp_path)!r})\n"
              f"for name, status in [('b', 'finished'), ('c', 'diverged')]:\n"
              f"    time.sleep(0.4)\n"
              f"    (root / name).mkdir(); (root / name / 'summary.json').write_text(json.dumps({{'status': status}}))\n"
              f"time.sleep(0.4)\n")
    proc = subprocess.Popen([sys.executable, "-c", script])
    lines = []
    final = progress.watch(proc, tmp_path, "demo", 3, every=60, poll=0.05, out=lines.append)
    assert final == Counts(finished=2, diverged=1)
    done = [line.split(" runs")[0] for line in lines]
    assert done == ["[demo] 1/3", "[demo] 2/3", "[demo] 3/3", "[demo] 3/3"]  # start, b, c, exit
    assert lines[-1].startswith("[demo] 3/3 runs, 1 diverged, ") and "left" not in lines[-1]


def test_watch_prints_at_least_every_interval_while_nothing_finishes(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6)"])
    ticks = iter(range(1000))
    lines = []
    progress.watch(proc, tmp_path, "slow", 5, every=3, poll=0.05, out=lines.append,
                   now=lambda: float(next(ticks)))  # one fake second per poll
    assert len(lines) >= 3 and all(line.startswith("[slow] 0/5 runs") for line in lines)
