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

Noise law (`noise`, THEORY §8): "gaussian" as above, or "two_point": ξ_i = s1·ζ_i with ζ_i i.i.d.
+a with probability b/(a+b), −b otherwise (a = noise_a, b = noise_b: mean 0, variance ab, median
+a for b > a), s1 the family's per-coordinate factor (1/√d scaled and rotated, 1 naive and
quadratic, the factor the Gaussian noise has per unit σ). `sigma` is then not used: the reported
σ² = E‖ξ‖² = d·s1²·ab (= ab in the scaled families).

Shift (`shift` = μ, THEORY §3's active constraint): f(x) = b·Σ φ(a·x_i − μ), minimiser u_i = μ,
f_low unchanged; with weight decay λ = a/ρ (0 < ρ < μ) the box is |u_i| ≤ ρ and the constrained
minimiser is the face u_i = ρ, where ‖∇f‖₁ = d·b·a·|φ'(ρ − μ)| (√d·|φ'(ρ − μ)| scaled).
L and σ do not change; Δ = f(x0) − inf f is at least f(x0) − min over the box, so THEORY §4's
bound with it still holds. Its feasible start: init_dist=uniform with init_scale ≤ ρ (|u0_i| ≤ ρ).

Rotated family (THEORY §6): f(x) = (1/d)·Σ φ(√d·(Qx)_i − μ), Q = H·D/√d (H Sylvester–Hadamard,
D a ±1 diagonal drawn from the run seed), Qx and Qᵀv by the fast Walsh–Hadamard transform;
x0 = Qᵀ·u0/√d with the scaled family's u0, so Δ, L, σ (isotropic noise in x) are the scaled ones.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import torch

from .base import (Problem, accumulate_grad, check_choice, check_float, check_int,
                   make_generator, randn)

NOISES = ("gaussian", "two_point")


def two_point(shape, a: float, b: float, generator: torch.Generator, *, dtype, device):
    """i.i.d. draws of +a with probability b/(a+b), −b otherwise (mean 0, variance a·b), from
    one uniform per entry on `generator` (on the generator's device), moved to `device`."""
    uniform = torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)
    atoms = uniform.new_tensor([a, -b])
    return torch.where(uniform < b / (a + b), atoms[0], atoms[1]).to(device)


