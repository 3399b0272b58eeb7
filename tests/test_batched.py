"""Batched runs equal one-run runs: tables, summaries, divergence, checkpoints and resume."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from conftest import compose_config, run_cli, summaries
from lionconv import batched
from lionconv.train import launch, run_folder

QUIET = dict(echo=lambda message: None)
# Columns summed in float64 in another order by the batch (everything else is bit-identical).
SUMMED = {"grad_l1", "grad_l2", "l1_l2", "ratio_r", "kkt_residual", "feasibility", "avg_grad_l1",
          "avg_kkt_residual", "mb_grad_l1", "mb_grad_l2", "mb_l1_l2", "mb_ratio_r", "grad_mean"}
OPTIMIZERS = [
    ["optimizer=lion", "optimizer.lr=0.01", "optimizer.weight_decay=0.3"],
    ["optimizer=clion", "optimizer.lr=0.01", "optimizer.nu=0.05"],  # the gate takes both branches
    ["optimizer=clion_coordinate", "optimizer.lr=0.01", "optimizer.nu=0.05"],
    ["optimizer=clion", "optimizer.gate=tensor", "optimizer.lr=0.01", "optimizer.nu=0.05"],
    ["optimizer=signsgd", "optimizer.lr=0.005"],
    ["optimizer=sgd", "optimizer.lr=0.05", "optimizer.weight_decay=0.1"],
]


def _sweep(tmp_path, extra=(), steps=(30, 55), seeds=(0, 1), opts=OPTIMIZERS):  # noqa: B006
    return [(compose_config([*opt, f"steps={k}", f"seed={s}", "problem.d=64", "progress=off",
                             *extra], tmp_path=tmp_path), "")
            for opt, k, s in itertools.product(opts, steps, seeds)]


def _compare_frames(a: pd.DataFrame, b: pd.DataFrame, rtol: float) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for column in a.columns:
        if column == "wall_time":
            continue
        if column in SUMMED:
            np.testing.assert_allclose(b[column], a[column], rtol=rtol, atol=0, err_msg=column)
        else:
            pd.testing.assert_series_equal(b[column], a[column], check_exact=True)


def _compare_summaries(a: dict, b: dict, rtol: float) -> None:
    skip = {"wall_time_s", "provenance"}
    for key in set(a) | set(b):
        if key in skip:
            continue
        x, y = a[key], b[key]
        if isinstance(x, dict) and isinstance(y, dict):
            _compare_summaries(x, y, rtol)
        elif isinstance(x, float) and isinstance(y, float):
            assert y == pytest.approx(x, rel=rtol, abs=0), key
        else:
            assert x == y, key


def _run_dirs(jobs):
    return [run_folder(cfg, slug)[0] for cfg, slug in jobs]


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 1e-12)])
def test_batched_equals_one_run(tmp_path, dtype, rtol):
    """Seeds × K × optimizers (CLion's three gates, SGD with L2) in one batch, per-run
    generators: x, losses and noise are bit-identical, float64 sums within 1e-12."""
    alone = _sweep(tmp_path / "alone", [f"dtype={dtype}"])
    together = _sweep(tmp_path / "batched", [f"dtype={dtype}"])
    expected = [launch(cfg, slug, **QUIET) for cfg, slug in alone]
    got = batched.run_configs(together, **QUIET)
    assert len(got) == len(expected) == 24
    fractions = set()
    for a, b, dir_a, dir_b in zip(expected, got, _run_dirs(alone), _run_dirs(together)):
        assert b["status"] == a["status"] == "finished"
        _compare_summaries(a, b, rtol)
        for table in ("metrics.parquet", "tensor_metrics.parquet"):
            _compare_frames(pd.read_parquet(dir_a / table), pd.read_parquet(dir_b / table), rtol)
        assert not (dir_b / "checkpoint.pt").exists()
        assert dir_b.name == dir_a.name and (dir_b / "config.yaml").exists()  # same identity
        if a["optimizer"] == "clion":
            fractions.add(a["mean_sign_fraction"])
    assert any(0 < f < 1 for f in fractions)  # the gates did switch within runs


PROBLEMS = {
    "quadratic, gaussian": ["problem=quadratic", "problem.d=16", "problem.sigma=1.0"],
    "quadratic, two-point": ["problem=quadratic", "problem.d=16", "problem.init=0", "problem.noise=two_point",
                             "problem.noise_a=1", "problem.noise_b=9"],
    "scaled, two-point": ["problem.noise=two_point", "problem.noise_a=1", "problem.noise_b=3"],
    "rotated": ["problem=rotated_separable"],
    "active face": ["problem.shift=2", "optimizer.weight_decay=8.0"],  # λ = √d: the face u = 1 < μ
}


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_batched_equals_one_run_on_every_stackable_problem(tmp_path, problem):
    """Two-point noise, the rotated family, the quadratic's grad_mean and Lion's weight decay on an
    active face (face_fraction) are batched too, and equal their one-run runs."""
    opts = [OPTIMIZERS[0], OPTIMIZERS[1], OPTIMIZERS[5]] if problem != "active face" else OPTIMIZERS[:2]
    extra = ["dtype=float64", *PROBLEMS[problem]]
    alone = _sweep(tmp_path / "alone", extra, steps=(40,), seeds=(0, 1), opts=opts)
    together = _sweep(tmp_path / "batched", extra, steps=(40,), seeds=(0, 1), opts=opts)
    assert all(batched.unstackable_reason(cfg) is None for cfg, _ in together)
    expected = [launch(cfg, slug, **QUIET) for cfg, slug in alone]
    got = batched.run_configs(together, **QUIET)
    for a, b, dir_a, dir_b in zip(expected, got, _run_dirs(alone), _run_dirs(together)):
        assert b["status"] == a["status"] == "finished"
        _compare_summaries(a, b, 1e-12)
        frame_a, frame_b = pd.read_parquet(dir_a / "metrics.parquet"), pd.read_parquet(dir_b / "metrics.parquet")
        _compare_frames(frame_a, frame_b, 1e-12)
    assert ("grad_mean" in frame_b.columns) == problem.startswith("quadratic")
    if problem == "active face":  # the last run: CLion with λ = 8 (measured, and equal to alone above)
        assert frame_b["face_fraction"].between(0, 1).all() and frame_b["face_fraction"].max() > 0


def test_batched_zero_chain_equals_one_run(tmp_path):
    """The lower-bound instance (THEORY §9) batched: each run's reveal draws, oracle (the links
    past prog_{1/4} hidden or scaled by 1/p), progress metrics and first-passage steps equal its
    one-run run; float32 and long chains stay on the loop."""
    extra = ["experiment=lower_bound", "problem.epsilon=0.005", "problem.sigma=null", "problem.p=0.3"]
    opts = [["optimizer=lion"], ["optimizer=clion", "optimizer.nu=0.05"], ["optimizer=signsgd"],
            ["optimizer=sgd", "optimizer.lr=0.5"]]
    alone = _sweep(tmp_path / "alone", extra, steps=(60, 150), seeds=(0, 1), opts=opts)
    together = _sweep(tmp_path / "batched", extra, steps=(60, 150), seeds=(0, 1), opts=opts)
    assert all(batched.unstackable_reason(cfg) is None for cfg, _ in together)
    expected = [launch(cfg, slug, **QUIET) for cfg, slug in alone]
    got = batched.run_configs(together, **QUIET)
    progress = []
    for a, b, dir_a, dir_b in zip(expected, got, _run_dirs(alone), _run_dirs(together)):
        assert b["status"] == a["status"] == "finished"
        _compare_summaries(a, b, 1e-12)
        frame_a, frame_b = pd.read_parquet(dir_a / "metrics.parquet"), pd.read_parquet(dir_b / "metrics.parquet")
        _compare_frames(frame_a, frame_b, 1e-12)
        progress.append(int(frame_b["prog_1"].iloc[-1]))
    assert max(progress) >= 3 and min(progress) < max(progress)  # links revealed, at different times
    for other in (["dtype=float32"], ["problem.epsilon=0.00005"]):  # (T = 54824 > SMALL_CHAIN)
        cfg = compose_config([*extra, *other, "steps=5"], tmp_path=tmp_path)
        assert batched.unstackable_reason(cfg) is not None


def test_diverged_run_is_masked_and_the_others_go_on(tmp_path):
    """One run blows up (SGD on the naive family with a huge step); the batch's other runs end
    as they do alone, and the diverged one stops at the one-run path's step."""
    opts = [["optimizer=sgd", "optimizer.lr=30.0"], ["optimizer=lion", "optimizer.lr=0.01"]]
    extra = ["problem=naive_separable", "dtype=float64", "log.grid=linear", "log.every=7"]
    alone = _sweep(tmp_path / "alone", extra, steps=(300,), seeds=(0,), opts=opts)
    together = _sweep(tmp_path / "batched", extra, steps=(300,), seeds=(0,), opts=opts)
    expected = [launch(cfg, slug, **QUIET) for cfg, slug in alone]
    got = batched.run_configs(together, **QUIET)
    assert [s["status"] for s in expected] == [s["status"] for s in got] == ["diverged", "finished"]
    for a, b, dir_a, dir_b in zip(expected, got, _run_dirs(alone), _run_dirs(together)):
        _compare_summaries(a, b, 1e-12)
        _compare_frames(pd.read_parquet(dir_a / "metrics.parquet"),
                        pd.read_parquet(dir_b / "metrics.parquet"), 1e-12)


