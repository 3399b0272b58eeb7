"""Nothing silently wrong: run identity, moved-aside and duplicate runs, truncated resumes, locks,
failed runs, corrupt and planted files, confinement, bad values (issue 13, items 1–11)."""
from __future__ import annotations

import json
import os
import pickle
import signal
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from lionconv.problems.synthetic import _Separable
import yaml

from conftest import CONF, REPO, compose_config, run_cli
from lionconv import runio
from lionconv.analysis.load import find_run_dirs, load_runs
from lionconv.problems.cifar10 import read_batch
from lionconv.train import Trainer, check_command_line, launch, run_folder, validate

TINY = ["problem.d=10", "steps=40", "progress=off", "checkpoint_every=10"]
quiet = lambda message: None  # noqa: E731


def _messages():
    out = []
    return out, out.append


def _interrupt_after_first_checkpoint(monkeypatch):
    """The next launch stops (as Ctrl-C would) right after writing its first checkpoint."""
    original = Trainer._checkpoint

    def checkpoint_then_stop(self):
        original(self)
        monkeypatch.setattr(Trainer, "_checkpoint", original)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_checkpoint", checkpoint_then_stop)


def _usable(root):
    runs, problems = load_runs(root)
    return runs[runs["usable"]], problems


# --- 1, 2: run identity ---------------------------------------------------------------------
def test_moved_aside_runs_are_never_loaded(tmp_path):
    for seed in range(2):
        launch(compose_config(TINY + [f"seed={seed}"], tmp_path=tmp_path), echo=quiet)
    launch(compose_config(TINY + ["seed=0", "restart=true"], tmp_path=tmp_path), echo=quiet)
    sweep = tmp_path / "default"
    assert sum(runio.is_aside(p.name) for p in sweep.iterdir()) == 1
    assert all(not runio.is_aside(p.name) for p in find_run_dirs(tmp_path))
    used, problems = _usable(tmp_path)
    assert len(used) == 2 and problems == []


def test_bookkeeping_keys_change_neither_name_nor_hash(tmp_path):
    base = compose_config(TINY, tmp_path=tmp_path)
    for key, value in [("threads", 2), ("checkpoint_every", 7), ("checkpoint_seconds", 1.0),
                       ("progress", "on"), ("name", None), ("tags", ["x"]), ("restart", True)]:
        assert run_folder({**base, key: value}) == run_folder(base), key
    for key, value in [("seed", 1), ("steps", 41), ("dtype", "float64"), ("lr_scale", 2.0)]:
        assert run_folder({**base, key: value})[1] != run_folder(base)[1], key


