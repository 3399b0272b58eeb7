"""Hyperparameter checks: one ``ValueError`` naming the bad value and what is allowed.

Written as ``not (ok)`` so that NaN, which fails every comparison, is rejected too.
"""

from __future__ import annotations

GATES = ("global", "tensor", "coordinate")


def check_lr(lr) -> None:
    """η ≥ 0 (0 is allowed: a frozen run still updates the momentum)."""
    if not (isinstance(lr, (int, float)) and lr >= 0.0):
        raise ValueError(f"Invalid learning rate: {lr!r} (must be a number >= 0)")


def check_betas(betas) -> None:
    """β = (β1, β2) with each βi ∈ [0, 1)."""
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"Invalid betas: {betas!r} (must be a pair (beta1, beta2) in [0, 1))")
    for i, beta in enumerate(betas, start=1):
        if not (isinstance(beta, (int, float)) and 0.0 <= beta < 1.0):
            raise ValueError(f"Invalid beta{i}: {beta!r} (must be in [0, 1))")


def check_weight_decay(weight_decay) -> None:
    """λ ≥ 0 (the box ‖x‖∞ ≤ 1/λ of THEORY §3)."""
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0.0):
        raise ValueError(f"Invalid weight_decay: {weight_decay!r} (must be a number >= 0)")


def check_nu(nu) -> None:
    """CLion's threshold ν > 0."""
    if not (isinstance(nu, (int, float)) and nu > 0.0):
        raise ValueError(f"Invalid nu: {nu!r} (must be a number > 0)")


def check_gate(gate) -> None:
    """CLion's gate is one of GATES."""
    if gate not in GATES:
        allowed = ", ".join(repr(g) for g in GATES)
        raise ValueError(f"Invalid gate: {gate!r} (must be one of {allowed})")


def check_foreach(foreach) -> None:
    """foreach ∈ {None, True, False}."""
    if foreach not in (None, True, False):
        raise ValueError(f"Invalid foreach: {foreach!r} (must be None, True or False)")
