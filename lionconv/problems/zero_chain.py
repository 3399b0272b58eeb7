"""The lower-bound instance (THEORY §9): Carmon et al.'s zero-chain function with Arjevani et
al.'s probabilistic zero-chain oracle, scaled to given Δ, L, σ and accuracy ε.

    Ψ(t) = 0 (t ≤ 1/2), exp(1 − 1/(2t−1)²) (t > 1/2);   Ψ'(t) = Ψ(t)·4/(2t−1)³
    Φ(t) = √e·∫_{−∞}^t e^{−s²/2} ds = √(2πe)·N(t);       Φ'(t) = √e·e^{−t²/2}
    F_T(u) = Σ_{i=1}^T [Ψ(−u_{i−1})Φ(−u_i) − Ψ(u_{i−1})Φ(u_i)]   with u_0 := 1
(u_0 = 1 turns the first term into −Ψ(1)Φ(u_1), as Ψ(−1) = 0), so
    ∂_j F_T = −Ψ(−u_{j−1})Φ'(−u_j) − Ψ(u_{j−1})Φ'(u_j) − [j<T]·(Ψ'(−u_j)Φ(−u_{j+1}) + Ψ'(u_j)Φ(u_{j+1})).
Every term is ≤ 0: ∇F_T ≤ 0 everywhere, so every method here moves x only upwards.

Scaled: f(x) = (L·λ²/152)·F_T(x/λ) on the first T of d coordinates (the rest are inert), so
∇f(x) = (L·λ/152)·∇F_T(x/λ) is L-Lipschitz. With λ = 2ε·152/L this is 2ε·∇F_T(x/λ), and
‖∇F_T‖₂ > 1 while |u_T| < 1 gives ‖∇f‖₂ > 2ε until the chain is traversed (|x_T| ≥ λ).
Options: `T` or `Delta` (T = ⌊ΔL/(48·152·ε²)⌋), and `p` or `sigma` (p = 2116ε²/(σ² + 2116ε²));
`L`, `epsilon` set the scale (defaults 152, 1/2: λ = 1, f = F_T).

Oracle: [g]_i = ∇_i f(x)·(1 + 1{i > prog_{1/4}(x/λ)}·(ξ/p − 1)), ξ ~ Bernoulli(p), one uniform
draw from the run's generator per call. Convention: progress is always of u = x/λ, i.e.
prog_α = max{i ≤ T : |x_i| > α·λ} (0 if none). Only coordinate prog_{1/4}+1 can have a non-zero
gradient past prog_{1/4} (∂_j F_T = 0 when |u_{j−1}|, |u_j| ≤ 1/2), so the oracle hides exactly
the next link, revealing it with probability p: unbiased, E‖g − ∇f‖² ≤ (2ε)²·23²(1−p)/p = σ².

Floating point: Ψ is evaluated as exp(1 − 1/max(2t−1, 0.01)²): for 2t−1 ≤ 0.01 the true value is
below e^{−9999}, zero in any float, so the clamp changes nothing and Ψ' = Ψ·4/u³ never forms
0·∞ (the unclamped float32 Ψ' is NaN where (2t−1)³ underflows). Zeros stay exact zeros in float32
too; float32 only makes Ψ flush to 0 a little later (2t−1 < 0.1 instead of 0.037), so a link
becomes visible at u ≈ 0.55 instead of 0.52. The lower_bound preset runs float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special

from .base import Problem, accumulate_grad, check_float, check_int

LIPSCHITZ = 152.0      # ∇F_T is 152-Lipschitz
GRAD_INF_BOUND = 23.0  # ‖∇F_T‖∞ ≤ 23
DELTA_PER_LINK = 12.0  # F_T(0) − inf F_T ≤ 12·T
_PSI_CLAMP = 0.01      # 2t−1 below this: Ψ(t) < e^{−9999}, i.e. 0 in float64 already
_SQRT_E = math.sqrt(math.e)
_SQRT_2PI_E = math.sqrt(2.0 * math.pi * math.e)


def psi(t: torch.Tensor) -> torch.Tensor:
    """Ψ(t) = exp(1 − 1/(2t−1)²) for t > 1/2, else 0."""
    u = (2.0 * t - 1.0).clamp(min=_PSI_CLAMP)
    return torch.exp(1.0 - u.pow(-2))


def psi_prime(t: torch.Tensor) -> torch.Tensor:
    """Ψ'(t) = Ψ(t)·4/(2t−1)³ for t > 1/2, else 0."""
    u = (2.0 * t - 1.0).clamp(min=_PSI_CLAMP)
    return 4.0 * torch.exp(1.0 - u.pow(-2)) / u.pow(3)