def _kill_after_the_second_checkpoint(jobs, monkeypatch) -> None:
    """Run `jobs` batched and interrupt them (Ctrl-C) once every run has written its second checkpoint."""
    original = batched.BatchedRun._checkpoint
    calls = {"n": 0}

    def checkpoint_then_die(self):
        original(self)
        calls["n"] += 1
        if calls["n"] == 2 * len(jobs):  # the second checkpoint of every run, at step 40
            raise KeyboardInterrupt

    monkeypatch.setattr(batched.BatchedRun, "_checkpoint", checkpoint_then_die)
    with pytest.raises(KeyboardInterrupt):
        batched.run_configs(jobs, **QUIET)
    monkeypatch.setattr(batched.BatchedRun, "_checkpoint", original)


@pytest.mark.parametrize("lr_schedule", [[], ["lr_schedule=cosine", "lr_schedule.warmup_steps=5"]],
                         ids=["constant lr", "cosine lr"])
def test_checkpoint_and_resume_are_bit_identical(tmp_path, monkeypatch, lr_schedule):
    """A batch killed after a checkpoint resumes (batched or alone) to the uninterrupted result."""
    extra = ["checkpoint_every=20", "dtype=float64", *lr_schedule]
    stacked = [opt for opt in OPTIMIZERS if not any("weight_decay" in o for o in opt)]  # all batched
    full = _sweep(tmp_path / "full", extra, steps=(50, 90), seeds=(0,), opts=stacked)
    reference = batched.run_configs(full, **QUIET)

    jobs = _sweep(tmp_path / "killed", extra, steps=(50, 90), seeds=(0,), opts=stacked)
    assert all(batched.unstackable_reason(cfg) is None for cfg, _ in jobs)
    _kill_after_the_second_checkpoint(jobs, monkeypatch)
    monkeypatch.undo()
    dirs = _run_dirs(jobs)
    assert all((d / "checkpoint.pt").exists() for d in dirs)
    half = len(jobs) // 2
    resumed = batched.run_configs(jobs[:half], **QUIET)  # half resume batched...
    resumed += [launch(cfg, slug, **QUIET) for cfg, slug in jobs[half:]]  # ...half alone
    for i, (a, b, dir_a, dir_b) in enumerate(zip(reference, resumed, _run_dirs(full), dirs)):
        # resumed batched: bit-identical; resumed alone: its float64 sums in the one-run order
        rtol = 0.0 if i < half else 1e-12
        _compare_summaries(a, b, rtol)
        for table in ("metrics.parquet", "tensor_metrics.parquet"):
            _compare_frames(pd.read_parquet(dir_a / table), pd.read_parquet(dir_b / table), rtol)
        assert not (dir_b / "checkpoint.pt").exists()


