"""CLion's ν calibrated on a pilot (lionconv/calibrate.py): hand values, and a run it leaves alone."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import compose_config, run_cli, summaries
from lionconv.calibrate import DEFAULT_NU, pilot_steps, pooled_abs_c, resolve_nu
from lionconv.problems import build_problem
from lionconv.train import launch, run_folder


def test_pilot_steps_is_the_momentum_horizon():
    assert pilot_steps(0.99, 1000) == 100  # 1/(1 − 0.99) = 100.000…01 in floating point
    assert pilot_steps(0.9, 1000) == 10
    assert pilot_steps(0.99, 30) == 30  # never past the run's K
    assert pilot_steps(0.0, 10) == 1
    assert pilot_steps(2 / 3, 10) == 3


def test_pooled_abs_c_by_hand_on_the_quadratic():
    # f = θ²/2, θ_0 = 1, σ = 0, Lion η = 0.1, β = (0.9, 0.5): n = ⌈1/(1 − 0.5)⌉ = 2 steps.
    # k=0: m=0, c = 0.1·1 = 0.1; θ_1 = 0.9, m_1 = 0.5.  k=1: c = 0.9·0.5 + 0.1·0.9 = 0.54.
    problem = build_problem({"name": "quadratic", "d": 1, "init": 1.0}, seed=0, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    hparams = {"lr": 0.1, "betas": (0.9, 0.5), "weight_decay": 0.0, "nu": None, "nu_quantile": 0.5}
    record = resolve_nu(hparams, problem, generator, K=100)
    assert record["pilot_steps"] == 2 and record["pooled"] == 2
    assert hparams["nu"] == pytest.approx(np.quantile([0.1, 0.54], 0.5), rel=1e-12)  # 0.32
    assert "nu_quantile" not in hparams  # the optimizer gets ν only
    assert problem.theta.item() == 1.0 and problem.theta.grad is None  # the pilot ran on a copy
    pool = pooled_abs_c(problem, generator, lr=0.1, betas=(0.9, 0.5), weight_decay=0.0, steps=2)
    np.testing.assert_allclose(pool.numpy(), [0.1, 0.54], rtol=1e-12)


def test_nu_rules():
    problem = build_problem({"name": "quadratic"}, seed=0)
    generator = torch.Generator().manual_seed(0)
    given = {"lr": 0.1, "nu": 1e-3, "nu_quantile": None}
    assert resolve_nu(given, problem, generator, 10) is None and given["nu"] == 1e-3
    default = {"lr": 0.1, "nu": None, "nu_quantile": None}
    assert resolve_nu(default, problem, generator, 10) is None and default["nu"] == DEFAULT_NU
    with pytest.raises(ValueError, match=r"optimizer.nu=0.001 and optimizer.nu_quantile=0.5 are both set"):
        resolve_nu({"lr": 0.1, "nu": 1e-3, "nu_quantile": 0.5}, problem, generator, 10)
    for bad in (0.0, 1.0, -0.1, True):
        with pytest.raises(ValueError, match=r"Invalid nu_quantile: .* \(must be a number in \(0, 1\)\)"):
            resolve_nu({"lr": 0.1, "nu": None, "nu_quantile": bad}, problem, generator, 10)


def test_calibrated_run_equals_the_run_with_that_nu(tmp_path):
    """The pilot leaves the run alone: the same config with ν written out explicitly gives
    bit-identical metrics, and ν is recorded in the summary and in every metrics row."""
    base = ["problem=digits_mlp", "problem.width=8", "problem.n_train=200",
            "problem.estimate_constants=false", "steps=25", "log.grid=linear", "log.every=4",
            "progress=off", "optimizer=clion", "optimizer.gate=coordinate", "optimizer.lr=3e-3",
            "optimizer.betas=[0.9,0.9]"]
    calibrated = compose_config(base + ["optimizer.nu_quantile=0.3"], tmp_path=tmp_path)
    summary = launch(calibrated, echo=lambda m: None)
    nu = summary["nu"]
    assert summary["nu_calibration"] == {"nu": nu, "nu_quantile": 0.3, "pilot_steps": 10,
                                         "pooled": summary["nu_calibration"]["pooled"]}
    explicit = compose_config(base + [f"optimizer.nu={nu!r}"], tmp_path=tmp_path)
    assert launch(explicit, echo=lambda m: None)["nu_calibration"] is None
    a, b = (pd.read_parquet(run_folder(c)[0] / "metrics.parquet").drop(columns="wall_time")
            for c in (calibrated, explicit))
    assert (a["nu"] == nu).all()
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    # the analysis keys a calibrated run by its quantile (its ν differs per seed), and keeps ν
    from lionconv.analysis import load_runs

    runs = load_runs(tmp_path)[0].set_index("nu_quantile", drop=False)
    assert math.isnan(runs.loc[0.3, "nu"]) and runs.loc[0.3, "nu_used"] == nu
    explicit_row = runs[runs["nu_quantile"].isna()].iloc[0]
    assert explicit_row["nu"] == explicit_row["nu_used"] == nu


def test_the_bar_calibrated_coordinate_gate_on_digits_trains(tmp_path):
    """Issue bar: `optimizer=clion optimizer.gate=coordinate optimizer.nu_quantile=0.5` on
    digits_mlp takes the sign branch on a mean fraction in [0.3, 0.7] of the coordinates and
    trains (final train loss < ½ of the initial ≈ ln 10). From the real command line."""
    run_cli("problem=digits_mlp", "problem.estimate_constants=false", "optimizer=clion",
            "optimizer.gate=coordinate", "optimizer.nu_quantile=0.5", "optimizer.lr=3e-4",
            "steps=200", "log.grid=geometric", "log.points=6", "progress=off", f"out_dir={tmp_path}")
    (summary,) = summaries(tmp_path).values()
    from lionconv import theory

    assert 0.3 <= summary["mean_sign_fraction"] <= 0.7
    training = summary["training"]
    assert training["initial_loss"] == pytest.approx(np.log(10), rel=0.05)
    assert theory.did_train(training["initial_loss"], training["final_loss"])
    assert 0 < summary["nu"] == summary["nu_calibration"]["nu"]
