"""Estimates of the constants Δ, L, σ (THEORY §1, §6) for problems without closed forms.

All three are measured at the initial point x_0 and are local: L is the curvature there (a lower
bound on the global ℓ2 smoothness constant), σ the noise there. They use a private generator
derived from the run seed, so estimating never consumes the training generator and is the same
on every build with that seed.
"""

from __future__ import annotations

import math

import torch

from .base import make_generator, randn


def _sq_norm(tensors) -> torch.Tensor:
    """Σ‖t‖₂² accumulated in float64 (THEORY §5: float32 sums drift on large d)."""
    return sum(t.double().pow(2).sum() for t in tensors)


def hessian_spectral_norm(loss: torch.Tensor, params, *, iters: int,
                          generator: torch.Generator) -> float:
    """Power iteration on H = ∇²loss(params):  v ← Hv/‖Hv‖₂, starting from a Gaussian v.

    Hessian-vector products by double backward (Hv = ∇⟨∇loss, v⟩). Returns ‖H v‖₂ for the last
    unit vector v: a lower bound on ‖H‖₂ = max_i |λ_i| that converges to it (the power method
    finds the eigenvalue of largest magnitude, whatever its sign).
    """
    params = list(params)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    v = [randn(p.shape, generator, dtype=p.dtype, device=p.device) for p in params]
    norm = _sq_norm(v).sqrt()
    v = [t / norm.to(t.dtype) for t in v]
    for _ in range(iters):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        norm = _sq_norm(hv).sqrt()
        # a zero Hessian (e.g. a piecewise-linear region) gives Hv = 0: keep v, report 0
        v = [h / norm.clamp_min(1e-300).to(h.dtype) for h in hv]
    return float(norm)


def estimate_network_constants(problem) -> dict:
    """Δ, L, σ of a NetworkProblem at its current parameters (the caller puts them at x_0).

    Delta = f(x_0) − 0; sigma = √(mean_b ‖g_b − ∇f(x_0)‖₂²) over `variance_batches` minibatches
    drawn exactly like training minibatches; L = hessian_spectral_norm on one fixed batch of
    min(hessian_batch_size, N) distinct examples with `power_iters` iterations.
    """
    generator = make_generator(problem.seed, "estimate_constants")
    loss, full = problem.full_gradient()
    variance = torch.zeros((), dtype=torch.float64, device=loss.device)
    for _ in range(problem.variance_batches):
        _, g = problem.minibatch_gradient(generator)
        variance += _sq_norm(torch._foreach_sub(g, full))
    variance /= problem.variance_batches
    n_hessian = min(problem.hessian_batch_size, problem.n_train)
    batch = torch.randperm(problem.n_train, generator=generator)[:n_hessian]
    L = hessian_spectral_norm(problem.batch_loss(batch), problem.params,
                              iters=problem.power_iters, generator=generator)
    delta, variance = torch.stack([loss.double(), variance]).tolist()
    return {"Delta": delta, "L": L, "sigma": math.sqrt(variance), "f_low": 0.0,
            "kind": "estimated"}
