"""Closed-form problems: the separable families of THEORY §6 and the quadratic of THEORY §8.

One profile, nonconvex for α·ω² > 1 and bounded below:
    φ(u) = u²/2 − α·cos(ω·u),   φ'(u) = u + αω·sin(ωu),   φ''(u) = 1 + αω²·cos(ωu)
|φ''| ≤ 1 + αω² (attained at u = 0), and φ(u) + α = u²/2 + α(1 − cos ωu) ≥ 0 with equality only
at u = 0, so inf φ = −α exactly. With the defaults α = 0.5, ω = 2: φ'' ∈ [−1, 3], L = 3, and
u = 0 is φ's only stationary point (|sin 2u| < u for u > 0), so every coordinate can reach the
global minimum; larger α·ω (e.g. α = 1, ω = 3) adds spurious local minima.

Both families are  f(x) = b·Σ_i φ(a·x_i)  with gradient noise g = ∇f + ξ, ξ ~ N(0, s²·I):
    scaled:  a = √d, b = 1/d, s² = σ²/d   ->  Hessian diag φ''(u), L = 1+αω², E‖ξ‖² = σ²,
             Δ = mean_i (φ(u0_i) + α), f_low = −α           (all independent of d)
    naive:   a = 1,  b = 1,   s² = σ²     ->  L = 1+αω², E‖ξ‖² = dσ² (constants()["sigma"] = σ√d),
             Δ = Σ_i (φ(u0_i) + α) ∝ d, f_low = −dα
The initial point is u0 = a·x0 with u0_i i.i.d. init_scale·N(0, 1) ("normal") or
U(−init_scale, init_scale) ("uniform") from a generator derived from the run seed, so in the
scaled family Δ is an average of d i.i.d. terms (≈ constant in d).
`stochastic_loss` returns f(x) itself: the noise is additive on the gradient only.
"""

from __future__ import annotations

import math

import torch

from .base import (Problem, accumulate_grad, check_choice, check_float, check_int,
                   make_generator, randn)


def phi(u: torch.Tensor, alpha: float, omega: float) -> torch.Tensor:
    """φ(u) = u²/2 − α·cos(ω·u)."""
    return 0.5 * u * u - alpha * torch.cos(omega * u)


def phi_prime(u: torch.Tensor, alpha: float, omega: float) -> torch.Tensor:
    """φ'(u) = u + α·ω·sin(ω·u)."""
    return u + (alpha * omega) * torch.sin(omega * u)


def phi_second(u: torch.Tensor, alpha: float, omega: float) -> torch.Tensor:
    """φ''(u) = 1 + α·ω²·cos(ω·u)."""
    return 1.0 + (alpha * omega * omega) * torch.cos(omega * u)