class NoiseLaw:
    """The additive gradient noise ξ = scale·ζ: ζ ~ N(0, 1) ("gaussian", scale = the Gaussian
    std) or the two-point law (+a w.p. b/(a+b), −b otherwise; scale = the family's factor)."""

    def __init__(self, noise, noise_a, noise_b, *, gaussian_std: float, two_point_scale: float):
        self.kind = check_choice("noise", noise, NOISES)
        self.a = check_float("noise_a", noise_a, strict=True)
        self.b = check_float("noise_b", noise_b, strict=True)
        self.scale = gaussian_std if self.kind == "gaussian" else two_point_scale
        self._row_views = (None, ())  # add_rows' row views of its work buffer (the same each step)

    @property
    def coordinate_variance(self) -> float:
        """E ξ_i²."""
        return self.scale ** 2 * (1.0 if self.kind == "gaussian" else self.a * self.b)

    def add_(self, g: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """g += ξ (no draw at all for zero Gaussian noise, as before the option existed)."""
        if self.kind == "gaussian":
            if self.scale > 0:
                g.add_(randn(g.shape, generator, dtype=g.dtype, device=g.device), alpha=self.scale)
        else:
            g.add_(two_point(g.shape, self.a, self.b, generator, dtype=g.dtype, device=g.device),
                   alpha=self.scale)
        return g

    def draw_rows(self, generators, work: torch.Tensor, threads: int = 1) -> None:
        """work[i] = the raw draws of ξ_i from generators[i] ([R, d] CPU buffer), as `add_`
        draws them for one run (the same generator, length, dtype and kernel, so the same
        numbers): N(0, 1) or the two-point law's uniforms. Rows of d ≥ PARALLEL_DRAW go on
        `threads` threads at once (each row on its own generator). Nothing for zero Gaussian
        noise. Safe on a worker thread: it touches only `work` and the generators."""
        if self.kind == "gaussian" and self.scale == 0:
            return
        rows, d = work.shape
        # row.normal_ / uniform_ is the kernel torch.randn / rand call, at half the dispatch
        draw = torch.Tensor.normal_ if self.kind == "gaussian" else torch.Tensor.uniform_
        key = (work.data_ptr(), rows, d)
        if self._row_views[0] != key:
            self._row_views = (key, work.unbind(0))
        pairs = list(zip(self._row_views[1], generators))
        if threads > 1 and rows > 1 and d >= PARALLEL_DRAW:
            list(_draw_pool(threads).map(lambda p: draw(p[0], generator=p[1]), pairs))
        else:
            for row, generator in pairs:
                draw(row, generator=generator)

    def add_drawn(self, g: torch.Tensor, work: torch.Tensor, out: torch.Tensor) -> None:
        """out = g + ξ for the rows of g ([R, d]), ξ from `draw_rows`' buffer `work`."""
        if self.kind == "gaussian" and self.scale == 0:
            out.copy_(g)
            return
        draws = work.to(g.device, non_blocking=True)
        if self.kind == "two_point":
            atoms = draws.new_tensor([self.a, -self.b])
            draws = torch.where(draws < self.b / (self.a + self.b), atoms[0], atoms[1])
        torch.add(g, draws, alpha=self.scale, out=out)


PARALLEL_DRAW = 1 << 16  # rows at least this long are drawn on torch's threads at once (a draw is serial)


@functools.lru_cache(maxsize=4)
def _draw_pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lionconv-noise")


os.register_at_fork(after_in_child=_draw_pool.cache_clear)  # (a forked child makes its own)


def phi(u: torch.Tensor, alpha: float, omega: float) -> torch.Tensor:
    """φ(u) = u²/2 − α·cos(ω·u)."""
    return 0.5 * u * u - alpha * torch.cos(omega * u)


def phi_prime(u: torch.Tensor, alpha: float, omega: float) -> torch.Tensor:
    """φ'(u) = u + α·ω·sin(ω·u)."""
    return u + (alpha * omega) * torch.sin(omega * u)


def phi_second(u: torch.Tensor, alpha: float, omega: float) -> torch.Tensor:
    """φ''(u) = 1 + α·ω²·cos(ω·u)."""
    return 1.0 + (alpha * omega * omega) * torch.cos(omega * u)


class _NoisyProblem(Problem):
    """A closed-form problem whose g = ∇f + ξ, ξ from its NoiseLaw `self.noise`: the batch's
    noise (lionconv.batched) is that law's, row by row."""

    noise: NoiseLaw

    def draw_stacked_noise(self, generators, work, threads=1) -> None:
        self.noise.draw_rows(generators, work, threads)

    def add_stacked_noise(self, g, work, out, x) -> None:
        self.noise.add_drawn(g, work, out)


class _Separable(_NoisyProblem):
    """f(x) = b·Σ φ(a·(Qx)_i − μ), g = ∇f + ξ; a, b, s and Q (identity here) set by the subclass
    (module docstring)."""

    def __init__(self, *, d, sigma, alpha, omega, init_scale, init_dist, shift, noise, noise_a,
                 noise_b, seed, device, dtype):
        super().__init__()
        self.d_ = check_int("d", d)
        self.sigma = check_float("sigma", sigma)
        self.alpha = check_float("alpha", alpha)
        self.omega = check_float("omega", omega)
        self.init_scale = check_float("init_scale", init_scale)
        self.init_dist = check_choice("init_dist", init_dist, ("normal", "uniform"))
        self.shift = check_float("shift", shift, minimum=None)
        self.device, self.dtype = device, dtype
        self.input_scale, self.output_scale, self.noise_std = self._scales(self.d_, self.sigma)
        self.noise = NoiseLaw(noise, noise_a, noise_b, gaussian_std=self.noise_std,
                              two_point_scale=self._scales(self.d_, 1.0)[2])
        self._setup_rotation(seed)

        init = make_generator(seed, "init")
        if self.init_dist == "normal":
            u0 = self.init_scale * torch.randn(self.d_, generator=init, dtype=torch.float64)
        else:
            u0 = self.init_scale * (2 * torch.rand(self.d_, generator=init, dtype=torch.float64) - 1)
        x0 = self.from_coordinates(u0 / self.input_scale).to(dtype)
        self.x = x0.to(device, copy=True).requires_grad_(True)
        self.params, self.param_names = [self.x], ["x"]
        self._full = None  # (x's version, f(x), [∇f(x)]) of the last full_gradient
        self._stacked = (None, ())  # stacked_full_gradient's buffers (u, ωu, a temporary) and their key
        # Δ from the x0 actually stored (after rounding to dtype), in float64
        self._delta = float(self.objective(x0.double())) - self.f_low

    # subclass: (a, b, s)
    def _scales(self, d: int, sigma: float) -> tuple[float, float, float]:
        raise NotImplementedError

    # the orthogonal change of coordinates v = Qx (identity unless rotated)
    def _setup_rotation(self, seed: int) -> None:
        pass

    def to_coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """v = Q·x (the coordinates f is separable in)."""
        return x

    def from_coordinates(self, v: torch.Tensor) -> torch.Tensor:
        """x = Qᵀ·v."""
        return v

    @property
    def L(self) -> float:
        """ℓ2 smoothness: max |b·a²·φ''| = 1 + αω² (b·a² = 1 in both families, exactly)."""
        return 1.0 + self.alpha * self.omega ** 2

    @property
    def f_low(self) -> float:
        """inf f = b·d·(−α), attained at Qx = μ/a."""
        return -self.output_scale * self.d_ * self.alpha

    @property
    def sigma_total(self) -> float:
        """√E‖g − ∇f‖₂² = √(d·E ξ_i²) (= s·√d for Gaussian noise)."""
        if self.noise.kind == "gaussian":
            return self.noise_std * math.sqrt(self.d_)
        return math.sqrt(self.noise.coordinate_variance * self.d_)

    def _u(self, x: torch.Tensor) -> torch.Tensor:
        """u = a·(Qx) − μ, φ's argument."""
        u = self.input_scale * self.to_coordinates(x)
        return u - self.shift if self.shift else u

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = b·Σ φ(a·(Qx)_i − μ) as a differentiable torch expression (for autograd checks)."""
        return self.output_scale * phi(self._u(x), self.alpha, self.omega).sum()

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """∇f = Qᵀ(b·a·φ'(a·Qx − μ))."""
        v = (self.output_scale * self.input_scale) * phi_prime(self._u(x), self.alpha, self.omega)
        return self.from_coordinates(v)

    def hessian_diagonal(self, x: torch.Tensor) -> torch.Tensor:
        """∇²f = diag(b·a²·φ''(a·x_i − μ)) (unrotated families)."""
        return (self.output_scale * self.input_scale ** 2) * phi_second(self._u(x), self.alpha,
                                                                         self.omega)

    def value_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), ∇f(x)) from one u = a·Qx − μ (one transform each way when rotated)."""
        u = self._u(x)
        value = self.output_scale * phi(u, self.alpha, self.omega).sum()
        v = (self.output_scale * self.input_scale) * phi_prime(u, self.alpha, self.omega)
        return value, self.from_coordinates(v)

    def stochastic_loss(self, generator: torch.Generator) -> torch.Tensor:
        """p.grad += ∇f(x) + ξ with ξ of the noise law, from `generator`; returns f(x)."""
        with torch.no_grad():
            loss, (grad,) = self.full_gradient()
            accumulate_grad(self.x, self.noise.add_(grad.clone(), generator))
            return loss

    def full_gradient(self):
        """(f(x), [∇f(x)]), kept until x changes: the trainer asks for it right after
        `stochastic_loss` at the same x (read-only: do not modify the returned tensors)."""
        version = (self.x._version, self.x.data_ptr())
        if self._full is None or self._full[0] != version:
            with torch.no_grad():
                value, grad = self.value_and_gradient(self.x.detach())
                self._full = (version, value, [grad])
        return self._full[1], self._full[2]

    # --- stacked rows (lionconv.batched): the same elementwise ops, sums per row ----------------
    stackable = True

    def stacked_full_gradient(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        # value_and_gradient's ops in its order (so the same roundings), each into a buffer kept
        # between steps: at large d a fresh [R, d] temporary costs more than the op itself
        (u, wu, t), (a, omega, half, alpha, alpha_omega, grad_scale, b, shift) = self._stack_buffers(x)
        torch.mul(self.to_coordinates(x), a, out=u)
        if self.shift:
            u.sub_(shift)
        torch.mul(u, omega, out=wu)  # shared by φ and φ' (the same value both compute)
        torch.mul(u, half, out=t).mul_(u)  # φ = ½u·u − α·cos(ωu)
        t.sub_(torch.cos(wu, out=out).mul_(alpha))  # `out` is free until ∇f goes there
        values = t.sum(dim=1)
        torch.sin(wu, out=t).mul_(alpha_omega).add_(u)  # φ' = u + αω·sin(ωu)
        torch.mul(t, grad_scale, out=out)
        if self.per_run_rows:  # rotated (one run's [1, d] row): ∇f = Qᵀv
            out.copy_(self.from_coordinates(out))
        return values.mul_(b)

    def _stack_buffers(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Three [R, d] buffers, and the constants as 0-dim tensors in x's dtype: an op with a
        Python number converts it to x's dtype each call (the same value: the same results)."""
        key = (x.shape, x.dtype, x.device)
        if self._stacked[0] != key:
            constants = [self.input_scale, self.omega, 0.5, self.alpha, self.alpha * self.omega,
                         self.output_scale * self.input_scale, self.output_scale, self.shift]
            self._stacked = (key, (tuple(torch.empty_like(x) for _ in range(3)),
                                   torch.tensor(constants, dtype=x.dtype, device=x.device).unbind()))
        return self._stacked[1]

    def constants(self) -> dict:
        return {"Delta": self._delta, "L": self.L, "sigma": self.sigma_total,
                "f_low": self.f_low, "kind": "closed_form"}