def phi(t: torch.Tensor) -> torch.Tensor:
    """Φ(t) = √e·∫_{−∞}^t e^{−s²/2} ds = √(2πe)·N(t) (N the standard normal CDF)."""
    return _SQRT_2PI_E * torch.special.ndtr(t)


def phi_prime(t: torch.Tensor) -> torch.Tensor:
    """Φ'(t) = √e·exp(−t²/2)."""
    return _SQRT_E * torch.exp(-0.5 * t * t)


class _Torch:
    stack, empty_like, exp, ndtr = torch.stack, torch.empty_like, torch.exp, torch.special.ndtr

    @staticmethod
    def clip_below(a, low):
        return a.clamp(min=low)


class _NumPy:
    stack, empty_like, exp, ndtr = np.stack, np.empty_like, np.exp, staticmethod(special.ndtr)

    @staticmethod
    def clip_below(a, low):
        return np.maximum(a, low)


SMALL_CHAIN = 1 << 14
"""Up to this T, a CPU chain is evaluated with NumPy: there each of the ~25 elementwise ops costs
its fixed dispatch (≈2 µs in NumPy, ≈10-20 µs in torch), not its arithmetic."""


def _numpy_path(T: int, device: torch.device) -> bool:
    """Whether a chain of length T on `device` is evaluated with NumPy (SMALL_CHAIN)."""
    return device.type == "cpu" and T <= SMALL_CHAIN


def _value_and_gradient(u, xp):
    """(F_T(u), ∇F_T(u)) with array namespace xp (_Torch or _NumPy): Ψ, Ψ', Φ, Φ' each
    evaluated once on the stacked (u, −u), the chain's shift as slices (no loop). u is one
    chain ([T]) or rows of chains ([R, T], lionconv.batched): each row's numbers are the ones
    its chain alone gives (elementwise ops, and sums along the chain)."""
    a = xp.stack([u, -u])                                      # rows: +, −
    w = xp.clip_below(2.0 * a - 1.0, _PSI_CLAMP)
    psi_a = xp.exp(1.0 - w ** -2)
    psi_prime_a = 4.0 * psi_a / w ** 3
    phi_a = _SQRT_2PI_E * xp.ndtr(a)
    phi_prime_a = _SQRT_E * xp.exp(-0.5 * a * a)
    # Ψ(±u_{i−1}) with u_0 = 1: Ψ(1) = 1, Ψ(−1) = 0
    psi_prev = xp.empty_like(psi_a)
    psi_prev[..., 1:] = psi_a[..., :-1]
    psi_prev[0, ..., 0], psi_prev[1, ..., 0] = 1.0, 0.0
    value = (psi_prev[1] * phi_a[1] - psi_prev[0] * phi_a[0]).sum(-1)
    grad = -(psi_prev * phi_prime_a).sum(0)
    grad[..., :-1] -= (psi_prime_a[..., :-1] * phi_a[..., 1:]).sum(0)
    return value, grad


