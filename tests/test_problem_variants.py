"""Two-point noise (THEORY §8), the shifted family's active box (THEORY §3), the rotated family
(THEORY §6): laws, constants and gradients against the formulas, and the issue's Bar checks."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_cli
from lionconv.optim import Lion, SignSGD
from lionconv.problems import build_problem
from lionconv.problems.synthetic import fwht

F64 = torch.float64
SEPARABLE = ["scaled_separable", "naive_separable", "rotated_separable"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def stochastic_gradient(problem, generator):
    """g of one stochastic_loss call, with p.grad reset before."""
    for p in problem.params:
        p.grad = None
    problem.stochastic_loss(generator)
    return problem.params[0].grad.detach().clone()


def noise_draws(problem, generator, draws):
    """(draws, d) samples of g − ∇f."""
    _, (grad,) = problem.full_gradient()
    return torch.stack([stochastic_gradient(problem, generator) - grad for _ in range(draws)])


# ------------------------------------------------------------------------------------------------
# two-point noise


@pytest.mark.parametrize("a,b", [(1.0, 9.0), (0.5, 2.0)])
def test_quadratic_two_point_atoms_probabilities_mean_variance(a, b):
    d, draws = 4000, 50
    problem = build_problem({"name": "quadratic", "d": d, "init": 0.0, "noise": "two_point",
                             "noise_a": a, "noise_b": b}, seed=0, dtype=F64)
    z = noise_draws(problem, gen(1), draws).reshape(-1).numpy()
    n = z.size
    assert set(np.unique(z).tolist()) == {a, -b}              # the atoms, as given
    p = b / (a + b)
    assert abs((z == a).mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert abs(z.mean()) < 5 * math.sqrt(a * b / n)            # mean 0
    fourth = p * a ** 4 + (1 - p) * b ** 4
    assert abs((z ** 2).mean() - a * b) < 5 * math.sqrt((fourth - (a * b) ** 2) / n)  # var ab
    assert problem.constants()["sigma"] == pytest.approx(math.sqrt(d * a * b))


@pytest.mark.parametrize("name", SEPARABLE)
def test_separable_two_point_takes_the_gaussian_factor(name):
    d, a, b = 256, 1.0, 4.0
    problem = build_problem({"name": name, "d": d, "noise": "two_point", "noise_a": a,
                             "noise_b": b, "sigma": 3.0}, seed=0, dtype=F64)
    factor = 1.0 if name == "naive_separable" else 1 / math.sqrt(d)
    z = noise_draws(problem, gen(2), 400)
    atoms = torch.tensor([a * factor, -b * factor], dtype=F64)
    assert torch.isclose(z.reshape(-1, 1), atoms, rtol=1e-9, atol=1e-12).any(1).all()
    total = z.pow(2).sum(1).mean().item()  # E‖ξ‖² = d·factor²·ab, σ unused
    expected = d * factor ** 2 * a * b
    sd = z.pow(2).sum(1).std().item() / math.sqrt(z.shape[0])
    assert abs(total - expected) < 5 * sd
    assert problem.constants()["sigma"] == pytest.approx(math.sqrt(expected))


@pytest.mark.parametrize("cfg", [{"name": "scaled_separable", "d": 64, "sigma": 0.7},
                                 {"name": "naive_separable", "d": 64},
                                 {"name": "rotated_separable", "d": 64},
                                 {"name": "quadratic", "d": 5, "sigma": 0.7}])
def test_default_gaussian_noise_is_the_old_draw_bit_for_bit(cfg):
    """noise=gaussian (the default) is g = ∇f + s·randn(d) from the run generator, as before."""
    problem = build_problem(cfg, seed=3)
    explicit = build_problem({**cfg, "noise": "gaussian"}, seed=3)
    s = cfg.get("sigma", 1.0) / (1.0 if cfg["name"] == "naive_separable" else math.sqrt(cfg["d"]))
    g1, g2, g3 = gen(11), gen(11), gen(11)
    for _ in range(3):
        _, (grad,) = problem.full_gradient()
        expected = grad.clone().add_(torch.randn(grad.shape, generator=g3), alpha=s)
        got = stochastic_gradient(problem, g1)
        assert torch.equal(got, expected)
        assert torch.equal(stochastic_gradient(explicit, g2), expected)
        with torch.no_grad():
            problem.params[0].sub_(0.01 * got)
            explicit.params[0].sub_(0.01 * got)


def _skewed_late_mean(K, beta1, *, d=16, signsgd=False):
    """THEORY §8's skewed control: f = ½‖θ‖², θ0 = 0, two-point noise a = 1, b = 9,
    η = K^{-3/4}, β2 = 1 − 1/√K; the second-half mean of |θ| = ‖∇f‖₁/d, and of θ."""
    problem = build_problem({"name": "quadratic", "d": d, "init": 0.0, "noise": "two_point",
                             "noise_a": 1.0, "noise_b": 9.0}, seed=0, dtype=F64)
    lr = K ** -0.75
    opt = (SignSGD(problem.params, lr=lr) if signsgd
           else Lion(problem.params, lr=lr, betas=(beta1, 1 - 1 / math.sqrt(K))))
    g, abs_sum, sum_ = gen(0), 0.0, 0.0
    theta = problem.params[0]
    for k in range(K):
        opt.zero_grad(set_to_none=True)
        problem.stochastic_loss(g)
        if k >= K // 2:
            abs_sum += theta.detach().abs().mean().item()
            sum_ += theta.detach().mean().item()
        opt.step()
    n = K - K // 2
    return abs_sum / n, sum_ / n


@pytest.mark.parametrize("K", [100, 1000, pytest.param(10_000, marks=pytest.mark.slow)])
def test_skewed_noise_fixed_beta1_settles_at_the_predicted_fixed_point(K):
    # THEORY §8: θ* = −(1−β1)·a = −0.5, late |f'| = 0.544, 0.503, 0.492 at K = 1e2, 1e3, 1e4
    late_abs, late_mean = _skewed_late_mean(K, 0.5)
    assert abs(late_abs - 0.5) < 0.05
    assert abs(late_mean + 0.5) < 0.05


def test_skewed_noise_signsgd_at_minus_a_and_annealed_beta1_converges():
    late_abs, late_mean = _skewed_late_mean(1000, None, signsgd=True)
    assert late_abs == pytest.approx(1.0, abs=0.05) and late_mean == pytest.approx(-1.0, abs=0.05)
    annealed = [_skewed_late_mean(K, 1 - 1 / math.sqrt(K))[0] for K in (100, 1000, 10_000)]
    assert annealed[0] > annealed[1] > annealed[2]       # §8: 0.365, 0.193, 0.108
    assert annealed[2] < 0.15


FIXED_BETA1 = ["schedule=horizon_fixed_beta1", "schedule.beta1=0.5"]


@pytest.mark.parametrize("schedule,steps,check", [
    (FIXED_BETA1, 1000, lambda v: abs(v - 0.5) < 0.05),   # §8: 0.503 at K = 1e3
    pytest.param(FIXED_BETA1, 10_000, lambda v: abs(v - 0.5) < 0.05, marks=pytest.mark.slow),
    pytest.param(["schedule=horizon"], 10_000, lambda v: v < 0.15, marks=pytest.mark.slow)])
def test_bar_check_skewed_control_from_the_command_line(tmp_path, schedule, steps, check):
    """The issue's Bar 1 command as typed (slow: K = 1e4 as in the Bar; default: K = 1e3, where
    THEORY §8's prediction holds too). Measured at K = 1e4: 0.492 (fixed β1), 0.110 (annealed)."""
    run_cli("problem=quadratic", "problem.d=16", "problem.init=0", "problem.noise=two_point",
            "problem.noise_a=1", "problem.noise_b=9", *schedule, "schedule.c3=4", f"steps={steps}",
            "log.per_tensor=false", f"out_dir={tmp_path}", "progress=off", timeout=600)
    (path,) = tmp_path.rglob("metrics.parquet")
    rows = pd.read_parquet(path)
    late = rows[rows["step"] >= steps // 2]["grad_l1"].mean() / 16
    assert check(late), late


# ------------------------------------------------------------------------------------------------
# shift: the active box (THEORY §3)


def test_shift_gradient_face_norm_and_constants():
    d, mu, rho = 400, 2.0, 1.0
    problem = build_problem({"name": "scaled_separable", "d": d, "shift": mu, "alpha": 0.5,
                             "omega": 2.0, "init_dist": "uniform", "init_scale": 0.9},
                            seed=0, dtype=F64)
    x = problem.x.detach().clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(problem.objective(x), x)
    _, (grad,) = problem.full_gradient()
    u = math.sqrt(d) * x.detach() - mu
    torch.testing.assert_close(grad, (u + 0.5 * 2 * torch.sin(2 * u)) / math.sqrt(d))
    torch.testing.assert_close(grad, auto)
    c = problem.constants()
    assert c["f_low"] == -0.5 and c["L"] == 3.0
    assert problem.objective(torch.full((d,), mu / math.sqrt(d), dtype=F64)).item() == \
        pytest.approx(-0.5, rel=1e-12)
    phi0 = 0.5 * u * u - 0.5 * torch.cos(2 * u)
    assert c["Delta"] == pytest.approx(phi0.mean().item() + 0.5, rel=1e-12)
    # on the face u_i = ρ: ‖∇f‖₁ = √d·|φ'(ρ − μ)|, and G_λ = ‖∇f‖₁ + λ⟨∇f, x⟩ = 0 with λ = √d/ρ
    with torch.no_grad():
        problem.x.fill_(rho / math.sqrt(d))
    _, (grad,) = problem.full_gradient()
    phi_prime = (rho - mu) + math.sin(2 * (rho - mu))
    assert grad.abs().sum().item() == pytest.approx(math.sqrt(d) * abs(phi_prime), rel=1e-12)
    lam = math.sqrt(d) / rho
    g_lambda = grad.abs().sum() + lam * (grad * problem.x.detach()).sum()
    assert abs(g_lambda.item()) < 1e-10


def test_bar_check_active_box_from_the_command_line(tmp_path):
    """Bar 2: shift μ = 2, λ = √d (ρ = 1), feasible start (|u0| ≤ 0.9): ≥ 95% of coordinates on
    the face at the end, the running mean of G_λ falling, ‖∇f‖₁ → √d·|φ'(ρ − μ)|."""
    d = 100
    run_cli("problem=scaled_separable", f"problem.d={d}", "problem.shift=2",
            "problem.init_dist=uniform", "problem.init_scale=0.9",
            f"optimizer.weight_decay={math.sqrt(d)}", "schedule=horizon", "schedule.c3=4",
            "steps=3000", "log.per_tensor=false", f"out_dir={tmp_path}", "progress=off")
    (path,) = tmp_path.rglob("metrics.parquet")
    rows = pd.read_parquet(path)
    assert rows["feasibility"].max() == 0.0                   # the box is invariant
    assert rows["face_fraction"].iloc[0] == 0.0 and rows["face_fraction"].iloc[-1] >= 0.95
    avg = rows["avg_kkt_residual"].to_numpy()
    assert avg[-1] < 0.5 * avg[len(avg) // 10]
    expected = math.sqrt(d) * abs(-1 + math.sin(-2))
    assert rows["grad_l1"].iloc[-1] == pytest.approx(expected, rel=0.02)


# ------------------------------------------------------------------------------------------------
# the rotated family (THEORY §6)


@pytest.mark.parametrize("d", [1, 2, 8, 64, 128, 1024])  # 64 = FWHT_BLOCK: both paths
def test_fwht_is_sylvester_hadamard_and_q_is_orthogonal(d):
    from scipy.linalg import hadamard

    H = torch.tensor(hadamard(d), dtype=F64)
    v = torch.randn(3, d, generator=gen(d), dtype=F64)
    torch.testing.assert_close(fwht(v), v @ H.T)
    problem = build_problem({"name": "rotated_separable", "d": d}, seed=5, dtype=F64)
    Q = problem.rotation_matrix()
    D = torch.diag(problem.signs)
    assert set(problem.signs.tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(Q, H @ D / math.sqrt(d))
    torch.testing.assert_close(Q @ Q.T, torch.eye(d, dtype=F64))
    torch.testing.assert_close(problem.from_coordinates(problem.to_coordinates(v)), v)


def test_rotated_gradient_autograd_finite_differences_and_closed_form():
    d = 32
    problem = build_problem({"name": "rotated_separable", "d": d, "shift": 0.3, "alpha": 0.7,
                             "omega": 1.5}, seed=1, dtype=F64)
    Q = problem.rotation_matrix()
    x = problem.x.detach().clone()
    _, (grad,) = problem.full_gradient()
    u = math.sqrt(d) * (Q @ x) - 0.3
    closed = Q.T @ ((u + 0.7 * 1.5 * torch.sin(1.5 * u)) / math.sqrt(d))
    torch.testing.assert_close(grad, closed)
    xr = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(problem.objective(xr), xr)
    torch.testing.assert_close(grad, auto)
    h = 1e-6
    fd = torch.stack([(problem.objective(x + h * e) - problem.objective(x - h * e)) / (2 * h)
                      for e in torch.eye(d, dtype=F64)])
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)


def test_rotated_constants_equal_the_scaled_family_and_noise_is_isotropic():
    for d in (16, 1024):
        rot = build_problem({"name": "rotated_separable", "d": d}, seed=2, dtype=F64)
        sca = build_problem({"name": "scaled_separable", "d": d}, seed=2, dtype=F64)
        cr, cs = rot.constants(), sca.constants()
        assert cr["L"] == cs["L"] and cr["sigma"] == cs["sigma"] and cr["f_low"] == cs["f_low"]
        assert cr["Delta"] == pytest.approx(cs["Delta"], rel=1e-12)   # same u0, rotated
    z = noise_draws(build_problem({"name": "rotated_separable", "d": 16, "sigma": 0.8},
                                  seed=0, dtype=F64), gen(), 4000)
    cov = (z.T @ z / z.shape[0]).numpy()
    np.testing.assert_allclose(cov, 0.64 / 16 * np.eye(16), atol=5 * 0.04 * math.sqrt(2 / 4000))


def test_rotated_needs_a_power_of_two():
    with pytest.raises(ValueError, match=r"d=1000 is not allowed for rotated_separable: "
                                         r"expected a power of two \(e.g. 512 or 1024\)"):
        build_problem({"name": "rotated_separable", "d": 1000}, seed=0)
    proc = run_cli("problem=rotated_separable", "problem.d=1000", "steps=2", check=False)
    assert proc.returncode != 0
    assert "expected a power of two" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_bar_check_rotated_ratio_at_step_0(tmp_path):
    """Bar 3: at step 0 the rotated gradient's coordinates are sums over all of u, so
    r = ‖∇f‖₁/(√d‖∇f‖₂) ≈ √(2/π) (THEORY §5's Gaussian value); the scaled family's is not."""
    run_cli("problem=rotated_separable", "problem.d=4096", "steps=2", "log.per_tensor=false",
            f"out_dir={tmp_path}", "progress=off")
    (path,) = tmp_path.rglob("metrics.parquet")
    r0 = pd.read_parquet(path).set_index("step").loc[0, "ratio_r"]
    assert abs(r0 - math.sqrt(2 / math.pi)) < 0.02, r0