def test_folder_name_excludes_exactly_the_bookkeeping_keys():
    config = yaml.safe_load((CONF / "config.yaml").read_text())
    excluded = config["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]
    assert sorted(excluded) == sorted(runio.BOOKKEEPING_KEYS)


def test_rerun_with_other_threads_is_the_same_run(tmp_path):
    """Through the real command line: a re-run with threads=2 skips the finished run."""
    args = ["problem.d=10", "steps=20", "progress=off", f"out_dir={tmp_path}"]
    run_cli(*args)
    proc = run_cli(*args, "threads=2")
    assert "skip" in proc.stdout + proc.stderr
    assert len([p for p in (tmp_path / "default").iterdir() if not p.name.startswith(".")]) == 1


def test_loader_drops_duplicates_by_run_identity(tmp_path):
    launch(compose_config(TINY, tmp_path=tmp_path), echo=quiet)
    (run_dir,) = find_run_dirs(tmp_path)
    shutil.copytree(run_dir, tmp_path / "default" / "copy")  # e.g. a folder of an older naming
    used, problems = _usable(tmp_path)
    assert len(used) == 1
    assert [(p.run, p.kind) for p in problems] == [(os.path.join("default", "copy"), "duplicate")]


def test_hand_edited_config_is_reported(tmp_path):
    cfg = compose_config(TINY, tmp_path=tmp_path)
    launch(cfg, echo=quiet)
    run_dir, run_id = run_folder(cfg)
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(text.replace("seed: 0", "seed: 5"))
    _, problems = load_runs(tmp_path)
    assert [p.kind for p in problems] == ["broken"] and "does not match" in problems[0].reason
    messages, echo = _messages()
    assert launch(cfg, echo=echo)["status"] == "finished"  # the launcher says so, rewrites it
    assert any("does not match" in m for m in messages)
    assert (run_dir / "config.yaml").read_text() == text and load_runs(tmp_path)[1] == []


# --- 3: a resume must continue complete tables ----------------------------------------------
@pytest.mark.parametrize("lost", ["metrics.parquet", "tensor_metrics.parquet"])
def test_resume_with_a_vanished_table_restarts_cleanly(tmp_path, monkeypatch, lost):
    reference = compose_config(TINY, tmp_path=tmp_path / "ref")
    launch(reference, echo=quiet)
    expected = pd.read_parquet(run_folder(reference)[0] / "metrics.parquet").drop(columns="wall_time")

    cfg = compose_config(TINY, tmp_path=tmp_path / "cut")
    _interrupt_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        launch(cfg, echo=quiet)
    run_dir, _ = run_folder(cfg)
    assert (run_dir / "checkpoint.pt").exists()
    (run_dir / lost).unlink()
    messages, echo = _messages()
    summary = launch(cfg, echo=echo)
    assert any(m.startswith("restart:") and lost in m for m in messages), messages
    assert summary["status"] == "finished" and summary["averages"]["n"] == 40
    got = pd.read_parquet(run_dir / "metrics.parquet").drop(columns="wall_time")
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert [p.name for p in run_dir.parent.iterdir() if runio.is_aside(p.name)]  # kept, not deleted


# --- 4: one process per run folder ----------------------------------------------------------
def test_a_locked_run_is_skipped(tmp_path):
    cfg = compose_config(TINY, tmp_path=tmp_path)
    run_dir, _ = run_folder(cfg)
    messages, echo = _messages()
    with runio.lock_run_dir(run_dir):
        assert launch(cfg, echo=echo)["status"] == "locked"
    assert "another process" in messages[-1] and not (run_dir / "summary.json").exists()
    assert launch(cfg, echo=quiet)["status"] == "finished"


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    cfg = compose_config(TINY, tmp_path=tmp_path)
    run_dir, _ = run_folder(cfg)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from lionconv import runio\n"
        f"runio.lock_run_dir(Path({str(run_dir)!r})).__enter__(); print('held', flush=True); time.sleep(60)")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert launch(cfg, echo=quiet)["status"] == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert launch(cfg, echo=quiet)["status"] == "finished"


