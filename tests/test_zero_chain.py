"""THEORY §9's lower-bound instance: Ψ, Φ, F_T and ∇F_T against independent transcriptions,
autograd and finite differences; the stated properties; the oracle's mean and variance; and
zero-respecting behaviour of every optimizer (the support grows by one link per revealing draw)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate

from conftest import run_cli
from lionconv.optim import build_optimizer
from lionconv.problems import build_problem
from lionconv.problems.zero_chain import (chain_gradient, chain_parameters, chain_value,
                                          phi, phi_prime, progress, psi, psi_prime)

F64 = torch.float64


def numpy_chain(u):
    """F_T(u) as a Python loop straight from THEORY §9 (the reference transcription)."""
    Psi = lambda t: 0.0 if t <= 0.5 else math.exp(1.0 - 1.0 / (2 * t - 1) ** 2)  # noqa: E731
    Phi = lambda t: math.sqrt(2 * math.pi * math.e) * 0.5 * math.erfc(-t / math.sqrt(2))  # noqa: E731
    total = -Psi(1.0) * Phi(u[0])
    for i in range(1, len(u)):
        total += Psi(-u[i - 1]) * Phi(-u[i]) - Psi(u[i - 1]) * Phi(u[i])
    return total


def random_points(T, n, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, T, generator=g, dtype=F64)


def chain_points(T, n, seed=0):
    """Points along the chain: a prefix of values in (0, 4), then a frontier, then zeros."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, T, dtype=F64)
    for row in range(n):
        k = int(torch.randint(0, T + 1, (), generator=g))
        out[row, :k] = 4.0 * torch.rand(k, generator=g, dtype=F64)
    return out


# ------------------------------------------------------------------------------------------------
# Ψ, Φ and the chain


def test_psi_and_phi_match_their_definitions():
    t = torch.linspace(-2.0, 3.0, 41, dtype=F64)
    expected_psi = [0.0 if v <= 0.5 else math.exp(1 - 1 / (2 * v - 1) ** 2) for v in t.tolist()]
    torch.testing.assert_close(psi(t), torch.tensor(expected_psi, dtype=F64), rtol=1e-13, atol=0)
    for v in (-3.0, -0.4, 0.0, 0.7, 2.5):
        integral, _ = integrate.quad(lambda s: math.sqrt(math.e) * math.exp(-s * s / 2), -np.inf, v)
        assert float(phi(torch.tensor(v, dtype=F64))) == pytest.approx(integral, rel=1e-10)
    assert float(psi(torch.tensor(1.0, dtype=F64))) == 1.0


