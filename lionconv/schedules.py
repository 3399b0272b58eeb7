"""Turn an optimizer config and a schedule config into the optimizer's hyperparameters.

`constant`: the optimizer config as written. `horizon` (THEORY §4): β1 = 1 − c1/√K,
β2 = 1 − c2/√K, η = c3/(√d·K^{3/4}) from the run's own d and K, constant within the run; with
c2/c3 null, the optimal constants c2 = √(2ΔLD)/σ, c3 = √(Δc2/(2LD)) from the problem's constants.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from lionconv import theory

LION_FAMILY = ("lion", "clion", "signsgd")
SCHEDULES = ("constant", "horizon")


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
        if name == "sgd":
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
    elif name == "sgd":
        betas = (kwargs.get("momentum", 0.0), math.nan)
    logged = {"lr": float(kwargs["lr"]), "beta1": float(betas[0]), "beta2": float(betas[1]),
              "weight_decay": float(kwargs.get("weight_decay", 0.0))}
    if name == "clion":
        logged["nu"] = float(kwargs["nu"])
    return logged
