"""Sweeps that survive: SIGKILL at random points, resume, atomic files, determinism."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, TRAIN, compose_config, run_cli, summaries
from lionconv import batched, runio, train
from lionconv.train import launch, run_folder

# Long enough (a few seconds) to be killed mid-way, checkpointing often.
RESUMABLE = ["problem.d=2000", "steps=2500", "checkpoint_every=37", "progress=off",
             "optimizer=clion", "optimizer.lr=0.003", "optimizer.weight_decay=0.1"]


def _tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    metrics = pd.read_parquet(run_dir / "metrics.parquet").drop(columns="wall_time")
    tensors = pd.read_parquet(run_dir / "tensor_metrics.parquet")
    return metrics, tensors


def _strip(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("wall_time_s", "provenance")}


def _kill_at_random_points(args: list[str], watch: Path, kills: int, rng: random.Random,
                           env: dict | None = None) -> int:
    """Start `train.py args` `kills` times, SIGKILL each at a random moment after a checkpoint
    exists (so the kill lands mid-run, between or during writes); return how many kills hit."""
    hits = 0
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, str(TRAIN), *args], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 60
        while not list(watch.rglob("checkpoint.pt")) and proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("no checkpoint appeared within 60 s")
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            hits += 1
        proc.wait()
    return hits


# A single closed-form run goes through the stacked engine (batched.launch) unless the environment
# asks for train.py's loop: each is killed and resumed, and compared with an uninterrupted run of
# the same engine (the two engines' float64 norms differ in the last bits: summation order).
ENGINES = {"stacked": ({}, batched.launch, ["steps=6000", "checkpoint_every=200"]),  # faster steps
           "loop": ({batched.ONE_RUN_LOOP: "1"}, train.launch, [])}


@pytest.mark.parametrize("engine", ENGINES)
def test_sigkill_and_resume_is_bit_identical(tmp_path, engine):
    env, launch_one, longer = ENGINES[engine]
    reference = compose_config(RESUMABLE + longer, tmp_path=tmp_path / "ref")
    expected = launch_one(reference, echo=lambda m: None)
    exp_metrics, exp_tensors = _tables(run_folder(reference)[0])

    args = RESUMABLE + longer + [f"out_dir={tmp_path / 'killed'}"]
    hits = _kill_at_random_points(args, tmp_path / "killed", kills=3, rng=random.Random(0), env=env)
    assert hits >= 2, "the run finished before it could be killed; make it longer"
    (killed_dir,) = [p.parent for p in (tmp_path / "killed").rglob("config.yaml")]
    assert killed_dir.name.endswith(run_folder(reference)[1])  # same identity as the reference
    partial = runio.read_json(killed_dir / "summary.json")
    assert partial["status"] == "running"  # killed, never marked done
    run_cli(*args, env=env)  # the same command again resumes
    got = runio.read_json(killed_dir / "summary.json")
    got_metrics, got_tensors = _tables(killed_dir)
    pd.testing.assert_frame_equal(got_metrics, exp_metrics, check_exact=True)
    pd.testing.assert_frame_equal(got_tensors, exp_tensors, check_exact=True)
    assert _strip(got) == _strip(expected)
    assert not (killed_dir / "checkpoint.pt").exists()
    assert not list(killed_dir.glob(".*.tmp"))  # no temp file left behind by the kills


@pytest.mark.slow
def test_sweep_of_12_killed_three_times_equals_uninterrupted(tmp_path):
    """The bar of the resilience issue: a 12-run sweep, SIGKILLed at three random points."""
    sweep = ["-m", "optimizer=lion,clion,signsgd", "problem.d=500,5000", "seed=0,1", "steps=1500",
             "checkpoint_every=50", "progress=off", "optimizer.lr=0.001"]
    run_cli(*sweep, f"out_dir={tmp_path / 'ref'}")
    hits = _kill_at_random_points(sweep + [f"out_dir={tmp_path / 'killed'}"], tmp_path / "killed",
                                  kills=3, rng=random.Random(1))
    assert hits == 3
    run_cli(*sweep, f"out_dir={tmp_path / 'killed'}")
    ref, got = summaries(tmp_path / "ref"), summaries(tmp_path / "killed")
    assert len(ref) == len(got) == 12 and set(ref) == set(got)
    for name in ref:
        assert got[name]["status"] == "finished"
        assert _strip(got[name]) == _strip(ref[name])
        a = _tables(next((tmp_path / "ref").rglob(name)))
        b = _tables(next((tmp_path / "killed").rglob(name)))
        pd.testing.assert_frame_equal(a[0], b[0], check_exact=True)
        pd.testing.assert_frame_equal(a[1], b[1], check_exact=True)


def test_basic_and_joblib_launchers_give_identical_metrics(tmp_path):
    sweep = ["-m", "optimizer=lion,sgd", "problem=digits_mlp", "problem.width=16", "steps=60",
             "log.grid=linear", "log.every=20", "progress=off"]
    run_cli(*sweep, f"out_dir={tmp_path / 'basic'}")
    run_cli(*sweep, "hydra/launcher=local_parallel", f"out_dir={tmp_path / 'joblib'}")
    basic, joblib = summaries(tmp_path / "basic"), summaries(tmp_path / "joblib")
    assert set(basic) == set(joblib) and len(basic) == 2
    for name in basic:
        a = _tables(next((tmp_path / "basic").rglob(name)))[0]
        b = _tables(next((tmp_path / "joblib").rglob(name)))[0]
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path):
    target = tmp_path / "summary.json"
    runio.write_json(target, {"status": "finished"})

    def dies_half_way(f):
        f.write(b'{"status": "runn')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runio.atomic_write(target, dies_half_way)
    assert runio.read_json(target) == {"status": "finished"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_run_identity_ignores_output_paths_only():
    cfg = compose_config(["problem.d=10"])
    same = {**cfg, "out_dir": "elsewhere", "sweep_name": "x", "restart": True, "progress": "on"}
    assert runio.run_identity(cfg) == runio.run_identity(same)
    assert runio.run_identity(cfg) != runio.run_identity({**cfg, "seed": 1})
