"""The pieces a sign-type step is made of, each written twice.

One step of Lion / CLion / SignSGD on lists of tensors (THEORY §2):

    c = β1·m + (1−β1)·g          interpolate   (uses the OLD m)
    h = sign(c), or CLion's h    by the optimizer, in place on c (sign(0) = 0)
    x ← x − η·(h + λ·x)          descend       (decay on the OLD x, scaled by η)
    m ← β2·m + (1−β2)·g          track         (AFTER the step)

``SingleTensor`` is a plain loop over tensors (the ground truth); ``MultiTensor`` does the same
with ``torch._foreach_*`` calls on lists that share one device and dtype. Both write c into
caller-owned buffers (views into one flat buffer, see ``_base``), so a step allocates nothing
of parameter size: on CPU a fresh 40 MB tensor costs more in page faults than the whole update.
Interpolation is ``lerp(m, g, 1−β1)`` = m + (1−β1)(g − m), which equals β1·m + (1−β1)·g up to
rounding and is exact at β = 0. On CPU the foreach ops run the same per-tensor kernels, so the
two paths agree bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class SingleTensor:
    """Each piece as a Python loop over tensors."""

    @staticmethod
    def interpolate(exp_avgs: list[Tensor], grads: list[Tensor], out: list[Tensor], beta1: float) -> None:
        """out = β1·m + (1−β1)·g."""
        for m, g, c in zip(exp_avgs, grads, out):
            torch.lerp(m, g, 1.0 - beta1, out=c)

    @staticmethod
    def sign_of(tensors: list[Tensor], out: list[Tensor]) -> None:
        """out = sign(t)."""
        for t, c in zip(tensors, out):
            torch.sign(t, out=c)

    @staticmethod
    def descend(params: list[Tensor], directions: list[Tensor], lr: float, weight_decay: float) -> None:
        """x ← x − η·(h + λ·x), as x ← x − ηλ·x then x ← x − η·h."""
        for x, h in zip(params, directions):
            if weight_decay != 0.0:
                x.add_(x, alpha=-lr * weight_decay)
            x.add_(h, alpha=-lr)

    @staticmethod
    def track(exp_avgs: list[Tensor], grads: list[Tensor], beta2: float) -> None:
        """m ← β2·m + (1−β2)·g."""
        for m, g in zip(exp_avgs, grads):
            m.lerp_(g, 1.0 - beta2)


class MultiTensor:
    """Each piece as ``torch._foreach_*`` calls (lists share one device and dtype)."""

    @staticmethod
    def interpolate(exp_avgs: list[Tensor], grads: list[Tensor], out: list[Tensor], beta1: float) -> None:
        """out = β1·m + (1−β1)·g."""
        if exp_avgs and exp_avgs[0].device.type == "cpu":
            # CPU foreach ops are a C++ loop over the same per-tensor kernels anyway, and
            # lerp(out=) writes c in one pass where copy + lerp_ take two
            SingleTensor.interpolate(exp_avgs, grads, out, beta1)
            return
        torch._foreach_copy_(out, exp_avgs)
        torch._foreach_lerp_(out, grads, 1.0 - beta1)

    @staticmethod
    def sign_of(tensors: list[Tensor], out: list[Tensor]) -> None:
        """out = sign(t)."""
        if tensors and tensors[0].device.type == "cpu":  # one pass instead of two, as above
            SingleTensor.sign_of(tensors, out)
            return
        torch._foreach_copy_(out, tensors)
        torch._foreach_sign_(out)

    @staticmethod
    def descend(params: list[Tensor], directions: list[Tensor], lr: float, weight_decay: float) -> None:
        """x ← x − η·(h + λ·x), as x ← x − ηλ·x then x ← x − η·h."""
        if weight_decay != 0.0:  # not _foreach_mul_(1 − ηλ): it rounds the scalar to bf16 first
            torch._foreach_add_(params, params, alpha=-lr * weight_decay)
        torch._foreach_add_(params, directions, alpha=-lr)

    @staticmethod
    def track(exp_avgs: list[Tensor], grads: list[Tensor], beta2: float) -> None:
        """m ← β2·m + (1−β2)·g."""
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta2)


def min_nonzero_abs(c: Tensor) -> Tensor:
    """min_{j: c_j ≠ 0} |c_j| (0-dim, +inf when c = 0); no host sync."""
    magnitude = c.abs()
    if c.is_cpu and c.numel():  # zeros are rare: the masked pass only when the min is one (on
        smallest = magnitude.amin()  # the CPU a look costs no sync; 2 of 4 ops a step saved)
        if smallest != 0:
            return smallest
    magnitude.masked_fill_(magnitude == 0, math.inf)
    return magnitude.amin()


def global_min(values: list[Tensor], device: torch.device) -> Tensor:
    """min of 0-dim tensors (possibly on several devices / dtypes) as one 0-dim tensor on `device`.

    +inf when `values` is empty (the min over an empty set). The dtype is the widest one seen,
    so a float64 τ of 1e-40 does not underflow.
    """
    if not values:
        return torch.tensor(math.inf, device=device)
    dtype = values[0].dtype
    for v in values[1:]:
        dtype = torch.promote_types(dtype, v.dtype)
    return torch.stack([v.to(device=device, dtype=dtype) for v in values]).amin()