class _Separable(Problem):
    """f(x) = b·Σ φ(a·x_i), g = ∇f + N(0, s²·I); a, b, s set by the subclass (module docstring)."""

    def __init__(self, *, d, sigma, alpha, omega, init_scale, init_dist, seed, device, dtype):
        super().__init__()
        self.d_ = check_int("d", d)
        self.sigma = check_float("sigma", sigma)
        self.alpha = check_float("alpha", alpha)
        self.omega = check_float("omega", omega)
        self.init_scale = check_float("init_scale", init_scale)
        self.init_dist = check_choice("init_dist", init_dist, ("normal", "uniform"))
        self.device, self.dtype = device, dtype
        self.input_scale, self.output_scale, self.noise_std = self._scales(self.d_, self.sigma)

        init = make_generator(seed, "init")
        if self.init_dist == "normal":
            u0 = self.init_scale * torch.randn(self.d_, generator=init, dtype=torch.float64)
        else:
            u0 = self.init_scale * (2 * torch.rand(self.d_, generator=init, dtype=torch.float64) - 1)
        x0 = (u0 / self.input_scale).to(dtype)
        self.x = x0.to(device, copy=True).requires_grad_(True)
        self.params, self.param_names = [self.x], ["x"]
        self._full = None  # (x's version, f(x), [∇f(x)]) of the last full_gradient
        # Δ from the x0 actually stored (after rounding to dtype), in float64
        self._delta = float(self.objective(x0.double())) - self.f_low

    # subclass: (a, b, s)
    def _scales(self, d: int, sigma: float) -> tuple[float, float, float]:
        raise NotImplementedError

    @property
    def L(self) -> float:
        """ℓ2 smoothness: max |b·a²·φ''| = 1 + αω² (b·a² = 1 in both families, exactly)."""
        return 1.0 + self.alpha * self.omega ** 2

    @property
    def f_low(self) -> float:
        """inf f = b·d·(−α), attained at x = 0."""
        return -self.output_scale * self.d_ * self.alpha

    @property
    def sigma_total(self) -> float:
        """√E‖g − ∇f‖₂² = s·√d."""
        return self.noise_std * math.sqrt(self.d_)

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = b·Σ φ(a·x_i) as a differentiable torch expression (for autograd checks)."""
        return self.output_scale * phi(self.input_scale * x, self.alpha, self.omega).sum()

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """∇_i f = b·a·φ'(a·x_i)."""
        u = self.input_scale * x
        return (self.output_scale * self.input_scale) * phi_prime(u, self.alpha, self.omega)

    def hessian_diagonal(self, x: torch.Tensor) -> torch.Tensor:
        """∇²f = diag(b·a²·φ''(a·x_i))."""
        u = self.input_scale * x
        return (self.output_scale * self.input_scale ** 2) * phi_second(u, self.alpha, self.omega)

    def stochastic_loss(self, generator: torch.Generator) -> torch.Tensor:
        """p.grad += ∇f(x) + ξ with ξ ~ N(0, s²·I) from `generator`; returns f(x)."""
        with torch.no_grad():
            x = self.x.detach()
            loss, (g,) = self.full_gradient()
            g = g.clone()
            if self.noise_std > 0:
                g.add_(randn(g.shape, generator, dtype=g.dtype, device=g.device), alpha=self.noise_std)
            accumulate_grad(self.x, g)
            return loss

    def full_gradient(self):
        """(f(x), [∇f(x)]), kept until x changes: the trainer asks for it right after
        `stochastic_loss` at the same x (read-only: do not modify the returned tensors)."""
        version = (self.x._version, self.x.data_ptr())
        if self._full is None or self._full[0] != version:
            with torch.no_grad():
                x = self.x.detach()
                self._full = (version, self.objective(x), [self.gradient(x)])
        return self._full[1], self._full[2]

    # --- stacked rows (lionconv.batched): the same elementwise ops, sums per row ----------------
    stackable = True

    def stacked_full_gradient(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        u = self.input_scale * x
        wu = self.omega * u  # shared by φ and φ' (the same value both compute)
        values = 0.5 * u * u - self.alpha * torch.cos(wu)
        torch.mul(u + (self.alpha * self.omega) * torch.sin(wu),
                  self.output_scale * self.input_scale, out=out)
        return self.output_scale * values.sum(dim=1)

    def add_stacked_noise(self, g, generators, work, out) -> None:
        _add_row_noise(g, generators, work, self.noise_std, out)

    def constants(self) -> dict:
        return {"Delta": self._delta, "L": self.L, "sigma": self.sigma_total,
                "f_low": self.f_low, "kind": "closed_form"}


class ScaledSeparable(_Separable):
    """THEORY §6 family: f(x) = (1/d)·Σ φ(√d·x_i), noise N(0, σ²/d·I); Δ, L, σ fixed in d."""

    name = "scaled_separable"

    def __init__(self, *, d: int = 1000, sigma: float = 1.0, alpha: float = 0.5,
                 omega: float = 2.0, init_scale: float = 2.0, init_dist: str = "normal",
                 seed: int, device, dtype):
        super().__init__(d=d, sigma=sigma, alpha=alpha, omega=omega, init_scale=init_scale,
                         init_dist=init_dist, seed=seed, device=device, dtype=dtype)

    def _scales(self, d, sigma):
        return math.sqrt(d), 1.0 / d, sigma / math.sqrt(d)


class NaiveSeparable(_Separable):
    """Contrast family: f(x) = Σ φ(x_i), noise N(0, σ²·I); Δ ∝ d, total σ² = dσ²."""

    name = "naive_separable"

    def __init__(self, *, d: int = 1000, sigma: float = 1.0, alpha: float = 0.5,
                 omega: float = 2.0, init_scale: float = 2.0, init_dist: str = "normal",
                 seed: int, device, dtype):
        super().__init__(d=d, sigma=sigma, alpha=alpha, omega=omega, init_scale=init_scale,
                         init_dist=init_dist, seed=seed, device=device, dtype=dtype)

    def _scales(self, d, sigma):
        return 1.0, 1.0, sigma


class Quadratic(Problem):
    """f(θ) = ½‖θ‖₂², ∇f = θ, θ_0 = `init` in every coordinate, g = θ + N(0, σ²/d·I).

    THEORY §8's negative control uses d = 1, σ = 0 (exact gradient; the generator is then not
    used): Lion with constant β, η cycles θ = ±η/2. Constants: L = 1, f_low = 0,
    Delta = ½‖θ_0‖² = d·init²/2, sigma = σ.
    """

    name = "quadratic"

    def __init__(self, *, d: int = 1, init: float = 1.0, sigma: float = 0.0, seed: int,
                 device, dtype):
        super().__init__()
        self.d_ = check_int("d", d)
        self.init = check_float("init", init, minimum=None)
        self.sigma = check_float("sigma", sigma)
        self.theta = torch.full((self.d_,), self.init, dtype=dtype, device=device)
        self._delta = 0.5 * float(self.theta.double().pow(2).sum())
        self.theta.requires_grad_(True)
        self.params, self.param_names = [self.theta], ["theta"]

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        return 0.5 * theta.pow(2).sum()

    def stochastic_loss(self, generator: torch.Generator) -> torch.Tensor:
        """p.grad += θ + ξ, ξ ~ N(0, σ²/d·I) (no draw when σ = 0); returns f(θ)."""
        with torch.no_grad():
            theta = self.theta.detach()
            g = theta.clone()
            if self.sigma > 0:
                g.add_(randn(g.shape, generator, dtype=g.dtype, device=g.device),
                       alpha=self.sigma / math.sqrt(self.d_))
            accumulate_grad(self.theta, g)
            return self.objective(theta)

    def full_gradient(self):
        with torch.no_grad():
            theta = self.theta.detach()
            return self.objective(theta), [theta.clone()]

    stackable = True

    def stacked_full_gradient(self, theta: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        out.copy_(theta)
        return 0.5 * theta.pow(2).sum(dim=1)

    def add_stacked_noise(self, g, generators, work, out) -> None:
        _add_row_noise(g, generators, work, self.sigma / math.sqrt(self.d_), out)

    def constants(self) -> dict:
        return {"Delta": self._delta, "L": 1.0, "sigma": self.sigma, "f_low": 0.0,
                "kind": "closed_form"}


def _add_row_noise(g: torch.Tensor, generators, work: torch.Tensor, std: float,
                   out: torch.Tensor) -> None:
    """out = g + std·N(0, I), row i drawn from generators[i] as `randn` draws it for one run
    (the same generator, shape, dtype and kernel, so the same numbers); no draw when std = 0."""
    if std == 0:
        out.copy_(g)
        return
    rows, d = g.shape
    work = work[:rows, :d]
    for row, generator in zip(work, generators):
        torch.randn(d, generator=generator, dtype=g.dtype, out=row)
    torch.add(g, work.to(g.device, non_blocking=True), alpha=std, out=out)
