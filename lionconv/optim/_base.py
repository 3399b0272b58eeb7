"""What Lion, CLion and SignSGD share: gathering tensors, the direction buffer, closures.

A step gathers, per param group, the params that have a grad into buckets of one device and
dtype (so ``torch._foreach_*`` sees homogeneous lists), then the subclass runs the pieces of
``_functional`` on each bucket. The direction c (then h(c)) of every tensor is a view into one
flat buffer per (device, dtype) that the optimizer keeps between steps: it is scratch, never
part of ``state_dict``. Keeping it costs one parameter-sized buffer, the same peak memory as
the temporary every Lion implementation needs, without re-faulting it in each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch._utils import _unflatten_dense_tensors
from torch.optim import Optimizer

from lionconv.optim._functional import MultiTensor, SingleTensor

_FOREACH_TYPES = (Tensor, torch.nn.Parameter)


@dataclass
class Bucket:
    """The tensors of one param group on one (device, dtype) that take part in this step."""

    group: dict
    params: list[Tensor]
    grads: list[Tensor]
    exp_avgs: list[Tensor]  # empty for optimizers without momentum
    directions: list[Tensor]  # views into the optimizer's flat direction buffer
    path: type  # SingleTensor or MultiTensor


class SignOptimizer(Optimizer):
    """Base of the sign-type optimizers; subclasses define ``_check_group`` and ``step``."""

    uses_momentum = True

    def __init__(self, params, defaults: dict, *, record_tau: bool):
        self.record_tau = bool(record_tau)
        self.last_tau: Tensor | None = None
        self._direction_buffers: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        self._direction_views: dict[tuple, list[Tensor]] = {}
        super().__init__(params, defaults)

    # -- hyperparameters -------------------------------------------------------------------
    def _check_group(self, group: dict) -> None:
        raise NotImplementedError

    def _check_against_groups(self, group: dict) -> None:
        """Constraints across param groups (CLion's global gate); none by default."""

    def add_param_group(self, param_group: dict) -> None:
        """Validate the group (with defaults filled in) and its params before adding it."""
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        param_group = {**param_group, "params": params}
        for p in params:
            if isinstance(p, Tensor) and p.is_complex():
                raise ValueError(f"{type(self).__name__} does not support complex parameters (got one "
                                 f"of dtype {p.dtype}): sign() of a complex number is not the "
                                 "coordinate-wise sign of THEORY §2; optimize torch.view_as_real(p)")
        merged = {**self.defaults, **param_group}
        self._check_group(merged)
        self._check_against_groups(merged)
        super().add_param_group(param_group)

    @staticmethod
    def _lr(group: dict) -> float:
        """The group's η as a Python float: a one-element tensor lr is read once per group and
        step, on the host, and a NumPy float32 is widened (η·λ in float32 would round), so the
        update is the one a float lr of the same value gives."""
        lr = group["lr"]
        return lr if type(lr) is float else float(lr)

    # -- pickling / deepcopy: Optimizer.__getstate__ keeps only defaults, state, groups ------
    def __getstate__(self):
        return {**super().__getstate__(), "record_tau": self.record_tau}

    def __setstate__(self, state):
        """Also used by load_state_dict: a group saved without a key added later (foreach; or a
        lion-pytorch state_dict, which has the same exp_avg) gets the default, as torch's
        optimizers do."""
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                if key != "differentiable":  # torch's own bookkeeping default, not a group key
                    group.setdefault(key, value)
        self.__dict__.setdefault("record_tau", False)
        self.__dict__.setdefault("last_tau", None)
        self._direction_buffers, self._direction_views = {}, {}

    # -- step helpers ------------------------------------------------------------------------
    @staticmethod
    def _evaluate(closure):
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def _stat_device(self, buckets: list[Bucket]) -> torch.device:
        """Where the per-step statistics live: the first updated param's device."""
        if buckets:
            return buckets[0].params[0].device
        for group in self.param_groups:
            for p in group["params"]:
                return p.device
        return torch.device("cpu")

    def _gather(self) -> tuple[list[Bucket], list[Tensor]]:
        """Buckets of this step, and the part of each flat direction buffer in use.

        Params whose grad is None are skipped (their state untouched). Zero-size params get
        their state (so state_dict lists them) but take no part in the arithmetic. The
        directions of all buckets of one (device, dtype) tile a prefix of one flat buffer, so
        elementwise work on every direction (sign, the gate, τ) is one op on that prefix.
        """
        per_group, totals = [], {}
        for group in self.param_groups:
            lists: dict[tuple, tuple[list, list, list]] = {}
            plain = True
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise ValueError(f"{type(self).__name__} does not support sparse gradients")
                if self.uses_momentum:  # (no state entry at all for optimizers without state)
                    state = self.state[p]
                    if "exp_avg" not in state:
                        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                numel = p.numel()
                if numel == 0:
                    continue
                plain = plain and type(p) in _FOREACH_TYPES and type(grad) in _FOREACH_TYPES
                key = (p.device, p.dtype)
                entry = lists.get(key)
                if entry is None:
                    entry = lists[key] = ([], [], [])
                entry[0].append(p)
                entry[1].append(grad)
                if self.uses_momentum:
                    entry[2].append(state["exp_avg"])
                totals[key] = totals.get(key, 0) + numel
            foreach = group["foreach"]
            if foreach is None:  # like torch's default: foreach unless device types mix or subclasses
                foreach = plain and len({device.type for device, _ in lists}) <= 1
            per_group.append((group, lists, MultiTensor if foreach else SingleTensor))

        flats, offsets = [], {}
        for key, total in totals.items():
            buffer = self._direction_buffers.get(key)
            if buffer is None or buffer.numel() < total:
                buffer = self._direction_buffers[key] = torch.empty(total, device=key[0], dtype=key[1])
                self._direction_views.clear()  # cached views point into the old buffer
            flats.append(buffer[:total])
            offsets[key] = 0

        buckets = []
        for group, lists, path in per_group:
            for key, (ps, gs, ms) in lists.items():
                start = offsets[key]
                offsets[key] = start + sum(p.numel() for p in ps)
                directions = self._views(key, start, ps)
                buckets.append(Bucket(group, ps, gs, ms, directions, path))
        return buckets, flats

    def _views(self, key: tuple, start: int, params: list[Tensor]) -> list[Tensor]:
        """Views of the direction buffer `key` from `start`, shaped like `params`. They depend
        only on the shapes, so they are cached by them: making 200 views each step costs more
        than the arithmetic of a small step."""
        shapes = tuple(p.shape for p in params)
        views = self._direction_views.get((key, start, shapes))
        if views is None:
            if len(self._direction_views) >= 64:  # many grad patterns: do not grow without bound
                self._direction_views.clear()
            segment = self._direction_buffers[key][start : start + sum(p.numel() for p in params)]
            views = self._direction_views[(key, start, shapes)] = list(_unflatten_dense_tensors(segment, params))
        return views