def test_unstackable_configs_are_named():
    assert batched.unstackable_reason(compose_config(["problem=digits_mlp"])) is not None
    assert batched.unstackable_reason(compose_config(["optimizer=sgd", "optimizer.momentum=0.9"]))
    assert batched.unstackable_reason(compose_config(["dtype=bfloat16"]))
    assert batched.unstackable_reason(compose_config(["problem=quadratic"])) is None


def test_batched_launcher_from_the_command_line(tmp_path):
    """`hydra/launcher=batched` on a mixed sweep (the snapshot runs cannot be stacked and run
    alone in the same process) writes the same runs as the basic launcher."""
    sweep = ["-m", "optimizer=lion,sgd", "seed=0,1", "log.snapshots=false,true", "steps=40",
             "problem.d=32", "dtype=float64", "progress=off"]
    run_cli(*sweep, f"out_dir={tmp_path / 'basic'}")
    proc = run_cli(*sweep, "hydra/launcher=batched", f"out_dir={tmp_path / 'batched'}")
    assert "batch: 4 runs of scaled_separable" in proc.stdout + proc.stderr
    a, b = summaries(tmp_path / "basic"), summaries(tmp_path / "batched")
    assert set(a) == set(b) and len(a) == 8
    for name in a:
        assert b[name]["status"] == a[name]["status"] == "finished"
        _compare_summaries(a[name], b[name], 1e-12)


