"""CLion (Huang, Zhang, Chen, arXiv 2604.14587) as THEORY §2: Lion with sign replaced by h,

    c = β1·m + (1−β1)·g
    h(c) = sign(c)  if  min_{j: c_j ≠ 0} |c_j| ≥ ν,  otherwise  h(c) = c
    x ← x − η·(h(c) + λ·x)
    m ← β2·m + (1−β2)·g

The min is taken over the gate's unit: "global" (the paper's algorithm) takes ONE decision over
all params of all param groups; "tensor" one per param tensor; "coordinate" h_j = sign(c_j) if
|c_j| ≥ ν else c_j. The min over an empty set (c = 0) is +inf ≥ ν, so an all-zero unit takes
the sign branch (and sign(0) = 0 = c, so the update is the same either way). ν is compared in
the dtype of c.
"""

from __future__ import annotations

import math

import torch

from lionconv.optim._base import SignOptimizer
from lionconv.optim._functional import global_min
from lionconv.optim._validate import (
    check_betas,
    check_foreach,
    check_gate,
    check_lr,
    check_nu,
    check_weight_decay,
)


class CLion(SignOptimizer):
    """CLion: Lion whose sign falls back to the identity when some |c_j| is below ν.

    ``nu`` and ``gate`` live in the param groups (so ``state_dict`` carries them) but must agree
    across groups: all groups share one gate, and with ``gate="global"`` one ν, because a single
    decision cannot use two thresholds (a mismatch raises ``ValueError`` when the group is added,
    or at ``step`` if the groups were edited). With "tensor" / "coordinate" gates ν may differ
    per group.

    After each step (0-dim tensors, never synced): ``last_sign_fraction`` = fraction of the
    coordinates with a grad that took the sign branch (global gate: 0 or 1; NaN if no
    coordinate had a grad); ``last_min_abs_c`` = min over all j with c_j ≠ 0 of |c_j| (+inf if
    none), which is also ``last_tau`` when ``record_tau=True``. Coordinate gate: c_j = 0 counts
    as the identity branch (|0| < ν), which gives the same h_j = 0.
    """

    def __init__(
        self,
        params,
        lr=1e-4,
        betas=(0.9, 0.99),
        weight_decay=0.0,
        nu=1e-6,
        gate="global",
        *,
        foreach=None,
        record_tau=False,
    ):
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, nu=nu, gate=gate, foreach=foreach)
        self.last_sign_fraction: torch.Tensor | None = None
        self.last_min_abs_c: torch.Tensor | None = None
        self._spare_buffers: dict[tuple, torch.Tensor] = {}
        super().__init__(params, defaults, record_tau=record_tau)

    def _check_group(self, group: dict) -> None:
        check_lr(group["lr"])
        check_betas(group["betas"])
        check_weight_decay(group["weight_decay"])
        check_nu(group["nu"])
        check_gate(group["gate"])
        check_foreach(group["foreach"])

    def _check_against_groups(self, group: dict) -> None:
        _check_groups_agree([*self.param_groups, group])

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("last_sign_fraction", None)
        self.__dict__.setdefault("last_min_abs_c", None)
        self._spare_buffers = {}

    def _spare_like(self, flat: torch.Tensor) -> torch.Tensor:
        """A kept scratch buffer shaped like `flat` (|c|, then sign(c), for the global gate):
        a fresh parameter-sized temporary each step costs more in page faults than the gate."""
        key = (flat.device, flat.dtype)
        buffer = self._spare_buffers.get(key)
        if buffer is None or buffer.numel() < flat.numel():
            buffer = self._spare_buffers[key] = torch.empty(flat.numel(), device=flat.device, dtype=flat.dtype)
        return buffer[: flat.numel()]

    @torch.no_grad()
    def step(self, closure=None):
        """One CLion step on every param with a grad; returns closure's loss (or None)."""
        loss = self._evaluate(closure)
        _check_groups_agree(self.param_groups)  # the groups may have been edited since
        buckets, flats = self._gather()
        device = self._stat_device(buckets)
        for b in buckets:
            b.path.interpolate(b.exp_avgs, b.grads, b.directions, b.group["betas"][0])

        numel = sum(flat.numel() for flat in flats)
        if self.param_groups[0]["gate"] == "global":
            magnitudes = [torch.abs(flat, out=self._spare_like(flat)) for flat in flats]
            for magnitude in magnitudes:  # every direction is a view into one of the flats
                magnitude.masked_fill_(magnitude == 0, math.inf)
            min_abs_c = global_min([magnitude.amin() for magnitude in magnitudes], device)
            take_sign = min_abs_c >= self.param_groups[0]["nu"]
            for flat, spare in zip(flats, magnitudes):
                torch.sign(flat, out=spare)
                torch.where(take_sign.to(flat.device), spare, flat, out=flat)
            sign_count = take_sign.to(torch.float32) * numel
        else:
            mins, counts = [], []
            for b in buckets:
                for c in b.directions:
                    smallest, take_sign, count, spare = _unit_gate(c, b.group["nu"], b.group["gate"])
                    torch.sign(c, out=spare)  # reuse the temporary
                    torch.where(take_sign, spare, c, out=c)
                    mins.append(smallest)
                    counts.append(count.to(device=device, dtype=torch.float32))
            min_abs_c = global_min(mins, device)
            sign_count = torch.stack(counts).sum() if counts else torch.zeros((), device=device)
        self.last_min_abs_c = min_abs_c
        self.last_sign_fraction = sign_count / numel if numel else torch.full((), math.nan, device=device)
        if self.record_tau:
            self.last_tau = min_abs_c

        for b in buckets:
            b.path.descend(b.params, b.directions, self._lr(b.group), b.group["weight_decay"])
            b.path.track(b.exp_avgs, b.grads, b.group["betas"][1])
        return loss


def _check_groups_agree(groups: list[dict]) -> None:
    """One gate for all groups; with gate='global' also one nu (one decision, one threshold)."""
    first = groups[0]
    for group in groups[1:]:
        if group["gate"] != first["gate"]:
            raise ValueError(
                f"Invalid gate: {group['gate']!r} (every param group must use the same gate; "
                f"another group has {first['gate']!r})"
            )
        if first["gate"] == "global" and group["nu"] != first["nu"]:
            raise ValueError(
                f"Invalid nu: {group['nu']!r} (gate='global' takes one decision over all "
                f"param groups, so they must share nu; another group has {first['nu']!r})"
            )


def _unit_gate(c: torch.Tensor, nu: float, gate: str):
    """(min non-zero |c|, where to take the sign, how many coordinates do, a spare temporary
    shaped like c) for one tensor under the "tensor" or "coordinate" gate."""
    magnitude = c.abs()
    # c_j = 0 counts as the sign branch under every gate (the min over an empty set is +inf ≥ ν;
    # the update is 0 either way), so the logged fractions of the three gates are comparable.
    magnitude.masked_fill_(magnitude == 0, math.inf)
    smallest = magnitude.amin()
    if gate == "coordinate":
        take_sign = magnitude >= nu
        count = take_sign.sum()
    else:
        take_sign = smallest >= nu
        count = take_sign * c.numel()
    return smallest, take_sign, count, magnitude
