"""Hyperparameter checks: one ``ValueError`` naming the bad value and what is allowed.

Written as ``not (ok)`` so that NaN, which fails every comparison, is rejected too.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

GATES = ("global", "tensor", "coordinate")


def _finite_real(value) -> bool:
    """A real number (Python, NumPy, or a one-element real tensor) that is finite."""
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and not value.is_complex() and bool(torch.isfinite(value).all())
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def check_lr(lr) -> None:
    """0 ≤ η < ∞ (0 is allowed: a frozen run still updates the momentum); like torch.optim.Adam,
    η may be a one-element tensor or a NumPy scalar."""
    if not (_finite_real(lr) and float(lr) >= 0.0):
        raise ValueError(f"Invalid learning rate: {lr!r} (must be a finite number >= 0, or a "
                         "one-element tensor holding one)")


def check_betas(betas) -> None:
    """β = (β1, β2) with each βi ∈ [0, 1)."""
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"Invalid betas: {betas!r} (must be a pair (beta1, beta2) in [0, 1))")
    for i, beta in enumerate(betas, start=1):
        if not (isinstance(beta, Real) and not isinstance(beta, bool) and 0.0 <= beta < 1.0):
            raise ValueError(f"Invalid beta{i}: {beta!r} (must be in [0, 1))")


def check_weight_decay(weight_decay) -> None:
    """λ ≥ 0 (the box ‖x‖∞ ≤ 1/λ of THEORY §3)."""
    if not (_finite_real(weight_decay) and not isinstance(weight_decay, torch.Tensor)
            and weight_decay >= 0.0):
        raise ValueError(f"Invalid weight_decay: {weight_decay!r} (must be a finite number >= 0)")


def check_nu(nu) -> None:
    """CLion's threshold ν > 0."""
    if not (_finite_real(nu) and not isinstance(nu, torch.Tensor) and nu > 0.0):
        raise ValueError(f"Invalid nu: {nu!r} (must be a finite number > 0)")


def check_gate(gate) -> None:
    """CLion's gate is one of GATES."""
    if gate not in GATES:
        allowed = ", ".join(repr(g) for g in GATES)
        raise ValueError(f"Invalid gate: {gate!r} (must be one of {allowed})")


def check_foreach(foreach) -> None:
    """foreach ∈ {None, True, False}."""
    if foreach not in (None, True, False):
        raise ValueError(f"Invalid foreach: {foreach!r} (must be None, True or False)")