def test_batched_equals_one_run_at_large_d(tmp_path):
    """d past the per-row-dot threshold (and past the one-run path's NumPy cut-off)."""
    opts = [OPTIMIZERS[0], OPTIMIZERS[1], OPTIMIZERS[5]]
    extra = ["problem.d=40000", "dtype=float64"]
    alone = [(compose_config([*o, "steps=6", "progress=off", *extra], tmp_path=tmp_path / "a"), "")
             for o in opts]
    together = [(compose_config([*o, "steps=6", "progress=off", *extra], tmp_path=tmp_path / "b"), "")
                for o in opts]
    expected = [launch(cfg, slug, **QUIET) for cfg, slug in alone]
    got = batched.run_configs(together, **QUIET)
    for a, b, dir_a, dir_b in zip(expected, got, _run_dirs(alone), _run_dirs(together)):
        _compare_summaries(a, b, 1e-12)
        _compare_frames(pd.read_parquet(dir_a / "metrics.parquet"),
                        pd.read_parquet(dir_b / "metrics.parquet"), 1e-12)


@pytest.mark.parametrize("jobs", [
    ["experiment=rate_in_K", "optimizer=clion", "steps=1000", "seed=3"],
    ["experiment=lion_vs_baselines", "problem=mnist1d", "optimizer=sgd_momentum", "lr_scale=0.3333333333333333",
     "optimizer.weight_decay=0.0", "seed=1"],
    ["experiment=negative_controls", "control=skewed_signsgd", "steps=100", "seed=2"],
    ["optimizer=lion", "+tags=[a]", "seed=1"],            # not a plain change: Hydra composes it
])
def test_cached_sweep_configs_equal_hydras(jobs):
    """The batched launcher composes each set of group choices once and applies the value overrides
    itself: the job's config, its task overrides and override_dirname are Hydra's."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from hydra_plugins.lionconv_launcher.batched_launcher import CachedSweepConfigs
    from lionconv.resources import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", [], run_mode=__import__("hydra").types.RunMode.MULTIRUN)
        cached = CachedSweepConfigs(loader.load_sweep_config, loader.repository)
        for _ in range(2):  # the second time from the cache
            fast, slow = cached(master, jobs), loader.load_sweep_config(master, jobs)
            assert OmegaConf.to_container(fast, resolve=True) == OmegaConf.to_container(slow, resolve=True)
            assert fast.hydra.job.override_dirname == slow.hydra.job.override_dirname


@pytest.mark.parametrize("jobs", [
    ["experiment=rate_in_K", "optimizer=clion", "steps=1000", "seed=3"],
    ["optimizer=lion", "seed=1", "+note=${hydra:job.num}"],  # into the hydra node
])
def test_launcher_takes_the_validated_config_and_resolves_it_as_run_job(jobs):
    """The launcher gets, once, the config the sweeper composed to validate the batch (not a
    second composition); its task container equals run_job's (a copy without `hydra`, resolved
    after HydraConfig.set_config), `${hydra:...}` included."""
    import copy

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from hydra_plugins.lionconv_launcher.batched_launcher import CachedSweepConfigs, task_container
    from lionconv.resources import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", [], run_mode=__import__("hydra").types.RunMode.MULTIRUN)
        cached = CachedSweepConfigs(loader.load_sweep_config, loader.repository)
        validated = cached(master, jobs)
        taken = cached.take(master, jobs)
        assert taken is validated
        assert cached.take(master, jobs) is not validated  # handed once: then composed anew
        with open_dict(taken):
            taken.hydra.job.num = 7
        expected_cfg = copy.deepcopy(taken)
        HydraConfig.instance().set_config(expected_cfg)
        with open_dict(expected_cfg):
            del expected_cfg["hydra"]
        expected = OmegaConf.to_container(expected_cfg, resolve=True, throw_on_missing=True)
        got = task_container(taken)
        assert got == expected and list(got) == list(expected)
        if "+note" in jobs[-1]:
            assert got["note"] == 7


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="drawing ahead needs threads=2")
def test_drawing_ahead_and_sums_on_the_worker_are_bit_identical(tmp_path, monkeypatch):
    """With threads ≥ 2 a large batch draws the next step's noise and sums this step's gradients on
    a worker thread, and applies CLion's sign row by row: forced here on a small batch, killed
    after a checkpoint and resumed, it equals the plain batch (one thread, no worker) bit for bit."""
    opts = [["optimizer=lion", "optimizer.lr=0.01"], *OPTIMIZERS[1:3], *OPTIMIZERS[4:]]  # λ = 0: no dot
    extra = ["checkpoint_every=20", "dtype=float32"]
    plain = _sweep(tmp_path / "plain", extra, steps=(50, 90), seeds=(0,), opts=opts)
    reference = batched.run_configs(plain, **QUIET)
    monkeypatch.setattr(batched, "AHEAD_ELEMENTS", 0)
    monkeypatch.setattr(batched, "ROW_OPS_D", 0)
    started = []
    original_start = batched.NoiseStream.start
    monkeypatch.setattr(batched.NoiseStream, "start",
                        lambda self: (started.append(self.ahead), original_start(self))[1])
    summed_on = set()
    original_sums = batched.Float64Sums.__call__
    monkeypatch.setattr(batched.Float64Sums, "__call__", lambda self, out: (
        summed_on.add(__import__("threading").current_thread().name), original_sums(self, out))[1])
    jobs = _sweep(tmp_path / "ahead", [*extra, "threads=2"], steps=(50, 90), seeds=(0,), opts=opts)
    _kill_after_the_second_checkpoint(jobs, monkeypatch)
    resumed = batched.run_configs(jobs, **QUIET)
    assert started and all(started)  # every draw went through the worker
    assert any(name.startswith("lionconv-draw-ahead") for name in summed_on)
    for a, b, dir_a, dir_b in zip(reference, resumed, _run_dirs(plain), _run_dirs(jobs)):
        _compare_summaries(a, b, 0.0)
        _compare_frames(pd.read_parquet(dir_a / "metrics.parquet"),
                        pd.read_parquet(dir_b / "metrics.parquet"), 0.0)


def test_shares_split_the_work_evenly_and_keep_unstackable_runs_out():
    jobs = [(compose_config([f"steps={k}", f"seed={s}"]), "") for k in (1000, 100, 10) for s in range(4)]
    jobs.append((compose_config(["problem=digits_mlp"]), ""))
    parts = batched.shares(jobs, 2)
    assert sorted(i for part in parts for i in part) == list(range(12))  # not the network run
    loads = [sum(jobs[i][0]["steps"] for i in part) for part in parts]
    assert loads == [2220, 2220]
    assert batched.shares(jobs[:1], 3) == [[0]]  # no empty shares


@pytest.mark.parametrize("warm", [False, True])
def test_runs_dealt_into_processes_equal_one_process(tmp_path, warm):
    """n_jobs=2: the stackable runs in two processes (forked by run_configs, as one thread a run
    allows, or spawned beforehand as the launcher starts them for other runs), the network run
    here; the runs' files are those of one process, bit for bit."""
    opts = [OPTIMIZERS[1], OPTIMIZERS[4]]
    one = _sweep(tmp_path / "one", ["dtype=float32"], steps=(30, 55), seeds=(0,), opts=opts)
    two = _sweep(tmp_path / "two", ["dtype=float32"], steps=(30, 55), seeds=(0,), opts=opts)
    net = ["problem=digits_mlp", "steps=3", "progress=off"]
    one.append((compose_config(net, tmp_path=tmp_path / "one"), ""))
    two.append((compose_config(net, tmp_path=tmp_path / "two"), ""))
    expected = batched.run_configs(one, **QUIET)  # (this process's torch threads have started)
    assert batched.fork_safe(two)
    pool = batched.process_pool(2) if warm else None
    try:
        got = batched.run_configs(two, n_jobs=2, pool=pool, **QUIET)
    finally:
        if pool is not None:
            pool.shutdown()
    for a, b, dir_a, dir_b in zip(expected, got, _run_dirs(one), _run_dirs(two)):
        assert b["status"] == a["status"] == "finished"
        _compare_summaries(a, b, 0.0)
        _compare_frames(pd.read_parquet(dir_a / "metrics.parquet"),
                        pd.read_parquet(dir_b / "metrics.parquet"), 0.0)


