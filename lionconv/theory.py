"""docs/THEORY.md as plain functions: the §4 schedule and bound, §5 reference ratios, §3/§7/§8 quantities.

Every function works on Python floats and on NumPy arrays (broadcasting), so a bound curve over a
grid of K is one call. Bad input -> one ValueError naming the value and what is allowed.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "horizon_schedule", "box_factor", "bound_template", "bound_with_schedule", "optimal_constants",
    "leading_term", "lower_bound_l2", "RATIO_REFERENCE", "sparse_ratio_bound", "box_envelope",
    "two_cycle_amplitude", "noise_floor", "skewed_fixed_point", "lion_generalization_log10_term", "did_train",
    "TRAINED_LOSS_FRACTION", "TRAINED_MOVE_FRACTION",
]


def _require(name: str, value, ok, allowed: str) -> None:
    """Raise ValueError unless ok(value) holds for every entry (NaN fails)."""
    arr = np.asarray(value, dtype=float)
    if arr.size == 0 or not np.all(ok(arr)):
        shown = arr.item() if arr.size == 1 else arr.tolist()
        raise ValueError(f"{name}={shown!r} is not allowed; {name} must be {allowed}")


def _positive(name, value):
    _require(name, value, lambda a: a > 0, "> 0")


def _nonnegative(name, value):
    _require(name, value, lambda a: a >= 0, ">= 0")


def _beta(name, value):
    _require(name, value, lambda a: (a >= 0) & (a < 1), "in [0, 1)")


def horizon_schedule(K, d, c1, c2, c3):
    """Horizon schedule (THEORY §4): β1 = 1 − c1/√K, β2 = 1 − c2/√K, η = c3/(√d·K^{3/4}).

    Returns (beta1, beta2, lr), constant within a run of K iterations.
    """
    _positive("K", K)
    _positive("d", d)
    _positive("c3", c3)
    beta1 = 1.0 - c1 / np.sqrt(K)
    beta2 = 1.0 - c2 / np.sqrt(K)
    _beta("beta1 = 1 - c1/sqrt(K)", beta1)
    _beta("beta2 = 1 - c2/sqrt(K)", beta2)
    lr = c3 / (np.sqrt(d) * np.power(K, 0.75))
    return _scalar(beta1), _scalar(beta2), _scalar(lr)


def box_factor(weight_decay):
    """D = 1 if λ = 0 (unconstrained) else 2 (diameter factor of the box ‖x‖∞ ≤ 1/λ), THEORY §4."""
    _nonnegative("weight_decay", weight_decay)
    return _scalar(np.where(np.asarray(weight_decay, dtype=float) == 0, 1.0, 2.0))


def bound_template(K, d, Delta, L, sigma, lr, beta1, beta2, weight_decay=0.0, e0_norm=0.0):
    """Upper bound on (1/K)·Σ_k E G_λ(x_k) for Lion-family runs (THEORY §4, [derived]):

        Δ/(ηK) + Lη d D²/2 + 2√d·[ ‖e0‖₂/(K(1−β2)) + LηD√d/(1−β2) + σ√(1−β2) + (1−β1)σ ]

    with D = box_factor(λ), e0 = m_0 − ∇f(x_0) (= −∇f(x_0) since m_0 = 0). Valid under the ℓ2
    assumptions from a feasible start (‖x_0‖∞ ≤ 1/λ when λ > 0).
    """
    for name, v in (("K", K), ("d", d), ("lr", lr)):
        _positive(name, v)
    for name, v in (("Delta", Delta), ("L", L), ("sigma", sigma), ("e0_norm", e0_norm)):
        _nonnegative(name, v)
    _require("beta1", beta1, lambda a: (a >= 0) & (a <= 1), "in [0, 1]")
    _beta("beta2", beta2)
    D = box_factor(weight_decay)
    sqrt_d = np.sqrt(d)
    one_m_b2 = 1.0 - np.asarray(beta2, dtype=float)
    bracket = (e0_norm / (K * one_m_b2) + L * lr * D * sqrt_d / one_m_b2
               + sigma * np.sqrt(one_m_b2) + (1.0 - np.asarray(beta1, dtype=float)) * sigma)
    return _scalar(Delta / (lr * K) + L * lr * d * D**2 / 2.0 + 2.0 * sqrt_d * bracket)


def bound_with_schedule(K, d, Delta, L, sigma, c1, c2, c3, weight_decay=0.0, e0_norm=0.0):
    """bound_template under horizon_schedule(K, d, c1, c2, c3), expanded in powers of K (THEORY §4):

        √d K^{-1/4}[Δ/c3 + 2LDc3/c2 + 2σ√c2] + √d K^{-1/2}[2σc1 + 2‖e0‖₂/c2] + L D² c3 √d/(2K^{3/4})
    """
    horizon_schedule(K, d, c1, c2, c3)  # same validity domain as the schedule
    for name, v in (("Delta", Delta), ("L", L), ("sigma", sigma), ("e0_norm", e0_norm)):
        _nonnegative(name, v)
    D = box_factor(weight_decay)
    sqrt_d = np.sqrt(d)
    lead = sqrt_d * np.power(K, -0.25) * (Delta / c3 + 2 * L * D * c3 / c2 + 2 * sigma * np.sqrt(c2))
    mid = sqrt_d * np.power(K, -0.5) * (2 * sigma * c1 + 2 * e0_norm / c2)
    tail = L * D**2 * c3 * sqrt_d / (2 * np.power(K, 0.75))
    return _scalar(lead + mid + tail)


def optimal_constants(Delta, L, sigma, weight_decay=0.0):
    """Minimisers of the K^{-1/4} bracket Δ/c3 + 2LDc3/c2 + 2σ√c2 (THEORY §4):

        c2 = √(2ΔLD)/σ,   c3 = √(Δ·c2/(2LD)).   Returns (c2, c3).
    """
    for name, v in (("Delta", Delta), ("L", L), ("sigma", sigma)):
        _positive(name, v)
    D = box_factor(weight_decay)
    c2 = np.sqrt(2 * Delta * L * D) / sigma
    c3 = np.sqrt(Delta * c2 / (2 * L * D))
    return _scalar(c2), _scalar(c3)


def leading_term(K, d, Delta, L, sigma, weight_decay=0.0):
    """Leading term of the bound at the optimal constants: 4√d·(2ΔLDσ²)^{1/4}·K^{-1/4} (THEORY §4)."""
    _positive("K", K)
    _positive("d", d)
    for name, v in (("Delta", Delta), ("L", L), ("sigma", sigma)):
        _nonnegative(name, v)
    D = box_factor(weight_decay)
    return _scalar(4 * np.sqrt(d) * np.power(2 * Delta * L * D * sigma**2, 0.25) * np.power(K, -0.25))


def lower_bound_l2(K, Delta, L, sigma):
    """Arjevani et al. lower bound, up to an unspecified absolute constant: ‖∇f‖₂ = Ω((ΔLσ²/K)^{1/4}).

    Returns (ΔLσ²/K)^{1/4} with the constant set to 1: use it for the shape in K, not as a level.
    """
    _positive("K", K)
    for name, v in (("Delta", Delta), ("L", L), ("sigma", sigma)):
        _nonnegative(name, v)
    return _scalar(np.power(Delta * L * sigma**2 / K, 0.25))


# Large-d value of r(v) = ‖v‖₁/(√d‖v‖₂) for i.i.d. coordinates: E|X|/√(E X²) (THEORY §5).
RATIO_REFERENCE = {
    "equal": 1.0,
    "uniform": math.sqrt(3.0) / 2.0,
    "gaussian": math.sqrt(2.0 / math.pi),
    "laplace": 1.0 / math.sqrt(2.0),
    "student_t3": 2.0 / math.pi,
}


def sparse_ratio_bound(s, d):
    """Upper bound on r(v) for an s-sparse v ∈ R^d: r ≤ √(s/d) (THEORY §5), 0 < s ≤ d."""
    _positive("d", d)
    _require("s", s, lambda a: (a > 0) & (a <= np.asarray(d, dtype=float)), "in (0, d]")
    return _scalar(np.sqrt(np.asarray(s, dtype=float) / d))


def box_envelope(x0_linf, lr, weight_decay, k):
    """Upper envelope of ‖x_k‖∞ from the recursion ‖x_{k+1}‖∞ ≤ (1−ηλ)‖x_k‖∞ + η (THEORY §3):

        1/λ + (1−ηλ)^k·(‖x_0‖∞ − 1/λ)       (λ > 0, 0 < ηλ ≤ 1)
        ‖x_0‖∞ + η·k                         (λ = 0, the limit)
    """
    _nonnegative("x0_linf", x0_linf)
    _positive("lr", lr)
    _nonnegative("weight_decay", weight_decay)
    _nonnegative("k", k)
    _require("lr*weight_decay", np.asarray(lr) * np.asarray(weight_decay), lambda a: a <= 1, "<= 1")
    lam = np.asarray(weight_decay, dtype=float)
    k = np.asarray(k, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        radius = 1.0 / lam
        decayed = radius + np.power(1.0 - lr * lam, k) * (x0_linf - radius)
    return _scalar(np.where(lam > 0, decayed, x0_linf + lr * k))


def two_cycle_amplitude(lr):
    """Negative control (THEORY §8): Lion with constant β on f(θ) = θ²/2 cycles at θ = ±η/2, so |f'| = η/2."""
    _positive("lr", lr)
    return _scalar(np.asarray(lr, dtype=float) / 2.0)


