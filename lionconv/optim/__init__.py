"""Sign-type optimizers of THEORY §2 and the registry the trainer builds them from.

    c = β1·m + (1−β1)·g ;  x ← x − η·(h(c) + λ·x) ;  m ← β2·m + (1−β2)·g

Lion: h = sign. CLion: h = sign when min_{c_j≠0}|c_j| ≥ ν, else the identity. SignSGD: c = g,
no momentum. Baselines from torch.optim: ``sgd`` and ``sgd_momentum`` are torch.optim.SGD
(momentum from the config: 0 and 0.9 by default; weight_decay is an L2 term added to the
gradient), ``adamw`` is torch.optim.AdamW, whose decoupled decay x ← x − lr·λ·x matches the
convention above (η·λ·x) but whose update is not a sign, so it keeps no box.
"""

from __future__ import annotations

import torch

from lionconv.optim.clion import CLion
from lionconv.optim.lion import Lion
from lionconv.optim.signsgd import SignSGD

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "lion": Lion,
    "clion": CLion,
    "signsgd": SignSGD,
    "sgd": torch.optim.SGD,
    "sgd_momentum": torch.optim.SGD,
    "adamw": torch.optim.AdamW,
}


def skip_dynamo_import() -> None:
    """For a process that never compiles (the suite's own commands): torch.optim.Optimizer's
    add_param_group, state_dict, load_state_dict and zero_grad are wrapped by
    torch._disable_dynamo, whose first call imports torch._dynamo (≈2.3 s on this machine, most
    of a run's start) only to exempt them from compilation. Before that import, each wrapper's
    cache is pointed at the plain method: the same calls, without the import. Once torch._dynamo
    is loaded (or on a torch without these wrappers) it does nothing."""
    import sys

    if "torch._dynamo" in sys.modules:
        return
    for name in ("add_param_group", "state_dict", "load_state_dict", "zero_grad"):
        method = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if method is not None and getattr(method, "__dynamo_disable", None) is None:
            setattr(method, "__dynamo_disable", method)


def unhooked_step(optimizer: torch.optim.Optimizer):
    """`optimizer.step` without torch.optim's per-call wrapper, when that wrapper would do
    nothing but cost time: no step hooks registered (on the optimizer or globally) and no
    profiler running now. The wrapper opens a profiler `record_function` every call (~30 µs, 5%
    of a small network's step here); a training loop that calls step K times takes this once.
    Otherwise (hooks, a profiler) the wrapped `optimizer.step` itself."""
    from torch.optim import optimizer as torch_optimizer

    step = type(optimizer).step
    # (`hooked`: torch.optim's profile wrapper is what `__wrapped__` unwraps; its inner function
    # is the optimizer's own step with its no_grad)
    plain = getattr(step, "__wrapped__", None) if getattr(step, "hooked", False) else None
    profiling = getattr(torch.autograd, "_profiler_enabled", None)
    hooks = (getattr(torch_optimizer, "_global_optimizer_pre_hooks", None),
             getattr(torch_optimizer, "_global_optimizer_post_hooks", None),
             getattr(optimizer, "_optimizer_step_pre_hooks", None),
             getattr(optimizer, "_optimizer_step_post_hooks", None))
    patched = "step" in vars(optimizer)  # an instance-level wrapper (e.g. an LR scheduler's)
    if (plain is None or patched or any(h is None or len(h) for h in hooks)
            or profiling is None or profiling()):
        return optimizer.step
    return plain.__get__(optimizer)


def build_optimizer(name: str, params, **hparams) -> torch.optim.Optimizer:
    """``OPTIMIZERS[name](params, **hparams)``; an unknown name raises ValueError listing the names."""
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer: {name!r} (must be one of {', '.join(sorted(OPTIMIZERS))})")
    return OPTIMIZERS[name](params, **hparams)


__all__ = ["CLion", "Lion", "OPTIMIZERS", "SignSGD", "build_optimizer", "skip_dynamo_import",
           "unhooked_step"]
