"""Turn an optimizer config and a schedule config into the optimizer's hyperparameters.

`constant`: the optimizer config as written. `horizon` (THEORY §4): β1 = 1 − c1/√K,
β2 = 1 − c2/√K, η = c3/(√d·K^{3/4}) from the run's own d and K, constant within the run; with
c2/c3 null, the optimal constants c2 = √(2ΔLD)/σ, c3 = √(Δc2/(2LD)) from the problem's constants.

The lr schedule (`lr_schedule` group) then multiplies that base learning rate step by step, for
every optimizer: `lr_multiplier`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from lionconv import theory

LION_FAMILY = ("lion", "clion", "signsgd")
SGD_FAMILY = ("sgd", "sgd_momentum")  # torch.optim.SGD: no β, horizon lr = sgd_c/√K
SCHEDULES = ("constant", "horizon")
LR_SCHEDULES = ("constant", "cosine")


def optimizer_hparams(optimizer: Mapping[str, Any], schedule: Mapping[str, Any], *, K: int, d: int,
                      constants: Mapping[str, Any] | None = None, lr_scale: float = 1.0) -> dict[str, Any]:
    """Keyword arguments for `build_optimizer(optimizer["name"], params, **kwargs)`; the learning
    rate the schedule gives is multiplied by `lr_scale`."""
    name = optimizer["name"]
    kwargs = {k: v for k, v in optimizer.items() if k != "name"}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(float(b) for b in kwargs["betas"])
    kind = schedule["name"]
    if kind not in SCHEDULES:
        raise ValueError(f"Unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    if kind == "horizon":
        if name not in LION_FAMILY + SGD_FAMILY:
            raise ValueError(f"schedule=horizon is not defined for optimizer={name!r}: it sets the "
                             f"hyperparameters of {', '.join(LION_FAMILY + SGD_FAMILY)}; use "
                             "schedule=constant")
        if name in SGD_FAMILY:
            kwargs["lr"] = schedule["sgd_c"] / math.sqrt(K)
        else:
            c2, c3 = schedule["c2"], schedule["c3"]
            if c2 is None or c3 is None:
                c2, c3 = _optimal_constants(constants, optimizer.get("weight_decay", 0.0), c2, c3)
            beta1, beta2, lr = theory.horizon_schedule(K, d, schedule["c1"], c2, c3)
            if schedule.get("beta1") is not None:
                beta1 = schedule["beta1"]
            kwargs["lr"] = lr
            if name != "signsgd":
                kwargs["betas"] = (beta1, beta2)
    if not lr_scale > 0:
        raise ValueError(f"Invalid lr_scale: {lr_scale} (must be > 0)")
    lr = kwargs["lr"] = kwargs.get("lr", math.nan) * lr_scale
    if lr is None or not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"Invalid lr: {lr} (must be a finite number > 0)")
    return kwargs


def _optimal_constants(constants, weight_decay, c2, c3):
    missing = [k for k in ("Delta", "L", "sigma") if not constants or constants.get(k) is None]
    if missing:
        raise ValueError(f"schedule=horizon with c2/c3 null needs the problem's {missing}; "
                         "this problem does not know them: set schedule.c2 and schedule.c3")
    opt_c2, opt_c3 = theory.optimal_constants(constants["Delta"], constants["L"], constants["sigma"],
                                              weight_decay)
    return (opt_c2 if c2 is None else c2), (opt_c3 if c3 is None else c3)


def logged_hparams(name: str, kwargs: Mapping[str, Any]) -> dict[str, float]:
    """lr, beta1, beta2 (NaN where the optimizer has none), and CLion's ν as used (given or
    calibrated), as they go to the metrics table and the summary."""
    betas = kwargs.get("betas", (math.nan, math.nan))
    if name == "signsgd":
        betas = (0.0, 0.0)
    elif name in SGD_FAMILY:
        betas = (kwargs.get("momentum", 0.0), math.nan)
    logged = {"lr": float(kwargs["lr"]), "beta1": float(betas[0]), "beta2": float(betas[1]),
              "weight_decay": float(kwargs.get("weight_decay", 0.0))}
    if name == "clion":
        logged["nu"] = float(kwargs["nu"])
    return logged


def check_lr_schedule(lr_schedule: Mapping[str, Any], K: int) -> None:
    """One ValueError naming the bad `lr_schedule` setting and what is allowed."""
    kind = lr_schedule["name"]
    if kind not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule={kind!r} is not allowed: expected one of "
                         f"{', '.join(LR_SCHEDULES)}")
    warmup = lr_schedule.get("warmup_steps", 0)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup < K:
        raise ValueError(f"lr_schedule.warmup_steps={warmup!r} is not allowed: expected an "
                         f"integer in [0, steps) = [0, {K})")
    final = lr_schedule.get("final_fraction", 0.0)
    if not 0.0 <= final <= 1.0:
        raise ValueError(f"lr_schedule.final_fraction={final!r} is not allowed: expected a "
                         "number in [0, 1]")


def lr_multiplier(k: int, K: int, lr_schedule: Mapping[str, Any]) -> float:
    """η_k / η at step k of K (THEORY §4's schedules set η; this shapes it over the run):
        warmup (k < W):  (k + 1)/W
        then constant:   1
             cosine:     f + (1 − f)·½·(1 + cos(π·(k − W)/(K − W)))   (1 at k = W, → f at K)
    W = warmup_steps, f = final_fraction."""
    warmup = int(lr_schedule.get("warmup_steps", 0))
    if k < warmup:
        return (k + 1) / warmup
    if lr_schedule["name"] == "constant":
        return 1.0
    final = float(lr_schedule.get("final_fraction", 0.0))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * (k - warmup) / (K - warmup)))