def chain_value_and_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(F_T(u), ∇F_T(u)) for u ∈ R^T by the closed form of the module docstring (NumPy for
    small CPU chains, torch otherwise; the same formulas)."""
    if u.is_cpu and u.numel() <= SMALL_CHAIN and u.dtype in (torch.float32, torch.float64):
        value, grad = _value_and_gradient(u.numpy(force=True), _NumPy)
        return torch.tensor(value, dtype=u.dtype), torch.from_numpy(grad)
    return _value_and_gradient(u, _Torch)


def chain_value(u: torch.Tensor) -> torch.Tensor:
    """F_T(u) for u ∈ R^T (T = u.numel() ≥ 1), written term by term from psi and phi;
    differentiable (the autograd reference of the tests)."""
    prev = torch.cat([u.new_ones(1), u[:-1]])                  # u_0 = 1
    return (psi(-prev) * phi(-u) - psi(prev) * phi(u)).sum()


def chain_gradient(u: torch.Tensor) -> torch.Tensor:
    """∇F_T(u) (see `chain_value_and_gradient`)."""
    return chain_value_and_gradient(u)[1]


_THRESHOLDS = (0.25, 1.0, 0.0)  # prog_1_4, prog_1, prog_0


def progress(u: torch.Tensor, alpha) -> torch.Tensor:
    """prog_α(u) = max{i : |u_i| > α} (1-based; 0 if none), a 0-dim int64 tensor (no sync);
    alpha a tensor of thresholds gives one progress per threshold."""
    alpha = torch.as_tensor(alpha, dtype=u.dtype, device=u.device)
    index = torch.arange(1, u.numel() + 1, device=u.device)
    return (index * (u.abs() > alpha.unsqueeze(-1))).amax(-1)


def chain_parameters(*, T, p, Delta, L, sigma, epsilon) -> dict:
    """THEORY §9's instance from the options: {"T", "p", "scale" (λ), "epsilon", "L", "Delta",
    "sigma"}. Exactly one of T / Delta and one of p / sigma is set; λ = 2ε·152/L;
    T = ⌊ΔL/(48·152·ε²)⌋ from Delta, else Delta = (Lλ²/152)·12T (the instance's bound on
    f(0) − inf f); p = 2116ε²/(σ² + 2116ε²) from sigma, else sigma = 2ε·23·√((1−p)/p)
    (the oracle's noise bound). Raises one ValueError naming the bad option."""
    try:
        return _chain_parameters(T=T, p=p, Delta=Delta, L=L, sigma=sigma, epsilon=epsilon)
    except (OverflowError, ZeroDivisionError):  # ε², σ², Δ·L or λ² out of the float range
        raise ValueError(f"zero_chain: T={T!r}, p={p!r}, Delta={Delta!r}, L={L!r}, sigma={sigma!r}, "
                         f"epsilon={epsilon!r} is not allowed: the instance's constants (ε², σ², "
                         "Δ·L, λ²) leave the float range") from None


def _chain_parameters(*, T, p, Delta, L, sigma, epsilon) -> dict:
    """chain_parameters, whose float overflows it turns into a ValueError."""
    L = check_float("L", L, strict=True)
    epsilon = check_float("epsilon", epsilon, strict=True)
    scale = 2.0 * epsilon * LIPSCHITZ / L
    if (T is None) == (Delta is None):
        raise ValueError(f"zero_chain: T={T!r}, Delta={Delta!r} is not allowed: set exactly one "
                         "of T (chain length) or Delta (T then follows from Delta, L, epsilon)")
    if (p is None) == (sigma is None):
        raise ValueError(f"zero_chain: p={p!r}, sigma={sigma!r} is not allowed: set exactly one "
                         "of p (reveal probability) or sigma (p then follows from sigma, epsilon)")
    if Delta is not None:
        Delta = check_float("Delta", Delta, strict=True)
        T = math.floor(Delta * L / (48.0 * LIPSCHITZ * epsilon ** 2))
        if T < 1:
            raise ValueError(f"Delta={Delta!r} is not allowed with L={L!r}, epsilon={epsilon!r}: "
                             f"T = floor(Delta·L/(48·152·epsilon²)) = {T}, expected >= 1")
    else:
        T = check_int("T", T)
        Delta = (L * scale ** 2 / LIPSCHITZ) * DELTA_PER_LINK * T
    if sigma is not None:
        sigma = check_float("sigma", sigma)
        p = 2116.0 * epsilon ** 2 / (sigma ** 2 + 2116.0 * epsilon ** 2)
        if p == 0:
            raise ValueError(f"sigma={sigma!r} is not allowed with epsilon={epsilon!r}: the reveal "
                             "probability p = 2116·epsilon²/(sigma² + 2116·epsilon²) rounds to 0")
    else:
        p = check_float("p", p, strict=True, maximum=1.0)
        sigma = 2.0 * epsilon * GRAD_INF_BOUND * math.sqrt((1.0 - p) / p)
    return {"T": T, "p": p, "scale": scale, "epsilon": epsilon, "L": L, "Delta": Delta,
            "sigma": sigma}


class ZeroChain(Problem):
    """f(x) = (Lλ²/152)·F_T(x[:T]/λ) on R^d, x_0 = 0, with the probabilistic zero-chain oracle
    (module docstring). Constants (closed form): Delta, L, sigma as `chain_parameters` gives
    them, f_low = f(0) − Delta (a lower bound on inf f), and T, p, scale (λ), epsilon.
    `extra_metrics` logs prog_1_4 = prog_{1/4}, prog_1 = prog_1 (traversed: prog_1 = T) and
    prog_0 (the last non-zero coordinate of x, whose growth needs a revealing draw)."""

    name = "zero_chain"

    def __init__(self, *, T: int | None = 20, p: float | None = 0.05, Delta: float | None = None,
                 L: float = LIPSCHITZ, sigma: float | None = None, epsilon: float = 0.5,
                 d: int | None = None, seed: int, device, dtype):
        super().__init__()
        self.chain = chain_parameters(T=T, p=p, Delta=Delta, L=L, sigma=sigma, epsilon=epsilon)
        self.T, self.p, self.scale = self.chain["T"], self.chain["p"], self.chain["scale"]
        self.d_ = self.T if d is None else check_int("d", d)
        if self.d_ < self.T:
            raise ValueError(f"d={d!r} is not allowed: expected d >= T = {self.T} "
                             "(the chain needs T coordinates; extra ones are inert)")
        # f = value_scale·F_T(x/λ), ∇f = grad_scale·∇F_T(x/λ) (= 2ε when λ comes from ε)
        self.value_scale = self.chain["L"] * self.scale ** 2 / LIPSCHITZ
        self.grad_scale = self.chain["L"] * self.scale / LIPSCHITZ
        self.x = torch.zeros(self.d_, dtype=dtype, device=device, requires_grad=True)
        self.params, self.param_names = [self.x], ["x"]
        self._index = torch.arange(1, self.T + 1, device=device)
        self._thresholds = self.scale * torch.tensor(_THRESHOLDS, dtype=dtype, device=device)
        # (x._version, f(x), ∇f(x)[:T]): the oracle and the logged full gradient share one
        # evaluation at each x (in-place optimizer steps bump the version)
        self._cache: tuple | None = None
        self.last_reveal: torch.Tensor | None = None  # ξ of the last oracle call (for tests)
        self._f0 = float(self.objective(torch.zeros(self.d_, dtype=torch.float64)))
        self._small_cpu = _numpy_path(self.T, self.x.device)

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """f(x), differentiable."""
        return self.value_scale * chain_value(x[:self.T] / self.scale)

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """∇f(x) = (Lλ/152)·∇F_T(x[:T]/λ), zero on the inert coordinates."""
        grad = torch.zeros_like(x)
        grad[:self.T] = self.grad_scale * chain_gradient(x[:self.T] / self.scale)
        return grad

    def _at_x(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), ∇f(x)[:T]) at the current x, evaluated once per x."""
        version = self.x._version
        if self._cache is None or self._cache[0] != version:
            if self._small_cpu:  # NumPy directly: the tensor round trips cost more than the math
                value, grad = _value_and_gradient(self.x.detach().numpy()[:self.T] / self.scale, _NumPy)
                value, grad = torch.tensor(float(value), dtype=self.x.dtype), torch.from_numpy(grad)
            else:
                value, grad = chain_value_and_gradient(self.x.detach()[:self.T] / self.scale)
            self._cache = (version, self.value_scale * value, grad.mul_(self.grad_scale))
        return self._cache[1], self._cache[2]

    def stochastic_loss(self, generator: torch.Generator) -> torch.Tensor:
        """p.grad += g(x; ξ) (module docstring), ξ from one uniform draw of `generator`;
        returns f(x)."""
        with torch.no_grad():
            reveal = torch.rand((), generator=generator, device=generator.device,
                                dtype=torch.float64)
            if self._small_cpu:
                return self._stochastic_loss_small(reveal)
            value, grad = self._at_x()
            reveal = reveal.to(grad.device) < self.p
            u = self.x.detach()[:self.T]
            # prog_{1/4}(x/λ) as |x_i| > λ/4: no division on the per-step path
            prog = (self._index * (u.abs() > 0.25 * self.scale)).amax()
            hidden = self._index > prog
            factor = torch.where(hidden, reveal.to(grad.dtype) / self.p, 1.0)
            g = torch.zeros_like(self.x)
            torch.mul(grad, factor, out=g[:self.T])
            self.last_reveal = reveal
            accumulate_grad(self.x, g)
            return value.clone()

    def _stochastic_loss_small(self, reveal: torch.Tensor) -> torch.Tensor:
        """stochastic_loss for a small CPU chain: the same draw and formulas in NumPy, since
        here each torch op's fixed dispatch cost, not its arithmetic, is the step's time (the
        CPU draw is read with .item(), a copy, not a device sync)."""
        value, grad = self._at_x()
        revealed = reveal.item() < self.p
        x = self.x.detach().numpy()[None]
        g = np.empty_like(x)
        self._oracle_rows(grad.numpy()[None], x, np.array([revealed]), out=g)
        self.last_reveal = torch.tensor(revealed)
        accumulate_grad(self.x, torch.from_numpy(g[0]))
        return value.clone()

    # --- NumPy on rows of points: one run's small CPU chain is one row, a batch R rows ---------
    def _oracle_rows(self, grad: np.ndarray, x: np.ndarray, revealed: np.ndarray, out: np.ndarray) -> None:
        """out[i] = the oracle's g at x[i] ([R, d]) from grad[i] = ∇f(x_i)[:T] and whether
        ξ_i revealed: the coordinates past prog_{1/4}(x_i/λ) times 1/p if so, else times 0."""
        index = np.arange(1, self.T + 1)
        prog = (index * (np.abs(x[:, :self.T]) > 0.25 * self.scale)).max(-1)  # 1-based, 0: none
        past = np.where(revealed, 1.0 / self.p, 0.0)[:, None]  # (p > 0: chain_parameters)
        np.multiply(grad, np.where(index > prog[:, None], past, 1.0), out=out[:, :self.T])
        out[:, self.T:] = 0.0

    def _progress_rows(self, x: np.ndarray) -> np.ndarray:
        """[R, 3] float64: prog_1_4, prog_1, prog_0 of each row of x ([R, d])."""
        above = np.abs(x[:, None, :self.T]) > self._thresholds.numpy()[None, :, None]
        return (np.arange(1, self.T + 1) * above).max(-1).astype(np.float64)

    def full_gradient(self):
        with torch.no_grad():
            value, grad = self._at_x()
            full = torch.zeros_like(self.x)
            full[:self.T] = grad
            return value.clone(), [full]

    def extra_metrics(self, params) -> dict[str, torch.Tensor]:
        """prog_1_4, prog_1 (of x/λ) and prog_0 (last non-zero coordinate) at x = params[0]."""
        x = params[0].detach()[:self.T]
        if x.is_cpu and self._small_cpu:  # NumPy: one fixed cost per op (see _stochastic_loss_small)
            values = torch.from_numpy(self._progress_rows(x.numpy()[None])[0])
        else:
            above = x.abs() > self._thresholds.unsqueeze(-1)
            values = (self._index * above).amax(-1).to(torch.float64)
        return dict(zip(("prog_1_4", "prog_1", "prog_0"), values.unbind()))

    # --- stacked rows (lionconv.batched): small float64 CPU chains, one run's NumPy path -------
    stackable = True

    @classmethod
    def why_not_stacked(cls, cfg) -> str | None:
        """Stacked only where one run takes the NumPy path (a CPU chain of T ≤ SMALL_CHAIN) in
        float64: the reveal draw is float64 and the batch's draw buffer is in x's dtype."""
        if cfg["dtype"] != "float64":
            return "zero_chain is stacked in float64 only"
        options = {k: cfg["problem"].get(k) for k in ("T", "p", "Delta", "L", "sigma", "epsilon")}
        try:
            T = chain_parameters(**options)["T"]
        except (TypeError, ValueError):  # (a bad option: the run alone reports it)
            return "zero_chain options"
        if not _numpy_path(T, torch.device(str(cfg["device"]))):
            return f"zero_chain with T = {T} on {cfg['device']} (stacked: T <= {SMALL_CHAIN} on the CPU)"
        return None

    def stacked_full_gradient(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        # _at_x's NumPy path, row by row (its scalings in float64: the same products)
        value, grad = _value_and_gradient(x.numpy()[:, :self.T] / self.scale, _NumPy)
        full = out.numpy()
        np.multiply(grad, self.grad_scale, out=full[:, :self.T])
        full[:, self.T:] = 0.0
        return torch.from_numpy(value * self.value_scale)

    def draw_stacked_noise(self, generators, work, threads=1) -> None:
        """work[i, 0] = ξ_i's uniform, drawn from generators[i] as `stochastic_loss` draws it."""
        for row, generator in zip(work, generators):
            row[:1].uniform_(generator=generator)

    def add_stacked_noise(self, g, work, out, x) -> None:
        """out[i] = the oracle's g at x[i], ξ_i's uniform in work[i, 0] (`_oracle_rows`)."""
        self._oracle_rows(g.numpy()[:, :self.T], x.numpy(), work.numpy()[:, 0] < self.p, out=out.numpy())

    def stacked_extra_metrics(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        values = torch.from_numpy(self._progress_rows(x.numpy()))
        return dict(zip(("prog_1_4", "prog_1", "prog_0"), values.unbind(1)))

    def constants(self) -> dict:
        c = self.chain
        return {"Delta": c["Delta"], "L": c["L"], "sigma": c["sigma"],
                "f_low": self._f0 - c["Delta"], "kind": "closed_form", "T": self.T,
                "p": self.p, "scale": self.scale, "epsilon": c["epsilon"]}