def noise_floor(d, beta1, sigma):
    """Non-vanishing term of the bound with constant β1 (THEORY §8): 2√d·(1−β1)·σ."""
    _positive("d", d)
    _require("beta1", beta1, lambda a: (a >= 0) & (a <= 1), "in [0, 1]")
    _nonnegative("sigma", sigma)
    return _scalar(2 * np.sqrt(d) * (1.0 - np.asarray(beta1, dtype=float)) * sigma)


def skewed_fixed_point(beta1, a):
    """Skewed-noise control (THEORY §8): with two-point noise (+a likelier, −b), constant β1 and β2 → 1,
    Lion (SignSGD: β1 = 0) on θ²/2 settles where c's likelier atom θ + (1−β1)·a is 0: θ* = −(1−β1)·a."""
    _require("beta1", beta1, lambda b: (b >= 0) & (b <= 1), "in [0, 1]")
    _positive("a", a)
    return _scalar(-(1.0 - np.asarray(beta1, dtype=float)) * np.asarray(a, dtype=float))


def lion_generalization_log10_term(N, T, tau):
    """log10 of Lion's generalization bound term 1/(N·τ^T) (THEORY §7): −log10 N − T·log10 τ."""
    _positive("N", N)
    _nonnegative("T", T)
    _positive("tau", tau)
    return _scalar(-np.log10(N) - np.asarray(T, dtype=float) * np.log10(tau))


