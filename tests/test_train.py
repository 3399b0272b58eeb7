"""The training app: config composition, run layout, metrics rows, divergence, bad input."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.errors import ConfigCompositionException

from conftest import CONF, compose_config, run_cli, summaries
from lionconv import theory
from lionconv.train import launch, logged_steps, run_folder

TINY = ["problem.d=10", "steps=40", "progress=off"]


def _groups():
    return {g.name: sorted(p.stem for p in g.glob("*.yaml"))
            for g in CONF.iterdir() if g.is_dir() and g.name != "hydra"}


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in _groups().items()
                                          if g not in ("experiment", "control") for o in opts])
def test_every_config_composes(group, option):
    cfg = compose_config([f"{group}={option}"])
    if group in ("schedule", "optimizer"):  # variants (clion_coordinate) keep their kind as name
        assert option.startswith(cfg[group]["name"])
    else:
        assert cfg[group]["name"] == option


@pytest.mark.parametrize("option", _groups()["control"])
def test_every_control_cell_composes_in_its_presets(option):
    # control/ holds THEORY §8's cells (global packages): they compose inside the §8 presets
    for preset in ("negative_controls", "negative_controls_exact"):
        cfg = compose_config([f"experiment={preset}", f"control={option}"])
        assert cfg["preset"] == preset and cfg["problem"]["name"] == "quadratic"


@pytest.mark.parametrize("launcher", ["local_parallel", "slurm", "local_submitit", "joblib"])
def test_launcher_presets_compose(launcher):
    cfg = compose_config([f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert "_target_" in cfg.hydra.launcher


@pytest.mark.parametrize("override", ["problem.d=abc", "steps=1.5", "optimizer.lrr=0.1",
                                      "optimizer=adam", "problem=mnist", "log.every=x"])
def test_bad_types_and_unknown_keys_fail_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        compose_config([override])


def test_logged_steps_grids():
    assert logged_steps(10, "linear", 1, 30, False).tolist() == list(range(10))
    assert logged_steps(10, "linear", 4, 30, False).tolist() == [0, 4, 8, 9]
    geo = logged_steps(1000, "geometric", 1, 10, False)
    assert geo[0] == 0 and geo[-1] == 999 and len(geo) <= 10
    ratios = np.diff(np.log(geo[1:] + 1))
    assert np.allclose(ratios, ratios.mean(), atol=0.15)  # evenly spaced in log k
    assert logged_steps(50, "auto", 1, 10, True).tolist() == list(range(50))
    assert len(logged_steps(50, "auto", 1, 10, False)) <= 10


def test_single_run_layout_and_metrics(tmp_path):
    cfg = compose_config(TINY + ["optimizer=clion", "optimizer.weight_decay=0.5",
                                 "optimizer.lr=0.01"], tmp_path=tmp_path)
    summary = launch(cfg)
    run_dir, run_id = run_folder(cfg)
    assert summary["status"] == "finished" and summary["run_id"] == run_id
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.parquet",
                                                   "tensor_metrics.parquet", "summary.json"}
    assert not (run_dir / "checkpoint.pt").exists()
    rows = pd.read_parquet(run_dir / "metrics.parquet")
    assert rows["step"].tolist() == list(range(40))  # closed-form gradient: every step logged
    # The running average is the mean of the logged values, and the summary holds (1/K)Σ.
    np.testing.assert_allclose(rows["avg_grad_l1"], rows["grad_l1"].expanding().mean(), rtol=1e-12)
    assert summary["averages"]["kind"] == "exact"
    assert summary["averages"]["grad_l1"] == pytest.approx(rows["grad_l1"].mean(), rel=1e-12)
    # KKT residual from the logged x and ∇f: G = ‖g‖₁ + λ<g, x> is ‖g‖₁ when x = 0 ... here just
    # check the λ = 0.5 box quantities are consistent with x_linf.
    np.testing.assert_allclose(rows["feasibility"], np.maximum(0, 0.5 * rows["x_linf"] - 1), atol=1e-12)
    assert rows["sign_fraction"].between(0, 1).all() and rows["tau"].gt(0).all()
    assert summary["mean_sign_fraction"] is not None and summary["min_tau"] == pytest.approx(rows["tau"].min())
    assert set(summary["provenance"]) >= {"git_commit", "torch", "numpy", "python", "cpu", "hostname"}
    assert summary["constants"]["kind"] == "closed_form"


def test_tensor_rows_add_up_to_the_whole_model_rows(tmp_path):
    """Per-tensor rows (kept as sums, converted when the tables are written, here at several
    checkpoints) agree with each logged step's whole-model row."""
    lam = 20.0   # box 1/λ = 0.05, smaller than the initial weights: feasibility > 0 early on
    cfg = compose_config(["problem=digits_mlp", "problem.width=8", "problem.estimate_constants=false",
                          "steps=12", "log.grid=linear", "log.every=1", "checkpoint_every=5",
                          "progress=off", "optimizer=lion", f"optimizer.weight_decay={lam}",
                          "optimizer.lr=0.01"], tmp_path=tmp_path)
    launch(cfg)
    run_dir, _ = run_folder(cfg)
    rows = pd.read_parquet(run_dir / "metrics.parquet").set_index("step")
    tensors = pd.read_parquet(run_dir / "tensor_metrics.parquet")
    names = tensors["tensor"].iloc[:6].tolist()
    assert len(tensors) == 6 * 12 and tensors["tensor"].tolist() == names * 12
    assert tensors["step"].tolist() == [k for k in range(12) for _ in names]
    by_step = tensors.groupby("step")
    for key in ("grad_l1", "kkt_residual"):
        np.testing.assert_allclose(by_step[key].sum(), rows[key], rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(by_step["grad_l2"].apply(lambda v: (v ** 2).sum())),
                               rows["grad_l2"], rtol=1e-12)
    # ‖x‖∞ of the model is the largest per-tensor one, so feasibility is the largest too
    np.testing.assert_array_equal(by_step["feasibility"].max(), rows["feasibility"])
    assert rows["feasibility"].gt(0).any()