class ScaledSeparable(_Separable):
    """THEORY §6 family: f(x) = (1/d)·Σ φ(√d·x_i − μ), noise N(0, σ²/d·I); Δ, L, σ fixed in d."""

    name = "scaled_separable"

    def __init__(self, *, d: int = 1000, sigma: float = 1.0, alpha: float = 0.5,
                 omega: float = 2.0, init_scale: float = 2.0, init_dist: str = "normal",
                 shift: float = 0.0, noise: str = "gaussian", noise_a: float = 1.0,
                 noise_b: float = 1.0, seed: int, device, dtype):
        super().__init__(d=d, sigma=sigma, alpha=alpha, omega=omega, init_scale=init_scale,
                         init_dist=init_dist, shift=shift, noise=noise, noise_a=noise_a,
                         noise_b=noise_b, seed=seed, device=device, dtype=dtype)

    def _scales(self, d, sigma):
        return math.sqrt(d), 1.0 / d, sigma / math.sqrt(d)


class NaiveSeparable(_Separable):
    """Contrast family: f(x) = Σ φ(x_i − μ), noise N(0, σ²·I); Δ ∝ d, total σ² = dσ²."""

    name = "naive_separable"

    def __init__(self, *, d: int = 1000, sigma: float = 1.0, alpha: float = 0.5,
                 omega: float = 2.0, init_scale: float = 2.0, init_dist: str = "normal",
                 shift: float = 0.0, noise: str = "gaussian", noise_a: float = 1.0,
                 noise_b: float = 1.0, seed: int, device, dtype):
        super().__init__(d=d, sigma=sigma, alpha=alpha, omega=omega, init_scale=init_scale,
                         init_dist=init_dist, shift=shift, noise=noise, noise_a=noise_a,
                         noise_b=noise_b, seed=seed, device=device, dtype=dtype)

    def _scales(self, d, sigma):
        return 1.0, 1.0, sigma