def test_workers_are_forked_only_for_one_cpu_thread_a_run():
    """A forked child hangs in a parallel region if its parent's OpenMP threads had started; CUDA
    cannot start in a fork of a process that started it: those jobs get spawned workers."""
    import sys

    one = ({"threads": 1, "device": "cpu"}, "")
    assert batched.fork_safe([one, one]) is sys.platform.startswith("linux")
    assert not batched.fork_safe([one, ({"threads": 2, "device": "cpu"}, "")])
    assert not batched.fork_safe([one, ({"threads": 1, "device": "cuda"}, "")])


def test_a_bad_value_stops_a_multi_process_sweep_before_it_starts(tmp_path):
    jobs = _sweep(tmp_path, ["dtype=float32"], steps=(30,), seeds=(0,), opts=[OPTIMIZERS[4]])
    jobs[0][0]["steps"] = -5
    with pytest.raises(ValueError, match="steps"):
        batched.run_configs(jobs, n_jobs=2, **QUIET)
    assert not list(tmp_path.rglob("config.yaml"))


def test_launcher_counts_n_jobs_as_joblib():
    import os

    from hydra_plugins.lionconv_launcher.batched_launcher import BatchedLauncher

    assert BatchedLauncher(n_jobs=-1).n_jobs == (os.cpu_count() or 1)
    assert BatchedLauncher(n_jobs=2).n_jobs == 2
    with pytest.raises(ValueError, match="max_elements=0"):
        BatchedLauncher(max_elements=0)