def test_horizon_schedule_uses_run_d_and_K(tmp_path):
    cfg = compose_config(["problem.d=100", "steps=64", "progress=off", "schedule=horizon",
                          "schedule.c1=1", "schedule.c2=2", "schedule.c3=3"], tmp_path=tmp_path)
    summary = launch(cfg)
    b1, b2, lr = theory.horizon_schedule(64, 100, 1.0, 2.0, 3.0)
    assert (b1, b2) == pytest.approx((1 - 1 / 8, 1 - 2 / 8))
    assert lr == pytest.approx(3 / (10 * 64 ** 0.75))
    assert (summary["beta1"], summary["beta2"], summary["lr"]) == pytest.approx((b1, b2, lr))


def test_second_launch_skips_finished_run(tmp_path):
    cfg = compose_config(TINY, tmp_path=tmp_path)
    first = launch(cfg)
    messages = []
    second = launch(cfg, echo=messages.append)
    assert second == first and messages[0].startswith("skip")


def test_restart_moves_old_run_aside(tmp_path):
    cfg = compose_config(TINY, tmp_path=tmp_path)
    launch(cfg)
    launch({**cfg, "restart": True}, echo=lambda m: None)
    names = [p.name for p in (tmp_path / "default").iterdir() if not p.name.startswith(".")]
    assert len(names) == 2 and any(".replaced-" in n for n in names)


def test_changed_config_gets_a_new_folder(tmp_path):
    a = run_folder(compose_config(TINY, tmp_path=tmp_path))[0]
    b = run_folder(compose_config(TINY + ["optimizer.lr=0.5"], tmp_path=tmp_path))[0]
    c = run_folder(compose_config(TINY + ["progress=on", "checkpoint_every=3"], tmp_path=tmp_path))[0]
    assert a != b and a == c


def test_diverging_run_is_recorded_and_sweep_goes_on(tmp_path):
    # SGD with lr = 3 on θ²/2 multiplies θ by −2 per step: overflow, then NaN.
    proc = run_cli("-m", "problem=quadratic", "optimizer=sgd", "optimizer.lr=3,0.5", "steps=300",
                   f"out_dir={tmp_path}", "progress=off")
    runs = summaries(tmp_path)
    assert len(runs) == 2, proc.stdout + proc.stderr
    by_lr = {s["lr"]: s for s in runs.values()}
    assert by_lr[3.0]["status"] == "diverged"
    # θ_k = (−2)^k, so θ_k² = 2^(2k) overflows float32 (max ≈ 2^128) at k = 64: the first
    # non-finite loss, which is the step the summary must name.
    assert by_lr[3.0]["diverged_step"] == 64
    assert by_lr[0.5]["status"] == "finished"
    rows = pd.read_parquet(next(tmp_path.rglob("*lr=3*/metrics.parquet")))
    assert rows["step"].max() <= by_lr[3.0]["diverged_step"]