@pytest.mark.parametrize("fn, prime", [(psi, psi_prime), (phi, phi_prime)])
def test_derivatives_against_autograd_and_finite_differences(fn, prime):
    t = torch.linspace(-2.0, 3.0, 101, dtype=F64)
    t = t[(t - 0.5).abs() > 1e-3]
    leaf = t.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(fn(leaf).sum(), leaf)
    h = 1e-6
    fd = (fn(t + h) - fn(t - h)) / (2 * h)
    torch.testing.assert_close(prime(t), auto, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(prime(t), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("T", [1, 2, 7, 30])
def test_chain_value_and_gradient(T):
    for u in torch.cat([random_points(T, 20, seed=T), chain_points(T, 20, seed=T)]):
        assert float(chain_value(u)) == pytest.approx(numpy_chain(u.tolist()), rel=1e-12, abs=1e-12)
        leaf = u.clone().requires_grad_(True)
        (auto,) = torch.autograd.grad(chain_value(leaf), leaf)
        grad = chain_gradient(u)
        torch.testing.assert_close(grad, auto, rtol=1e-10, atol=1e-12)
        h = 1e-6
        eye = torch.eye(T, dtype=F64)
        fd = torch.tensor([(numpy_chain((u + h * e).tolist()) - numpy_chain((u - h * e).tolist())) / (2 * h)
                           for e in eye], dtype=F64)
        torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-6)


def test_torch_path_equals_numpy_path():
    from lionconv.problems.zero_chain import _NumPy, _Torch, _value_and_gradient

    u = random_points(40, 1, seed=3)[0]
    v_t, g_t = _value_and_gradient(u, _Torch)
    v_n, g_n = _value_and_gradient(u.numpy(), _NumPy)
    torch.testing.assert_close(g_t, torch.from_numpy(g_n), rtol=1e-13, atol=1e-14)
    assert float(v_t) == pytest.approx(float(v_n), rel=1e-13)


def test_stated_properties_on_random_points():
    T = 25
    points = torch.cat([random_points(T, 1000, seed=1), random_points(T, 1000, seed=2, scale=0.7),
                        chain_points(T, 1000, seed=3)])
    grads = torch.stack([chain_gradient(u) for u in points])
    assert grads.abs().max() <= 23.0
    assert (grads <= 0).all()  # every term of ∂_j F_T is ≤ 0 (why all methods move x upwards)
    inside = points[:, -1].abs() < 1
    assert inside.sum() > 500
    assert (grads[inside].norm(dim=1) > 1.0).all()
    f0 = float(chain_value(torch.zeros(T, dtype=F64)))
    values = torch.stack([chain_value(u) for u in points])
    assert (f0 - values).max() <= 12 * T
    far = torch.full((T,), 50.0, dtype=F64)  # near inf F_T: the bound still holds
    assert f0 - float(chain_value(far)) <= 12 * T


def test_gradient_is_zero_past_the_frontier_and_float32_has_no_nan():
    u = torch.tensor([2.0, 0.6, 0.3, 0.0, 0.0], dtype=F64)
    grad = chain_gradient(u)
    assert (grad[:3] != 0).all() and (grad[3:] == 0).all()   # ∂_4 needs |u_3| > 1/2
    t = 0.5 + torch.logspace(-12, -1, 50, dtype=torch.float32)
    for fn in (psi, psi_prime):
        assert torch.isfinite(fn(t)).all() and torch.isfinite(fn(-t)).all()
    u32 = torch.tensor([0.5 + 1e-7, 0.5 + 1e-3, 1e-30, 0.0], dtype=torch.float32)
    assert torch.isfinite(chain_gradient(u32)).all()


def test_progress():
    u = torch.tensor([2.0, -0.3, 0.2, 1.5, 0.0, 1e-9, 0.0], dtype=F64)
    assert int(progress(u, 0.25)) == 4 and int(progress(u, 1.0)) == 4
    assert int(progress(u, 0.0)) == 6 and int(progress(torch.zeros(3), 0.25)) == 0
    assert progress(u, torch.tensor([0.25, 1.0, 0.0], dtype=F64)).tolist() == [4, 4, 6]


# ------------------------------------------------------------------------------------------------
# options and scaling


def test_chain_parameters_from_delta_sigma_epsilon():
    Delta, L, sigma, eps = 1.0, 2.0, 0.5, 0.003
    c = chain_parameters(T=None, p=None, Delta=Delta, L=L, sigma=sigma, epsilon=eps)
    assert c["T"] == math.floor(Delta * L / (48 * 152 * eps ** 2))
    assert c["p"] == pytest.approx(2116 * eps ** 2 / (sigma ** 2 + 2116 * eps ** 2), rel=1e-14)
    assert c["scale"] == pytest.approx(2 * eps * 152 / L, rel=1e-14)
    assert c["sigma"] == sigma and c["Delta"] == Delta
    # the construction's own bounds stay within the requested constants
    assert (L * c["scale"] ** 2 / 152) * 12 * c["T"] <= Delta
    assert 2 * eps * 23 * math.sqrt((1 - c["p"]) / c["p"]) == pytest.approx(sigma, rel=1e-12)
    direct = chain_parameters(T=20, p=0.05, Delta=None, L=152.0, sigma=None, epsilon=0.5)
    assert direct["scale"] == 1.0 and direct["Delta"] == 240.0
    assert direct["sigma"] == pytest.approx(23 * math.sqrt(0.95 / 0.05))


@pytest.mark.parametrize("options, message", [
    ({"Delta": 1.0}, "set exactly one of T"),
    ({"T": None}, "set exactly one of T"),
    ({"sigma": 1.0}, "set exactly one of p"),
    ({"p": 0.0}, "p=0.0 is not allowed"),
    ({"p": 1.5}, "p=1.5 is not allowed"),
    ({"T": 0}, "T=0 is not allowed"),
    ({"d": 5}, "d=5 is not allowed: expected d >= T = 20"),
    ({"T": None, "Delta": 1e-9}, "T = floor"),
    ({"epsilon": -1.0}, "epsilon=-1.0 is not allowed"),
    ({"T": None, "Delta": 1.0, "epsilon": 1e-200}, "leave the float range"),   # ε² underflows
    ({"p": None, "sigma": 1e200}, "leave the float range"),                    # σ² overflows
    ({"p": None, "sigma": 1.0, "epsilon": 1e-170}, "p = 2116"),                # p rounds to 0
])
def test_inconsistent_options_raise_one_clear_error(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build_problem({"name": "zero_chain", **options}, seed=0)


def test_scaled_problem_gradient_constants_and_inert_coordinates():
    cfg = {"name": "zero_chain", "T": None, "p": None, "Delta": 1.0, "L": 3.0, "sigma": 1.0,
           "epsilon": 0.004, "d": 40}
    problem = build_problem(cfg, seed=0, dtype=F64)
    c = problem.constants()
    T, lam = c["T"], c["scale"]
    assert problem.d == 40 and T < 40 and c["kind"] == "closed_form"
    assert set(c) >= {"Delta", "L", "sigma", "f_low", "T", "p", "scale", "epsilon"}
    x = torch.zeros(40, dtype=F64)
    x[:T] = lam * chain_points(T, 1, seed=5)[0]
    x[T:] = 3.0  # inert
    with torch.no_grad():
        problem.x.copy_(x)
    loss, (grad,) = problem.full_gradient()
    assert float(loss) == pytest.approx((3.0 * lam ** 2 / 152) * numpy_chain((x[:T] / lam).tolist()))
    torch.testing.assert_close(grad[:T], 2 * 0.004 * chain_gradient(x[:T] / lam))
    assert (grad[T:] == 0).all()
    # L-smoothness of the scaled f on random pairs
    pts = lam * random_points(T, 200, seed=7)
    g = torch.stack([2 * 0.004 * chain_gradient(u / lam) for u in pts])
    ratio = (g[1:] - g[:-1]).norm(dim=1) / (pts[1:] - pts[:-1]).norm(dim=1)
    assert ratio.max() <= 3.0
    assert c["f_low"] == pytest.approx(float(problem.objective(torch.zeros(40, dtype=F64))) - 1.0)


# ------------------------------------------------------------------------------------------------
# the oracle


def oracle_draws(problem, x, n, seed):
    with torch.no_grad():
        problem.x.copy_(x)
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(n, problem.d, dtype=F64)
    reveals = torch.empty(n, dtype=torch.bool)
    for i in range(n):
        problem.x.grad = None
        problem.stochastic_loss(gen)
        out[i] = problem.x.grad
        reveals[i] = problem.last_reveal
    return out, reveals


def test_oracle_is_unbiased_and_its_variance_is_bounded():
    p = 0.2
    problem = build_problem({"name": "zero_chain", "T": 8, "p": p}, seed=0, dtype=F64)
    x = torch.tensor([3.0, 2.0, 1.0, 0.9, 0.1, 0.0, 0.0, 0.0], dtype=F64)  # prog_{1/4} = 4
    n = 10000
    draws, reveals = oracle_draws(problem, x, n, seed=11)
    grad = chain_gradient(x)
    assert (grad[5:] == 0).all() and grad[4] != 0  # only link 5 is hidden
    se = draws.std(dim=0) / math.sqrt(n)
    assert ((draws.mean(0) - grad).abs() <= 4 * se + 1e-12).all()
    torch.testing.assert_close(draws[:, :4], grad[:4].expand(n, 4))  # visible links exact
    sq = (draws - grad).pow(2).sum(1)
    exact = float(grad[4] ** 2 * (1 - p) / p)
    mean, half = float(sq.mean()), 4 * float(sq.std()) / math.sqrt(n)
    assert abs(mean - exact) <= half
    assert mean + half <= 23 ** 2 * (1 - p) / p
    assert abs(float(reveals.double().mean()) - p) <= 4 * math.sqrt(p * (1 - p) / n)


# ------------------------------------------------------------------------------------------------
# zero-respecting optimizers


OPTIMIZERS = [("lion", {"lr": 0.5}), ("clion", {"lr": 0.5, "gate": "global", "nu": 1e-6}),
              ("clion", {"lr": 0.5, "gate": "tensor", "nu": 1e-3}),
              ("clion", {"lr": 0.5, "gate": "coordinate", "nu": 1e-3}),
              ("signsgd", {"lr": 0.5}), ("sgd", {"lr": 20.0}), ("sgd", {"lr": 5.0, "momentum": 0.9})]


def drive(problem, name, hparams, steps, seed=0):
    """Trajectory of (support size, last non-zero index, ξ, ‖∇f‖₂, |x_T|) before each step."""
    opt = build_optimizer(name, problem.params, **hparams)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        x = problem.x.detach().clone()
        problem.stochastic_loss(gen)
        _, (grad,) = problem.full_gradient()
        rows.append((int((x != 0).sum()), int(progress(x[:problem.T], 0.0)),
                     bool(problem.last_reveal), float(grad.norm()), float(x[problem.T - 1].abs())))
        opt.step()
    return pd.DataFrame(rows, columns=["support", "last", "reveal", "grad_l2", "x_T"])


def assert_zero_respecting(run: pd.DataFrame):
    grow = run["support"].diff().iloc[1:].to_numpy()
    revealed_before = run["reveal"].shift(1).iloc[1:].to_numpy().astype(bool)
    assert (grow <= 1).all()
    assert (run["last"].diff().iloc[1:] <= 1).all()
    assert not (grow[~revealed_before] > 0).any()   # growth only after a revealing draw
    assert (run["support"] == run["last"]).all()    # the support is always a prefix


@pytest.mark.parametrize("name, hparams", OPTIMIZERS,
                         ids=[f"{n}-{h.get('gate', '')}{'-m' if h.get('momentum') else ''}" for n, h in OPTIMIZERS])
def test_every_optimizer_is_zero_respecting(name, hparams):
    problem = build_problem({"name": "zero_chain", "T": 12, "p": 0.2}, seed=0, dtype=F64)
    run = drive(problem, name, hparams, steps=300, seed=1)
    assert_zero_respecting(run)
    assert run["support"].iloc[-1] >= 2  # it did move along the chain


def test_bar_lion_on_a_small_instance():
    """The issue's bar: Lion on T = 20, p = 0.05: one link per step at most, only on a revealing
    draw, and ‖∇f‖₂ > 2ε (= 1 unscaled) until the chain is traversed — which it is."""
    problem = build_problem({"name": "zero_chain", "T": 20, "p": 0.05}, seed=0, dtype=F64)
    two_eps = 2 * problem.constants()["epsilon"]
    run = drive(problem, "lion", {"lr": 0.5}, steps=1600, seed=0)
    assert_zero_respecting(run)
    before = run[run["x_T"] < problem.scale]
    assert len(before) < len(run)            # traversed within the budget (T/p = 400)
    assert (before["grad_l2"] > two_eps).all()
    k = len(before)
    assert run["reveal"].iloc[:k].sum() >= 20  # each of the 20 links needed its own reveal


# ------------------------------------------------------------------------------------------------
# the real command line


def test_command_line_logs_progress_and_constants(tmp_path):
    run_cli("problem=zero_chain", "problem.T=6", "problem.p=0.5", "optimizer.lr=0.5", "steps=40",
            "dtype=float64", f"out_dir={tmp_path}", "progress=off")
    (summary_path,) = tmp_path.rglob("summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "finished"
    assert {"T": 6, "p": 0.5, "scale": 1.0, "epsilon": 0.5}.items() <= summary["constants"].items()
    m = pd.read_parquet(summary_path.parent / "metrics.parquet")
    assert len(m) == 40 and {"prog_1_4", "prog_1", "prog_0"} <= set(m.columns)
    assert m["prog_0"].iloc[0] == 0 and m["prog_0"].diff().iloc[1:].le(1).all()
    assert m["prog_1_4"].iloc[-1] == 6   # traversed: p = 1/2, Lion at η = λ/2
    assert ((m["grad_l2"] > 1.0) | (m["prog_1"] >= 6)).all()


def test_command_line_rejects_inconsistent_options(tmp_path):
    proc = run_cli("problem=zero_chain", "problem.Delta=1.0", f"out_dir={tmp_path}", check=False)
    assert proc.returncode == 2
    assert "set exactly one of T" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
