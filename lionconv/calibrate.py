"""CLion's threshold ν calibrated to the run (THEORY §7, "the gate must be active").

`optimizer.nu_quantile = q` sets ν to the q-quantile of the non-zero |c_j| measured on a pilot:

    c_k = β1·m_k + (1−β1)·g_k   (Lion's direction before the sign, THEORY §2)

pooled over all coordinates j and the pilot's steps k = 0..n−1, n = ⌈1/(1−β2)⌉ (capped at the
run's K): the horizon of the momentum average. At step 0, m = 0 makes c = (1−β1)·g a tenth of its
later size, so step 0 alone is too early; after ~1/(1−β2) steps m has filled in. The pilot is
plain Lion with the run's η, β, λ, from the same start (a copy of the problem at x_0) and the same
minibatches (a copy of the run's generator), so the run itself starts exactly as without a pilot.
A CLion coordinate gate at this ν then takes the sign branch on about a fraction 1 − q of the
non-zero c_j over the run (c_j = 0 counts as the sign branch; the update is 0 either way).
An exact zero is left out of the pool because τ (THEORY §7) is the smallest NON-zero |c_j|.

Pooling keeps at most POOL_LIMIT values (evenly spaced coordinates of each step when d·n is
larger), the size torch.quantile accepts, so the pilot's memory does not grow with d·n.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch

from lionconv.optim import Lion

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


def pooled_abs_c(problem, generator: torch.Generator, *, lr: float, betas, weight_decay: float,
                 steps: int) -> torch.Tensor:
    """The non-zero |c_j| of a Lion pilot's first `steps` steps on a copy of `problem`, drawing
    minibatches from a copy of `generator`; neither argument is changed."""
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
    pooled = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        pilot.stochastic_loss(stream)
        with torch.no_grad():
            parts = []
            for p in pilot.params:
                if p.grad is None:
                    continue
                m = optimizer.state[p].get("exp_avg")
                c = p.grad * (1 - beta1) if m is None else torch.lerp(p.grad, m, beta1)
                parts.append(c.reshape(-1))
            magnitude = torch.cat(parts).abs()[::stride]
            pooled.append(magnitude[magnitude != 0])
        optimizer.step()
    return torch.cat(pooled)


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
    n = pilot_steps(betas[1], K)
    pool = pooled_abs_c(problem, generator, lr=hparams["lr"], betas=betas,
                        weight_decay=hparams.get("weight_decay", 0.0), steps=n)
    if pool.numel() == 0:
        raise ValueError(f"optimizer.nu_quantile={q}: every c_j of the {n}-step pilot is 0, so "
                         f"|c| has no quantile; set optimizer.nu instead")
    value = float(torch.quantile(pool.to(torch.float64), q))
    hparams["nu"] = value
    return {"nu": value, "nu_quantile": q, "pilot_steps": n, "pooled": int(pool.numel())}