def test_end_to_end_multirun_from_the_command_line(tmp_path):
    run_cli("-m", "optimizer=lion,sgd", "problem=scaled_separable", "problem.d=10,100",
            "seed=0,1", "steps=30", f"out_dir={tmp_path}", "sweep_name=tiny")
    runs = summaries(tmp_path / "tiny")
    assert len(runs) == 8 and all(s["status"] == "finished" for s in runs.values())
    assert {(s["optimizer"], s["d"], s["seed"]) for s in runs.values()} == {
        (o, d, s) for o in ("lion", "sgd") for d in (10, 100) for s in (0, 1)}
    names = sorted(runs)
    assert all("__" in n and "optimizer=" in n for n in names)


@pytest.mark.parametrize("args,needle", [
    (["optimizer=adam"], "optimizer"),
    (["problem.d=0"], "d"),
    (["steps=0"], "steps must be > 0"),
    (["optimizer.lr=-1"], "lr"),
    (["optimizer.lr=0"], "lr"),
    (["optimizer=clion", "optimizer.nu=1e-3", "optimizer.nu_quantile=0.5"],
     "optimizer.nu=0.001 and optimizer.nu_quantile=0.5 are both set"),
    (["optimizer=clion", "optimizer.nu_quantile=1.5"], "Invalid nu_quantile: 1.5"),
    (["problem=cifar10", "problem.data_dir=/nonexistent/cifar"], "/nonexistent/cifar"),
])
def test_bad_input_gives_one_clear_message(tmp_path, args, needle):
    steps = [] if any(a.startswith("steps=") for a in args) else ["steps=5"]
    proc = run_cli(*args, *steps, f"out_dir={tmp_path}", check=False)
    assert proc.returncode != 0
    assert needle in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob("summary.json"))  # nothing half-written


def test_same_seed_is_bit_identical(tmp_path):
    cfg = compose_config(TINY + ["optimizer=signsgd", "optimizer.lr=0.01"], tmp_path=tmp_path)
    launch(cfg, echo=lambda m: None)
    a = pd.read_parquet(run_folder(cfg)[0] / "metrics.parquet").drop(columns="wall_time")
    launch({**cfg, "restart": True}, echo=lambda m: None)
    b = pd.read_parquet(run_folder(cfg)[0] / "metrics.parquet").drop(columns="wall_time")
    pd.testing.assert_frame_equal(a, b, check_exact=True)


SMALL_DIGITS = ["problem=digits_mlp", "problem.width=8", "problem.n_train=200",
                "problem.estimate_constants=false", "steps=12", "log.grid=linear", "log.every=3",
                "progress=off", "optimizer=clion", "optimizer.lr=1e-2"]


def _step0_direction(seed=0):
    """c_0 = (1 − β1)·g_0 (m_0 = 0), g_0 the run's first minibatch gradient, per tensor."""
    from lionconv.problems import build_problem

    problem = build_problem({"name": "digits_mlp", "width": 8, "n_train": 200,
                             "estimate_constants": False}, seed=seed)
    problem.stochastic_loss(torch.Generator().manual_seed(seed))
    return [0.1 * p.grad.double().numpy().ravel() for p in problem.params]


@pytest.mark.parametrize("gate", ["global", "tensor", "coordinate"])
def test_tau_and_sign_fraction_at_every_step(tmp_path, monkeypatch, gate):
    """τ_k and the sign-branch fraction of every step go to tau_steps.parquet (also across a
    checkpoint and chunk boundaries); logged rows carry the same values; the summary's min, mean
    and quantiles are those of the series. Step 0 checked by hand: c_0 = 0.1·g_0."""
    monkeypatch.setattr("lionconv.train.SERIES_CHUNK", 3)
    cs = _step0_direction()
    magnitudes = np.concatenate([np.abs(c) for c in cs])
    nonzero = magnitudes[magnitudes > 0]
    nu = float(np.median(nonzero))
    cfg = compose_config(SMALL_DIGITS + [f"optimizer.gate={gate}", f"optimizer.nu={nu!r}",
                                         "checkpoint_every=5"], tmp_path=tmp_path)
    summary = launch(cfg, echo=lambda m: None)
    run_dir, _ = run_folder(cfg)
    series = pd.read_parquet(run_dir / "tau_steps.parquet")
    rows = pd.read_parquet(run_dir / "metrics.parquet").set_index("step")
    assert series["step"].tolist() == list(range(12))
    assert series["tau"].gt(0).all() and series["sign_fraction"].between(0, 1).all()
    at_logged = series.set_index("step").loc[rows.index]
    np.testing.assert_array_equal(at_logged["tau"], rows["tau"])
    np.testing.assert_array_equal(at_logged["sign_fraction"], rows["sign_fraction"])
    assert summary["min_tau"] == series["tau"].min()
    assert summary["mean_sign_fraction"] == pytest.approx(series["sign_fraction"].mean(), rel=1e-12)
    quantiles = summary["tau_quantiles"]
    np.testing.assert_allclose([quantiles[q] for q in ("0.0", "0.5", "1.0")],
                               np.quantile(series["tau"], [0.0, 0.5, 1.0]), rtol=1e-12)
    # step 0 by hand (float32 run: tolerances of float32 rounding)
    assert series["tau"][0] == pytest.approx(nonzero.min(), rel=1e-5)
    expected = {"global": float(nonzero.min() >= nu),
                "tensor": sum(c.size for c in cs if np.abs(c[c != 0]).min() >= nu) / magnitudes.size,
                "coordinate": float(np.mean((magnitudes >= nu) | (magnitudes == 0)))}[gate]
    assert series["sign_fraction"][0] == pytest.approx(expected, abs=2e-3)
    if gate == "global":
        assert set(series["sign_fraction"]) <= {0.0, 1.0}


