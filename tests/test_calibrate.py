"""CLion's ν calibrated on a pilot (lionconv/calibrate.py): hand values, and a run it leaves alone."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import compose_config, run_cli, summaries
from lionconv.calibrate import DEFAULT_NU, pilot_pool, pilot_steps, resolve_nu, weighted_quantile
from lionconv.problems import Problem, build_problem
from lionconv.problems.base import accumulate_grad
from lionconv.train import launch, run_folder


def test_pilot_steps_is_the_momentum_horizon():
    assert pilot_steps(0.99, 1000) == 100  # 1/(1 − 0.99) = 100.000…01 in floating point
    assert pilot_steps(0.9, 1000) == 10
    assert pilot_steps(0.99, 30) == 30  # never past the run's K
    assert pilot_steps(0.0, 10) == 1
    assert pilot_steps(2 / 3, 10) == 3


class TwoTensors(Problem):
    """f = ½‖x‖², g = x exactly, x = (a, b): a = [1, 0], b = [3] (a_1 = 0 keeps c_1 = 0)."""

    def __init__(self):
        super().__init__()
        self.params = [torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True),
                       torch.tensor([3.0], dtype=torch.float64, requires_grad=True)]
        self.param_names = ["a", "b"]

    def stochastic_loss(self, generator):
        for p in self.params:
            accumulate_grad(p, p.detach())
        return sum(0.5 * p.detach().pow(2).sum() for p in self.params)


# Lion η = 0.1, β = (0.9, 0.5): n = ⌈1/(1 − 0.5)⌉ = 2 pilot steps.
# k=0: m = 0, c = 0.1·x_0 = [0.1, 0 | 0.3]; x_1 = [0.9, 0 | 2.9], m_1 = 0.5·x_0 = [0.5, 0 | 1.5].
# k=1: c = 0.9·m_1 + 0.1·x_1 = [0.54, 0 | 1.64].  c = 0 counts +inf.
# coordinate pool (weight 1): 0.1, 0.3, 0.54, 1.64, inf, inf
# tensor pool: a 0.1 (2), b 0.3 (1), a 0.54 (2), b 1.64 (1)  -> cumulative 2, 3, 5, 6 of 6
# global pool: 0.1 (3), 0.54 (3)
@pytest.mark.parametrize("gate,q,nu", [("coordinate", 0.5, 0.54), ("coordinate", 0.1, 0.1),
                                       ("coordinate", 0.6, 1.64), ("tensor", 0.5, 0.3),
                                       ("tensor", 0.6, 0.54), ("tensor", 0.3, 0.1),
                                       ("global", 0.5, 0.1), ("global", 0.6, 0.54)])
def test_calibrated_nu_by_hand(gate, q, nu):
    problem = TwoTensors()
    generator = torch.Generator().manual_seed(0)
    hparams = {"lr": 0.1, "betas": (0.9, 0.5), "weight_decay": 0.0, "nu": None,
               "nu_quantile": q, "gate": gate}
    record = resolve_nu(hparams, problem, generator, K=100)
    assert hparams["nu"] == pytest.approx(nu, rel=1e-12) and record["pilot_steps"] == 2
    assert "nu_quantile" not in hparams  # the optimizer gets ν only
    # the pilot ran on a copy
    assert problem.params[0].tolist() == [1.0, 0.0] and problem.params[0].grad is None


def test_no_finite_nu_is_one_clear_error():
    # q = 0.7 of the coordinate pool above lands on a c = 0 coordinate (+inf)
    hparams = {"lr": 0.1, "betas": (0.9, 0.5), "nu": None, "nu_quantile": 0.7, "gate": "coordinate"}
    with pytest.raises(ValueError, match=r"nu_quantile=0.7: the 2-step pilot gives no finite ν"):
        resolve_nu(hparams, TwoTensors(), torch.Generator(), K=100)


def test_coordinate_pool_is_the_quantile_of_abs_c():
    problem = build_problem({"name": "quadratic", "d": 1, "init": 1.0}, seed=0, dtype=torch.float64)
    values, weights = pilot_pool(problem, torch.Generator(), gate="coordinate", lr=0.1,
                                 betas=(0.9, 0.5), weight_decay=0.0, steps=2)
    np.testing.assert_allclose(values.numpy(), [0.1, 0.54], rtol=1e-12)
    rng = np.random.default_rng(0)
    sample = rng.lognormal(size=1001)
    for q in (0.1, 0.5, 0.9):
        assert weighted_quantile(torch.tensor(sample), torch.ones(1001), q) == \
            np.quantile(sample, q, method="inverted_cdf")


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
    assert summary["nu_calibration"] == {"nu": nu, "nu_quantile": 0.3, "gate": "coordinate",
                                         "pilot_steps": 10,
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