FWHT_BLOCK = 64  # the lowest log2(64) butterfly stages are one matmul with H_64 (fewer passes)


@functools.lru_cache(maxsize=16)
def sylvester_hadamard(n: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """The n×n Sylvester–Hadamard matrix H_1 = [1], H_2n = [[H_n, H_n], [H_n, −H_n]]."""
    H = torch.ones(1, 1, dtype=dtype, device=device)
    while H.shape[0] < n:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    return H


def fwht(v: torch.Tensor) -> torch.Tensor:
    """H·v along the last axis (length n a power of two), H the Sylvester–Hadamard matrix,
    unnormalised, O(n log n), differentiable. H_n = H_{n/m} ⊗ H_m: the m = min(n, FWHT_BLOCK)
    lowest-bit stages are one matmul with H_m (symmetric) on contiguous blocks, the remaining
    log2(n/m) are butterflies on a reshaped view (one vectorised pass each)."""
    shape, n = v.shape, v.shape[-1]
    m = min(n, FWHT_BLOCK)
    v = v.reshape(-1, m) @ sylvester_hadamard(m, v.dtype, str(v.device))
    h = m
    while h < n:
        pairs = v.reshape(-1, n // (2 * h), 2, h)
        top, bottom = pairs[:, :, 0, :], pairs[:, :, 1, :]
        v = torch.stack((top + bottom, top - bottom), dim=2)
        h *= 2
    return v.reshape(shape)


class RotatedSeparable(ScaledSeparable):
    """THEORY §6 rotated family: f(x) = (1/d)·Σ φ(√d·(Qx)_i − μ), Q = H·D/√d, d a power of two;
    ∇f = Qᵀ(φ'(·)/√d), ∇²f = Qᵀ·diag φ''·Q: Δ, L, σ of the scaled family, coordinates coupled."""

    name = "rotated_separable"
    per_run_rows = True  # D is drawn from the run's seed: the batch gives each run its own rows

    def __init__(self, *, d: int = 1024, sigma: float = 1.0, alpha: float = 0.5,
                 omega: float = 2.0, init_scale: float = 2.0, init_dist: str = "normal",
                 shift: float = 0.0, noise: str = "gaussian", noise_a: float = 1.0,
                 noise_b: float = 1.0, seed: int, device, dtype):
        d = check_int("d", d)
        if d & (d - 1):
            raise ValueError(f"d={d} is not allowed for rotated_separable: expected a power of "
                             f"two (e.g. {1 << (d.bit_length() - 1)} or {1 << d.bit_length()})")
        super().__init__(d=d, sigma=sigma, alpha=alpha, omega=omega, init_scale=init_scale,
                         init_dist=init_dist, shift=shift, noise=noise, noise_a=noise_a,
                         noise_b=noise_b, seed=seed, device=device, dtype=dtype)

    def _setup_rotation(self, seed: int) -> None:
        draw = torch.randint(0, 2, (self.d_,), generator=make_generator(seed, "rotation"))
        self.signs = (2 * draw - 1).to(device=self.device, dtype=self.dtype)  # D
        self.rotation_scale = 1.0 / math.sqrt(self.d_)

    def _signs_like(self, v: torch.Tensor) -> torch.Tensor:
        """D in v's dtype and device (a copy only when they differ from the run's)."""
        return self.signs.to(dtype=v.dtype, device=v.device)

    def to_coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """Q·x = H·(D·x)/√d."""
        return fwht(x * self._signs_like(x)) * self.rotation_scale

    def from_coordinates(self, v: torch.Tensor) -> torch.Tensor:
        """Qᵀ·v = D·(H·v)/√d (H is symmetric)."""
        return fwht(v) * (self._signs_like(v) * self.rotation_scale)

    def rotation_matrix(self) -> torch.Tensor:
        """Q as a dense float64 matrix (tests and small d only)."""
        return self.to_coordinates(torch.eye(self.d_, dtype=torch.float64)).T

    def hessian_diagonal(self, x):
        raise NotImplementedError("rotated_separable's Hessian Qᵀ·diag(φ'')·Q is not diagonal")


class Quadratic(_NoisyProblem):
    """f(θ) = ½‖θ‖₂², ∇f = θ, θ_0 = `init` in every coordinate, g = θ + ξ with
    ξ ~ N(0, σ²/d·I) (noise="gaussian") or ξ_i i.i.d. two-point, +a w.p. b/(a+b), −b otherwise,
    the atoms as given (noise="two_point"; `sigma` is then not used).

    THEORY §8's negative controls: d = 1, σ = 0 (exact gradient; the generator is then not used):
    Lion with constant β, η cycles θ = ±η/2; two-point noise with constant β1 settles at
    θ* = −(1−β1)·a. Constants: L = 1, f_low = 0, Delta = ½‖θ_0‖² = d·init²/2, sigma = σ
    (gaussian) or √(d·a·b) (two_point): E‖ξ‖² = sigma² in both. Logs `grad_mean` = mean θ.
    """

    name = "quadratic"

    def __init__(self, *, d: int = 1, init: float = 1.0, sigma: float = 0.0,
                 noise: str = "gaussian", noise_a: float = 1.0, noise_b: float = 1.0, seed: int,
                 device, dtype):
        super().__init__()
        self.d_ = check_int("d", d)
        self.init = check_float("init", init, minimum=None)
        self.sigma = check_float("sigma", sigma)
        self.noise = NoiseLaw(noise, noise_a, noise_b, gaussian_std=self.sigma / math.sqrt(self.d_),
                              two_point_scale=1.0)
        self.theta = torch.full((self.d_,), self.init, dtype=dtype, device=device)
        self._delta = 0.5 * float(self.theta.double().pow(2).sum())
        self.theta.requires_grad_(True)
        self.params, self.param_names = [self.theta], ["theta"]

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        return 0.5 * theta.pow(2).sum()

    def stochastic_loss(self, generator: torch.Generator) -> torch.Tensor:
        """p.grad += θ + ξ (no draw for Gaussian noise with σ = 0); returns f(θ)."""
        with torch.no_grad():
            theta = self.theta.detach()
            g = self.noise.add_(theta.clone(), generator)
            accumulate_grad(self.theta, g)
            return self.objective(theta)

    def full_gradient(self):
        with torch.no_grad():
            theta = self.theta.detach()
            return self.objective(theta), [theta.clone()]

    def extra_metrics(self, params) -> dict[str, torch.Tensor]:
        """grad_mean = (1/d)·Σ_i ∂_i f = mean θ (signed): THEORY §8's fixed point θ* = −(1−β1)·a."""
        return {"grad_mean": params[0].detach().to(torch.float64).mean()}

    @property
    def sigma_total(self) -> float:
        """√E‖ξ‖²."""
        if self.noise.kind == "gaussian":
            return self.sigma
        return math.sqrt(self.noise.coordinate_variance * self.d_)

    stackable = True

    def stacked_full_gradient(self, theta: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        out.copy_(theta)
        return 0.5 * theta.pow(2).sum(dim=1)

    def stacked_extra_metrics(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"grad_mean": theta.to(torch.float64).mean(dim=1)}

    def constants(self) -> dict:
        return {"Delta": self._delta, "L": 1.0, "sigma": self.sigma_total, "f_low": 0.0,
                "kind": "closed_form"}