def test_a_single_run_goes_through_the_stacked_engine_unless_told(tmp_path, monkeypatch):
    """`batched.launch` (the app's single runs): a stackable config as a batch of one, equal to
    train.py's loop (float64 sums within 1e-12); LIONCONV_ONE_RUN_LOOP=1 and unstackable configs
    take the loop."""
    batches = []
    real = batched.run_batch
    monkeypatch.setattr(batched, "run_batch",
                        lambda runs, echo, **kw: batches.append(len(runs)) or real(runs, echo, **kw))
    args = ["optimizer=clion", "optimizer.lr=0.01", "optimizer.nu=0.05", "steps=40", "problem.d=64",
            "progress=off"]
    stacked = batched.launch(compose_config(args, tmp_path=tmp_path / "stacked"), **QUIET)
    assert batches == [1]
    loop = launch(compose_config(args, tmp_path=tmp_path / "loop"), **QUIET)
    assert stacked["status"] == loop["status"] == "finished"
    _compare_summaries(loop, stacked, 1e-12)
    dirs = [run_folder(compose_config(args, tmp_path=tmp_path / name))[0] for name in ("loop", "stacked")]
    _compare_frames(*(pd.read_parquet(d / "metrics.parquet") for d in dirs), rtol=1e-12)

    monkeypatch.setenv(batched.ONE_RUN_LOOP, "1")
    batched.launch(compose_config(args, tmp_path=tmp_path / "forced"), **QUIET)
    monkeypatch.delenv(batched.ONE_RUN_LOOP)
    batched.launch(compose_config(["optimizer=sgd_momentum", "steps=40", "problem.d=64", "progress=off"],
                                  tmp_path=tmp_path / "unstackable"), **QUIET)
    assert batches == [1]  # neither went through a batch