TRAINED_LOSS_FRACTION = 0.5   # trained: final train loss < half of the initial one
TRAINED_MOVE_FRACTION = 0.01  # not trained: ‖x_T − x_0‖₂ < 1% of the reference (Lion's) move


def did_train(initial_loss, final_loss, distance=None, reference_distance=None, *,
              loss_fraction=TRAINED_LOSS_FRACTION, move_fraction=TRAINED_MOVE_FRACTION):
    """THEORY §7's "did it train" [project rule]: f(x_T) < loss_fraction·f(x_0) and, when a
    reference move is given (Lion's ‖x_T − x_0‖₂ on the same problem), ‖x_T − x_0‖₂ ≥
    move_fraction·reference. The inputs are the summary's `training` block. Broadcasts; NaN or a
    missing loss gives False (a diverged or unfinished run did not train)."""
    initial, final = (np.asarray(np.nan if v is None else v, dtype=float)
                      for v in (initial_loss, final_loss))
    ok = final < loss_fraction * initial
    if reference_distance is not None:
        moved = np.asarray(np.nan if distance is None else distance, dtype=float)
        ok = ok & (moved >= move_fraction * np.asarray(reference_distance, dtype=float))
    return bool(ok) if np.ndim(ok) == 0 else ok


def _scalar(x):
    """0-d arrays back to Python float; arrays stay arrays."""
    arr = np.asarray(x, dtype=float)
    return float(arr) if arr.ndim == 0 else arr
