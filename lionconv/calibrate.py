"""CLion's threshold ν calibrated to the run (THEORY §7, "the gate must be active").

`optimizer.nu_quantile = q` sets ν so that about a fraction 1 − q of the coordinates takes the
sign branch, judged on a pilot: plain Lion with the run's η, β, λ from the same start (a copy of
the problem at x_0) and the same minibatches (a copy of the run's generator), so the run itself
starts exactly as without a pilot. Each pilot step k computes Lion's direction before the sign,

    c_k = β1·m_k + (1−β1)·g_k   (THEORY §2)

for k = 0..n−1, n = ⌈1/(1−β2)⌉ (capped at the run's K): the horizon of the momentum average. At
step 0, m = 0 makes c = (1−β1)·g a tenth of its later size, so step 0 alone is too early; after
~1/(1−β2) steps m has filled in. What is pooled is the number each gate compares with ν, weighted
by the coordinates that decision covers:

    coordinate: |c_j| per coordinate (weight 1)
    tensor:     min over the tensor of the non-zero |c_j| (weight: its numel)
    global:     τ_k = min over the model of the non-zero |c_j| (weight d)

(a unit with c = 0 counts +inf: clion.py takes the sign branch there, the update is 0 either way).
ν is the weighted q-quantile of that pool: the smallest pooled value v with weight(≤ v) ≥ q·total,
so on the pilot the sign branch (value ≥ ν) covers 1 − q of the weight up to one entry. For the
coordinate gate this is the q-quantile of |c_j| over the model and the pilot's steps.

Pooling keeps at most POOL_LIMIT per-coordinate values (evenly spaced coordinates of each step
when d·n is larger), so the pilot's memory does not grow with d·n.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch

from lionconv.optim import Lion
from lionconv.optim._validate import check_gate

DEFAULT_NU = 1e-6  # ν when neither nu nor nu_quantile is set (the optimizer config's old default)
POOL_LIMIT = 1 << 24


def pilot_steps(beta2: float, K: int) -> int:
    """n = ⌈1/(1−β2)⌉, at least 1 and at most K (1e-9 absorbs 1/(1−0.99) = 100.000…01)."""
    return max(1, min(int(K), math.ceil(1.0 / (1.0 - beta2) - 1e-9)))


def check_nu_quantile(q) -> float:
    """q ∈ (0, 1)."""
    if isinstance(q, bool) or not (isinstance(q, (int, float)) and 0.0 < q < 1.0):
        raise ValueError(f"Invalid nu_quantile: {q!r} (must be a number in (0, 1))")
    return float(q)


def pilot_pool(problem, generator: torch.Generator, *, gate: str, lr: float, betas,
               weight_decay: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, weights): what `gate` compares with ν at each of a Lion pilot's first `steps`
    steps (module docstring), on a copy of `problem` with a copy of `generator`; neither
    argument is changed."""
    # Share the read-only data tensors (train/test sets) instead of copying them.
    memo = {id(v): v for v in vars(problem).values()
            if isinstance(v, torch.Tensor) and not v.requires_grad}
    pilot = copy.deepcopy(problem, memo)
    stream = torch.Generator(device=generator.device)
    stream.set_state(generator.get_state())
    beta1 = float(betas[0])
    optimizer = Lion(pilot.params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    d = sum(p.numel() for p in pilot.params)
    stride = max(1, math.ceil(d * steps / POOL_LIMIT))
    values, weights = [], []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        pilot.stochastic_loss(stream)
        with torch.no_grad():
            magnitudes = []
            for p in pilot.params:
                if p.grad is None or p.numel() == 0:
                    continue
                m = optimizer.state[p].get("exp_avg")
                c = p.grad * (1 - beta1) if m is None else torch.lerp(p.grad, m, beta1)
                magnitude = c.reshape(-1).abs().to(torch.float64)
                magnitudes.append(magnitude.masked_fill_(magnitude == 0, math.inf))
            if gate == "coordinate":
                values.append(torch.cat(magnitudes)[::stride])
            else:
                mins = torch.stack([magnitude.amin() for magnitude in magnitudes])
                sizes = torch.tensor([float(magnitude.numel()) for magnitude in magnitudes],
                                     dtype=torch.float64, device=mins.device)
                if gate == "global":
                    mins, sizes = mins.amin().reshape(1), sizes.sum().reshape(1)
                values.append(mins)
                weights.append(sizes)
        optimizer.step()
    values = torch.cat(values)
    return values, (torch.ones_like(values) if gate == "coordinate" else torch.cat(weights))


def weighted_quantile(values: torch.Tensor, weights: torch.Tensor, q: float) -> float:
    """The smallest v among `values` with Σ weights[values ≤ v] ≥ q·Σ weights (inverted CDF)."""
    order = torch.argsort(values)
    cumulative = torch.cumsum(weights[order].to(torch.float64), 0)
    index = torch.searchsorted(cumulative, q * cumulative[-1])
    return float(values[order][index.clamp(max=values.numel() - 1)])


def resolve_nu(hparams: dict[str, Any], problem, generator: torch.Generator, K: int) -> dict | None:
    """Turn CLion's (nu, nu_quantile) in `hparams` into ν, in place; returns the calibration
    record {nu, nu_quantile, pilot_steps, pooled} when ν was calibrated, else None.

    nu set: used as given. nu_quantile set: the pilot's quantile. Neither: DEFAULT_NU. Both: error.
    """
    nu, q = hparams.get("nu"), hparams.pop("nu_quantile", None)
    if nu is not None and q is not None:
        raise ValueError(f"optimizer.nu={nu} and optimizer.nu_quantile={q} are both set: "
                         f"give ν directly or calibrate it, not both (set one of them to null)")
    if q is None:
        hparams["nu"] = DEFAULT_NU if nu is None else nu
        return None
    q = check_nu_quantile(q)
    betas = hparams.get("betas", (0.9, 0.99))
    gate = hparams.get("gate", "global")
    check_gate(gate)
    n = pilot_steps(betas[1], K)
    values, weights = pilot_pool(problem, generator, gate=gate, lr=hparams["lr"], betas=betas,
                                 weight_decay=hparams.get("weight_decay", 0.0), steps=n)
    value = weighted_quantile(values, weights, q)
    if not math.isfinite(value):
        raise ValueError(f"optimizer.nu_quantile={q}: the {n}-step pilot gives no finite ν (too "
                         f"many c = 0 for gate {gate!r}); set optimizer.nu instead")
    hparams["nu"] = value
    return {"nu": value, "nu_quantile": q, "gate": gate, "pilot_steps": n,
            "pooled": int(values.numel())}
