"""Lion (Chen et al., arXiv 2302.06675) exactly as THEORY §2; m starts at 0:

    c = β1·m + (1−β1)·g          # the OLD momentum
    x ← x − η·(sign(c) + λ·x)    # decoupled decay on the OLD x, scaled by η; sign(0) = 0
    m ← β2·m + (1−β2)·g          # momentum updated AFTER the step
"""

from __future__ import annotations

import torch

from lionconv.optim._base import SignOptimizer
from lionconv.optim._functional import global_min, min_nonzero_abs
from lionconv.optim._validate import check_betas, check_foreach, check_lr, check_weight_decay


class Lion(SignOptimizer):
    """Lion with decoupled weight decay λ (it solves min f s.t. ‖x‖∞ ≤ 1/λ, THEORY §3).

    State per param: ``"exp_avg"`` (m); besides it the optimizer keeps one parameter-sized
    scratch buffer for c (not in ``state_dict``). ``foreach=None`` uses ``torch._foreach_*``
    unless the params span device types or are tensor subclasses. With ``record_tau=True`` each
    step sets ``last_tau``, a 0-dim tensor: min over all coordinates with c_j ≠ 0 of |c_j|
    (THEORY §7 τ; +inf if every c_j = 0), never synced to the host.
    """

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, foreach=None, record_tau=False):
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults, record_tau=record_tau)

    def _check_group(self, group: dict) -> None:
        check_lr(group["lr"])
        check_betas(group["betas"])
        check_weight_decay(group["weight_decay"])
        check_foreach(group["foreach"])

    @torch.no_grad()
    def step(self, closure=None):
        """One Lion step on every param with a grad; returns closure's loss (or None)."""
        loss = self._evaluate(closure)
        buckets, flats = self._gather()
        for b in buckets:
            b.path.interpolate(b.exp_avgs, b.grads, b.directions, b.group["betas"][0])
        if self.record_tau:
            self.last_tau = global_min([min_nonzero_abs(f) for f in flats], self._stat_device(buckets))
        for flat in flats:  # every direction is a view into one of these: one op signs them all
            flat.sign_()
        for b in buckets:
            b.path.descend(b.params, b.directions, self._lr(b.group), b.group["weight_decay"])
            b.path.track(b.exp_avgs, b.grads, b.group["betas"][1])
        return loss