def test_series_survive_a_kill_and_resume(tmp_path, monkeypatch):
    from lionconv.problems.base import NetworkProblem

    monkeypatch.setattr("lionconv.train.SERIES_CHUNK", 4)  # chunks straddle the checkpoint at 5
    cfg = compose_config(SMALL_DIGITS + ["optimizer.gate=coordinate", "optimizer.nu=1e-3",
                                         "checkpoint_every=5"], tmp_path=tmp_path / "a")
    launch(cfg, echo=lambda m: None)
    whole = pd.read_parquet(run_folder(cfg)[0] / "tau_steps.parquet")
    killed = {**cfg, "out_dir": str(tmp_path / "b")}
    original, calls = NetworkProblem.stochastic_loss, []

    def dies_at_step_8(self, generator):
        calls.append(1)
        if len(calls) == 9:
            raise KeyboardInterrupt
        return original(self, generator)

    monkeypatch.setattr(NetworkProblem, "stochastic_loss", dies_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        launch(killed, echo=lambda m: None)
    monkeypatch.setattr(NetworkProblem, "stochastic_loss", original)
    assert (run_folder(killed)[0] / "checkpoint.pt").exists()
    launch(killed, echo=lambda m: None)
    pd.testing.assert_frame_equal(pd.read_parquet(run_folder(killed)[0] / "tau_steps.parquet"),
                                  whole, check_exact=True)


def test_snapshots_end_at_x_K_and_the_summary_has_did_train_inputs(tmp_path):
    """The stability probe's x_T is x_K (after the last step), and the summary carries what
    theory.did_train needs: f(x_0), f(x_K), ‖x_K − x_0‖₂."""
    cfg = compose_config(SMALL_DIGITS + ["optimizer=lion", "log.snapshots=true",
                                         "problem.replace_index=3"], tmp_path=tmp_path)
    summary = launch(cfg, echo=lambda m: None)
    run_dir, _ = run_folder(cfg)
    with np.load(run_dir / "snapshots.npz") as saved:
        steps, xs = saved["step"], saved["x"]
    assert steps.tolist() == [0, 3, 6, 9, 11, 12]
    rows = pd.read_parquet(run_dir / "metrics.parquet")
    training = summary["training"]
    assert training["initial_loss"] == rows["loss"].iloc[0]
    assert training["final_loss"] == summary["final"]["loss"]
    assert training["distance_from_start"] == pytest.approx(np.linalg.norm(xs[-1] - xs[0]), rel=1e-12)
    assert summary["training_set"]["replace_index"] == 3 and summary["training_set"]["n_train"] == 200
    assert "nu" not in rows and summary["nu_calibration"] is None


def test_did_train_rule_and_its_control():
    assert theory.did_train(2.3, 0.1)
    assert not theory.did_train(2.3, 2.29)  # control: the global gate's inert run (loss ≈ ln 10)
    assert not theory.did_train(2.3, None) and not theory.did_train(2.3, float("nan"))
    assert not theory.did_train(2.3, 0.1, distance=0.04, reference_distance=11.5)  # moved 0.3%
    assert theory.did_train(2.3, 0.1, distance=5.0, reference_distance=11.5)
    np.testing.assert_array_equal(theory.did_train(np.array([2.3, 2.3]), np.array([0.1, 2.0])),
                                  [True, False])