def test_an_error_inside_a_batch_fails_its_runs_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    """As train.py's loop ends one run: status 'failed' with the message and the steps recorded
    (up to the last host copy), the lock given back at once; a run that had finished stays
    finished; the same sweep run again resumes the failed runs from their checkpoints."""
    jobs = _sweep(tmp_path, ["checkpoint_every=50"], steps=(60, 300), seeds=(0,), opts=OPTIMIZERS[:2])
    real_step = batched.Batch.step

    def failing(self, slot, draw_next=False, k=None):
        if self.runs[0].start + self.runs[0].n_recorded + slot == 120:
            raise RuntimeError("boom")
        real_step(self, slot, draw_next, k)

    monkeypatch.setattr(batched.Batch, "step", failing)
    got = batched.run_configs(jobs, echo=print)
    assert [s["status"] for s in got] == ["finished", "failed", "finished", "failed"]
    for s, (cfg, _) in zip(got, jobs):
        if s["status"] == "failed":
            assert s["error"] == "RuntimeError: boom" and s["steps_done"] == 100  # last copy
            assert s["averages"]["n"] == 100
            with batched.runio.lock_run_dir(run_folder(cfg)[0]):  # not held any more
                pass
    monkeypatch.setattr(batched.Batch, "step", real_step)
    capsys.readouterr()
    again = batched.run_configs(jobs, echo=print)
    assert [s["status"] for s in again] == ["finished"] * 4
    out = capsys.readouterr().out
    assert out.count("resume:") == 2 and out.count("skip:") == 2


def test_a_run_begun_on_the_loop_resumes_on_the_stacked_engine(tmp_path, monkeypatch):
    """What every single run checkpointed before the stacked engine took single runs does."""
    from lionconv import train

    args = ["optimizer=clion", "optimizer.lr=0.01", "optimizer.nu=0.05", "steps=90", "problem.d=64",
            "checkpoint_every=20", "progress=off"]
    reference = launch(compose_config(args, tmp_path=tmp_path / "full"), **QUIET)
    cfg = compose_config(args, tmp_path=tmp_path / "killed")
    original = train.Trainer._checkpoint

    def checkpoint_then_die(self):
        original(self)
        if self.state.step == 40:
            raise KeyboardInterrupt

    monkeypatch.setattr(train.Trainer, "_checkpoint", checkpoint_then_die)
    with pytest.raises(KeyboardInterrupt):
        launch(cfg, **QUIET)
    monkeypatch.undo()
    resumed = batched.launch(cfg, **QUIET)
    _compare_summaries(reference, resumed, 1e-12)
    dirs = [run_folder(compose_config(args, tmp_path=tmp_path / n))[0] for n in ("full", "killed")]
    _compare_frames(*(pd.read_parquet(d / "metrics.parquet") for d in dirs), rtol=1e-12)


def test_a_batch_shows_a_progress_bar(tmp_path, capsys):
    jobs = _sweep(tmp_path, ["progress=on"], steps=(300,), seeds=(0,), opts=OPTIMIZERS[:1])
    batched.run_configs(jobs, **QUIET)
    assert "300/300" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lr_schedules_are_batched_and_equal_one_run(tmp_path, dtype):
    """Rows on a cosine schedule (with warmup, with a floor) share a batch with constant-lr rows:
    η_k per row and step, decoupled decay η_kλ, SGD's L2, the lr column: equal to one run alone."""
    schedules = [["lr_schedule=cosine", "lr_schedule.warmup_steps=7"],
                 ["lr_schedule=cosine", "lr_schedule.final_fraction=0.1"], []]
    opts = [[*opt, *sched] for opt in (OPTIMIZERS[0], OPTIMIZERS[1], OPTIMIZERS[5]) for sched in schedules]
    extra = [f"dtype={dtype}"]
    alone = _sweep(tmp_path / "alone", extra, steps=(20, 45), seeds=(0,), opts=opts)
    together = _sweep(tmp_path / "batched", extra, steps=(20, 45), seeds=(0,), opts=opts)
    assert all(batched.unstackable_reason(cfg) is None for cfg, _ in together)
    expected = [launch(cfg, slug, **QUIET) for cfg, slug in alone]
    got = batched.run_configs(together, **QUIET)
    lrs = set()
    for a, b, dir_a, dir_b in zip(expected, got, _run_dirs(alone), _run_dirs(together)):
        assert b["status"] == a["status"] == "finished"
        _compare_summaries(a, b, 1e-12)
        frame_a, frame_b = pd.read_parquet(dir_a / "metrics.parquet"), pd.read_parquet(dir_b / "metrics.parquet")
        _compare_frames(frame_a, frame_b, 1e-12)
        lrs.add(frame_b["lr"].nunique())
    assert max(lrs) > 1 and min(lrs) == 1  # scheduled and constant rows were both there