def test_only_temp_files_of_dead_processes_are_removed(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        mine = tmp_path / f".summary.json.{live.pid}.abc.tmp"
        torn = tmp_path / f".summary.json.{dead.pid}.def.tmp"
        old_style = tmp_path / ".config.yaml.xyz.tmp"
        for f in (mine, torn, old_style):
            f.write_text("partial")
        runio.remove_torn_temps(tmp_path)
        assert mine.exists() and not torn.exists() and not old_style.exists()
    finally:
        live.kill()
        live.wait()


def test_two_sweeps_at_once_train_each_run_once(tmp_path):
    """Two copies of the same sweep in one folder: every run ends finished exactly once and
    nothing dies of the other's temporary files."""
    args = ["-m", "seed=0,1,2", "problem.d=3000", "steps=600", "checkpoint_every=20",
            "progress=off", f"out_dir={tmp_path}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(REPO / "experiments" / "train.py"), *args], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert "Traceback" not in "".join(outs)
    used, problems = _usable(tmp_path)
    assert len(used) == 3 and problems == []


# --- 5, 6, 10: validate first; a crash inside a run is recorded ------------------------------
def test_values_beyond_the_dtype_are_rejected():
    with pytest.raises(ValueError, match=r"optimizer.lr=1e\+39 .*float32"):
        validate(compose_config(["optimizer.lr=1e39"]))
    with pytest.raises(ValueError, match=r"problem.init=1e\+39"):
        validate(compose_config(["problem=quadratic", "problem.init=1e39"]))
    validate(compose_config(["optimizer.lr=1e39", "dtype=float64"]))  # fine in float64


def test_a_crash_inside_a_run_marks_it_failed_and_the_sweep_goes_on(tmp_path, monkeypatch):
    cfg = compose_config(TINY, tmp_path=tmp_path)
    calls = {"n": 0}
    original = _Separable.stochastic_loss

    def crash_at_step_7(self, generator):
        calls["n"] += 1
        if calls["n"] == 8:
            raise RuntimeError("boom\nsecond line")
        return original(self, generator)

    monkeypatch.setattr(_Separable, "stochastic_loss", crash_at_step_7)
    messages, echo = _messages()
    summary = launch(cfg, echo=echo)
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: boom second line"
    on_disk = runio.read_json(run_folder(cfg)[0] / "summary.json")
    assert on_disk["status"] == "failed" and "boom" in on_disk["error"]
    assert messages[-1].startswith("failed:")
    _, problems = load_runs(tmp_path)
    assert [p.kind for p in problems] == ["failed"]
    monkeypatch.undo()
    assert launch(cfg, echo=quiet)["status"] == "finished"  # a failed run is retried


def test_restart_validates_before_moving_the_old_run(tmp_path):
    cfg = compose_config(TINY, tmp_path=tmp_path)
    launch(cfg, echo=quiet)
    with pytest.raises(ValueError, match="checkpoint_every"):
        launch({**cfg, "restart": True, "checkpoint_every": -5}, echo=quiet)
    assert runio.read_json(run_folder(cfg)[0] / "summary.json")["status"] == "finished"
    assert not [p for p in (tmp_path / "default").iterdir() if runio.is_aside(p.name)]


def test_a_finished_run_is_still_validated(tmp_path):
    cfg = compose_config(TINY, tmp_path=tmp_path)
    launch(cfg, echo=quiet)
    for bad in ({"checkpoint_every": -5}, {"progress": "maybe"}):
        with pytest.raises(ValueError):
            launch({**cfg, **bad}, echo=quiet)


# --- 7, 8: corrupt and planted files --------------------------------------------------------
class _Planted:
    def __reduce__(self):
        return (os.system, ("touch PLANTED_RAN",))


@pytest.mark.parametrize("content", [b"", b"garbage \x00\x01", "truncated", "planted"])
def test_a_bad_checkpoint_is_named_kept_and_the_run_restarts(tmp_path, monkeypatch, content):
    cfg = compose_config(TINY, tmp_path=tmp_path)
    _interrupt_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        launch(cfg, echo=quiet)
    ckpt = run_folder(cfg)[0] / "checkpoint.pt"
    if content == "truncated":
        content = ckpt.read_bytes()[:200]
    elif content == "planted":
        content = pickle.dumps({"run_id": _Planted()}, protocol=2)
    ckpt.write_bytes(content)
    monkeypatch.chdir(tmp_path)
    messages, echo = _messages()
    assert launch(cfg, echo=echo)["status"] == "finished"
    assert not (tmp_path / "PLANTED_RAN").exists()
    assert any("checkpoint.pt is unreadable" in m for m in messages), messages
    (aside,) = [p for p in (tmp_path / "default").iterdir() if runio.is_aside(p.name)]
    assert (aside / "checkpoint.pt").read_bytes() == content


def test_checkpoints_load_with_weights_only(tmp_path):
    """Everything a checkpoint holds (generator state, Python numbers, lists, dicts, optimizer
    and problem state) passes torch.load(weights_only=True), for a network problem too."""
    cfg = compose_config(["problem=digits_mlp", "problem.width=4", "steps=6", "progress=off",
                          "log.grid=linear", "optimizer=clion"], tmp_path=tmp_path)
    run_dir, run_id = run_folder(cfg)
    trainer = Trainer(cfg, run_dir, run_id)
    trainer.run_dir.mkdir(parents=True)
    trainer._checkpoint()
    ckpt = torch.load(trainer.checkpoint_path, weights_only=True)
    assert ckpt["run_id"] == run_id and isinstance(ckpt["generator"], torch.Tensor)


@pytest.mark.parametrize("content", [b"[]", b"null", b"{trunc"])
def test_a_bad_summary_is_kept_aside_and_the_run_restarts(tmp_path, content):
    cfg = compose_config(TINY, tmp_path=tmp_path)
    launch(cfg, echo=quiet)
    (run_folder(cfg)[0] / "summary.json").write_bytes(content)
    messages, echo = _messages()
    assert launch(cfg, echo=echo)["status"] == "finished"
    assert any("summary.json is unreadable" in m for m in messages)
    (aside,) = [p for p in (tmp_path / "default").iterdir() if runio.is_aside(p.name)]
    assert (aside / "summary.json").read_bytes() == content


def test_cifar_batches_are_unpickled_restrictedly(tmp_path):
    good = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [1, 2], b"batch_label": b"x"}
    (tmp_path / "good").write_bytes(pickle.dumps(good, protocol=2))
    x, y = read_batch(tmp_path / "good")
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [1, 2]
    (tmp_path / "bad").write_bytes(pickle.dumps({b"data": _Planted(), b"labels": [0]}))
    with pytest.raises(ValueError, match="refusing posix.system|refusing os.system|not a CIFAR-10"):
        read_batch(tmp_path / "bad")
    assert not (REPO / "PLANTED_RAN").exists() and not (tmp_path / "PLANTED_RAN").exists()


# --- 9: run folders stay under out_dir ------------------------------------------------------
@pytest.mark.parametrize("override,needle", [("sweep_name=../../x", "sweep_name"),
                                             ("sweep_name=/tmp/abs", "sweep_name"),
                                             ("out_dir=''", "out_dir")])
def test_run_folders_are_confined_to_out_dir(override, needle):
    with pytest.raises(ValueError, match=needle):
        validate(compose_config([override]))


# --- 11: one clear line for every bad value -------------------------------------------------
@pytest.mark.parametrize("overrides,needle", [
    (["seed=18446744073709551616"], "seed must be in"),
    (["seed=-1"], "seed must be in"),
    ([f"threads={(os.cpu_count() or 1) + 1}"], "CPUs"),
    (["optimizer=clion", "optimizer.nu=inf"], "optimizer.nu=inf"),
    (["optimizer.lr=inf"], "optimizer.lr=inf"),
    (["dtype=bfloat16"], "float32, float64"),
    (["problem.d=100000000000000"], "problem.d=100000000000000 does not fit"),
    (["steps=100000000000000"], "steps=100000000000000"),
])
def test_bad_values_are_rejected_before_allocating(overrides, needle):
    with pytest.raises(ValueError, match=needle):
        validate(compose_config(overrides))


def test_command_line_checks_what_hydra_uses_first(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert "is a file" in check_command_line([f"out_dir={a_file}"])
    assert "is a file" in check_command_line([f"out_dir={a_file / 'sub'}"])
    assert "n_jobs=0" in check_command_line(["-m", "hydra.launcher.n_jobs=0"])
    assert "sweep_name" in check_command_line(["sweep_name=a,../b"])
    assert check_command_line(["-m", "seed=0,1", f"out_dir={tmp_path}", "hydra.launcher.n_jobs=2"]) is None


@pytest.mark.parametrize("args,needle", [
    (["out_dir={file}"], "is a file"),
    (["-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=0"], "n_jobs=0"),
    (["sweep_name=../../x"], "sweep_name"),
    (["optimizer.lr=1e39"], "optimizer.lr=1e+39"),
    (["dtype=bfloat16"], "dtype"),
])
def test_bad_input_through_the_command_line_is_one_line(tmp_path, args, needle):
    a_file = tmp_path / "file"
    a_file.write_text("")
    args = [a.format(file=a_file) for a in args]
    if not any(a.startswith("out_dir=") for a in args):
        args.append(f"out_dir={tmp_path / 'out'}")
    proc = run_cli(*args, "steps=5", "problem.d=10", "progress=off", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2 and needle in text and "Traceback" not in text, text
    assert len([line for line in text.splitlines() if "error" in line.lower()]) == 1, text


# How the parent left SIGINT for the run it starts: a shell's background job or a test harness may
# ignore or block it, and Ctrl-C must still stop the run (lionconv.app.run restores it).
PARENT_SIGINT = {
    "default": None,
    "ignored": lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    "blocked": lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}),
}


# (the signal set-up is the app's, before either engine starts: the loop is tried once)
@pytest.mark.parametrize("parent,engine", [("default", "stacked"), ("default", "loop"),
                                           ("ignored", "stacked"), ("blocked", "stacked")])
def test_ctrl_c_on_a_single_run_is_one_line_and_resumable(tmp_path, parent, engine):
    from lionconv.batched import ONE_RUN_LOOP

    args = ["problem.d=20000", "steps=100000", "checkpoint_every=50", "progress=off",
            f"out_dir={tmp_path}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), **({ONE_RUN_LOOP: "1"} if engine == "loop" else {})}
    proc = subprocess.Popen([sys.executable, str(REPO / "experiments" / "train.py"), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=PARENT_SIGINT[parent])
    deadline = time.monotonic() + 120
    while not list(tmp_path.rglob("checkpoint.pt")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130 and "Traceback" not in out and "interrupted" in out, out
    (summary,) = tmp_path.rglob("summary.json")
    assert json.loads(summary.read_text())["status"] == "running"


def test_result_files_get_the_users_umask(tmp_path):
    cfg = compose_config(TINY, tmp_path=tmp_path)
    launch(cfg, echo=quiet)
    mask = os.umask(0)
    os.umask(mask)
    for f in run_folder(cfg)[0].iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f


def test_analysis_only_without_runs_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "reproduce.py"), "--analysis-only",
                           "--only", "rate_in_K", "--results", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "error" in proc.stderr, proc.stderr


def test_ctrl_c_outside_a_run_is_the_same_one_line(monkeypatch, capsys):
    """Ctrl-C while Hydra composes a sweep's jobs (before any run): no traceback, exit 130."""
    from lionconv import app

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "main", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        app.run(["-m", "seed=0,1"])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip() == app.INTERRUPTED
