"""SignSGD with decoupled weight decay (Lion with β1 = β2 = 0, THEORY §2):

    x ← x − η·(sign(g) + λ·x)    # sign(0) = 0
"""

from __future__ import annotations

import torch

from lionconv.optim._base import SignOptimizer
from lionconv.optim._functional import global_min, min_nonzero_abs
from lionconv.optim._validate import check_foreach, check_lr, check_weight_decay


class SignSGD(SignOptimizer):
    """SignSGD: no state. With ``record_tau=True`` each step sets ``last_tau`` = min over j with
    g_j ≠ 0 of |g_j| (here c = g), a 0-dim tensor, +inf if g = 0; never synced."""

    uses_momentum = False

    def __init__(self, params, lr=1e-4, weight_decay=0.0, *, foreach=None, record_tau=False):
        defaults = dict(lr=lr, weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults, record_tau=record_tau)

    def _check_group(self, group: dict) -> None:
        check_lr(group["lr"])
        check_weight_decay(group["weight_decay"])
        check_foreach(group["foreach"])

    @torch.no_grad()
    def step(self, closure=None):
        """One SignSGD step on every param with a grad; returns closure's loss (or None)."""
        loss = self._evaluate(closure)
        buckets, _ = self._gather()
        if self.record_tau:
            taus = [min_nonzero_abs(g) for b in buckets for g in b.grads]
            self.last_tau = global_min(taus, self._stat_device(buckets))
        for b in buckets:
            b.path.sign_of(b.grads, b.directions)
            b.path.descend(b.params, b.directions, self._lr(b.group), b.group["weight_decay"])
        return loss
