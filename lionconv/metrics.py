"""Full-gradient theory metrics (THEORY §3, §5): norms, ℓ1/ℓ2 ratio, KKT residual, feasibility.

Two layers:
  * one reduction, `reduce_per_tensor`, that turns gradients (and parameters) into a small
    float64 table of per-tensor sums on the tensors' own device, without synchronising;
  * formulas (`l1_over_l2`, `ratio_r`, `kkt_from_sums`, `feasibility_from_linf`) written once
    and applied either to 0-dim tensors (no sync) or, after the single host copy, to numpy
    arrays holding every tensor plus the whole model.
`gradient_metrics` / `minibatch_metrics` compose the two with exactly one device-to-host copy
(`_to_host`), so logging them costs one synchronisation per call, also on CUDA.

Accuracy: every value is copied to float64 before it is reduced, so sums over 1e7 float32/bf16
entries are float64-accurate (and products g_j·x_j of float32 values are exact). Plain float32
reductions on CPU err by ~1e-5..1e-4 relative at that size (THEORY §5).
Cost: the float64 copy is made block by block (`BLOCK_SIZE` elements, 8 MiB), so a call needs
no memory proportional to d.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

REDUCTION_ROWS = ("abs_sum", "square_sum", "dot_with_x", "x_abs_max", "min_nonzero_abs")
"""Rows of `reduce_per_tensor`'s table, one column per tensor."""

_INF = float("inf")


# ----------------------------------------------------------------------------- formulas
# Each takes reduced quantities: 0-dim tensors (stays on device, no sync) or numpy arrays.

def l1_over_l2(l1, l2):
    """‖g‖₁ / ‖g‖₂ ∈ [1, √d]; NaN when g = 0."""
    return l1 / l2


def ratio_r(l1, l2, d):
    """r = ‖g‖₁ / (√d · ‖g‖₂) ∈ [1/√d, 1] (THEORY §5); NaN when g = 0 or d = 0."""
    return l1 / (d ** 0.5 * l2)


def kkt_from_sums(l1, dot_with_x, weight_decay: float):
    """G_λ(x) = ‖g‖₁ + λ·⟨g, x⟩ (THEORY §3): λ times the Frank–Wolfe gap of the box ‖x‖∞ ≤ 1/λ;
    ≥ 0 on the box, 0 exactly at its KKT points; G_0 = ‖g‖₁."""
    return l1 + weight_decay * dot_with_x


def feasibility_from_linf(x_linf, weight_decay: float):
    """max(0, λ·‖x‖∞ − 1): how far x lies outside the box ‖x‖∞ ≤ 1/λ (0 when λ = 0)."""
    return (weight_decay * x_linf - 1.0).clip(min=0.0)


# ----------------------------------------------------------------------------- reduction

BLOCK_SIZE = 1 << 19
"""Elements per float64 work block (g and x rows: 8 MiB). Large enough that each op amortises its
dispatch and threading overhead (a 1e7-parameter model takes 20 blocks), small enough that the
allocator reuses the workspace instead of mapping fresh pages on every call (on CPU, 2^22 is
2x slower at d = 1e7). Small tensors share a block, large ones span several."""


def _blocks(sizes: list[int], block_size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of consecutive pieces whose sizes add up to at most block_size
    (each piece is at most block_size)."""
    ranges, start, filled = [], 0, 0
    for i, size in enumerate(sizes):
        if filled + size > block_size:
            ranges.append((start, i))
            start, filled = i, 0
        filled += size
    ranges.append((start, len(sizes)))
    return ranges


def _pieces(tensors, block_size: int) -> tuple[list[torch.Tensor], list[int]]:
    """(pieces, pieces per tensor): every tensor flattened and cut into consecutive chunks of
    <= block_size; an empty tensor is one empty piece, so every tensor owns at least one."""
    per_tensor = [(t.reshape(-1),) if t.numel() <= block_size else t.reshape(-1).split(block_size)
                  for t in tensors]
    return [piece for pieces in per_tensor for piece in pieces], [len(p) for p in per_tensor]


SMALL_MODEL = 1 << 15
"""Up to this many elements the whole model is one float64 vector reduced by segments: a fixed
handful of ops whatever the number of tensors, where the per-piece ops of the blocked path would
cost more in dispatch than in arithmetic."""


def _reduce_small(grads, params, min_nonzero: bool) -> torch.Tensor:
    """`reduce_per_tensor` for a small model: the same (5, n) float64 table, by segment sums."""
    device = grads[0].device
    lengths = torch.tensor([g.numel() for g in grads], device=device)
    segment = lambda values, how, initial=0.0: torch.segment_reduce(  # noqa: E731
        values, how, lengths=lengths, initial=initial, unsafe=True)
    g = torch.cat([t.reshape(-1) for t in grads]).to(torch.float64)
    abs_g = g.abs()
    rows = [segment(abs_g, "sum"), segment(g * g, "sum")]
    if params is None:
        no_x = torch.zeros(len(grads), dtype=torch.float64, device=device)
        rows += [no_x, no_x]
    else:
        x = torch.cat([t.detach().reshape(-1) for t in params]).to(torch.float64)
        rows += [segment(g * x, "sum"), segment(x.abs(), "max")]
    if min_nonzero:
        rows.append(segment(abs_g.masked_fill_(abs_g.logical_not(), _INF), "min", _INF))
    else:
        rows.append(torch.full((len(grads),), _INF, dtype=torch.float64, device=device))
    return torch.stack(rows)


@torch.no_grad()
def reduce_per_tensor(grads: Sequence[torch.Tensor],
                      params: Sequence[torch.Tensor] | None = None, *,
                      min_nonzero: bool = True, block_size: int | None = None) -> torch.Tensor:
    """Float64 table T of shape (5, n) on the tensors' device; column i is tensor i, rows are
    `REDUCTION_ROWS`:
        abs_sum          Σ_j |g_j|              square_sum   Σ_j g_j²
        dot_with_x       Σ_j g_j·x_j            x_abs_max    max_j |x_j|   (0 if empty)
        min_nonzero_abs  min_{j: g_j≠0} |g_j|   (inf if g = 0 or empty)
    Without `params` the two x rows are 0; with min_nonzero=False the last row is inf (skips
    two passes). No host synchronisation.

    Every value is copied into a float64 block before it is reduced, so all sums accumulate
    in float64 (and g_j·x_j of float32/bf16 values is exact). The work goes block by block
    (block_size elements, default `BLOCK_SIZE`), reusing one workspace.
    """
    block_size = BLOCK_SIZE if block_size is None else block_size
    if not (isinstance(block_size, int) and block_size >= 1):
        raise ValueError(f"block_size={block_size!r} is not allowed: expected an int >= 1")
    grads = list(grads)
    n = len(grads)
    device = grads[0].device if grads else torch.device("cpu")
    if n == 0:
        return torch.zeros((len(REDUCTION_ROWS), 0), dtype=torch.float64, device=device)
    if sum(g.numel() for g in grads) <= SMALL_MODEL:
        return _reduce_small(grads, params, min_nonzero)
    g_pieces, counts = _pieces(grads, block_size)
    x_pieces = None if params is None else _pieces(params, block_size)[0]
    sizes = [piece.numel() for piece in g_pieces]

    rows = 1 if params is None else 2
    workspace = torch.empty((rows, min(block_size, sum(sizes))), dtype=torch.float64,
                            device=device)
    zero, inf = workspace.new_zeros(()), workspace.new_full((), _INF)
    grams, abs_sums, x_abs_maxes, min_nonzero_abses = [], [], [], []
    for start, stop in _blocks(sizes, block_size):
        block_sizes = sizes[start:stop]
        block = workspace[:, :sum(block_sizes)]
        g64 = block[0].split_with_sizes(block_sizes)
        if x_pieces is None:
            torch._foreach_copy_(list(g64), g_pieces[start:stop])
        else:
            x64 = block[1].split_with_sizes(block_sizes)
            torch._foreach_copy_([*g64, *x64], g_pieces[start:stop] + x_pieces[start:stop])
        # Σg², Σg·x: one Gram matrix [g; x]·[g; x]ᵀ per piece (one BLAS pass).
        grams += [part @ part.T for part in block.split_with_sizes(block_sizes, dim=1)]
        block.abs_()                                  # from here on: |g| and |x|
        abs_sums += [part.sum() for part in g64]
        if x_pieces is not None:
            x_abs_maxes += [part.amax() if part.numel() else zero for part in x64]
        if min_nonzero:
            # Zeros of g become +inf so that a plain min finds the smallest non-zero |g_j|.
            # (logical_not(v) is v == 0; on CPU it is about twice as fast as `== 0`.)
            block[0].masked_fill_(block[0].logical_not(), _INF)
            min_nonzero_abses += [part.amin() if part.numel() else inf for part in g64]

    grams = torch.stack(grams)
    pieces = len(sizes)
    no_x = workspace.new_zeros(pieces)
    table = torch.stack([
        torch.stack(abs_sums),
        grams[:, 0, 0],
        no_x if x_pieces is None else grams[:, 0, 1],
        no_x if x_pieces is None else torch.stack(x_abs_maxes),
        torch.stack(min_nonzero_abses) if min_nonzero else workspace.new_full((pieces,), _INF),
    ])
    if pieces == n:
        return table
    # Merge the pieces of each tensor (consecutive columns): sums add, maxima and minima combine.
    columns, start = [], 0
    for count in counts:
        part = table[:, start:start + count]
        columns.append(torch.cat([part[:3].sum(dim=1), part[3:4].amax(dim=1),
                                  part[4:].amin(dim=1)]))
        start += count
    return torch.stack(columns, dim=1)


def _to_host(table: torch.Tensor) -> np.ndarray:
    """The one device-to-host copy (the synchronisation) of a metrics call."""
    return table.to("cpu").numpy()


# ----------------------------------------------------------------------------- validation

def _check_weight_decay(weight_decay) -> float:
    try:
        weight_decay = float(weight_decay)
    except (TypeError, ValueError):
        weight_decay = math.nan
    if not (0.0 <= weight_decay < _INF):
        raise ValueError(f"weight_decay={weight_decay!r} is not allowed: expected a finite "
                         f"number >= 0")
    return weight_decay


def _check_grads(grads) -> list[torch.Tensor]:
    grads = list(grads)
    for i, g in enumerate(grads):
        if not isinstance(g, torch.Tensor):
            raise ValueError(f"grads[{i}]={g!r} is not allowed: expected a tensor (pass zeros "
                             f"for a parameter without a gradient)")
    return grads


def _check_pairs(params, grads, names):
    params, grads = list(params), _check_grads(grads)
    if len(params) != len(grads):
        raise ValueError(f"len(grads)={len(grads)} is not allowed: expected len(params)="
                         f"{len(params)} (one gradient per parameter tensor)")
    for i, (x, g) in enumerate(zip(params, grads)):
        if x.shape != g.shape:
            raise ValueError(f"grads[{i}].shape={tuple(g.shape)} is not allowed: expected "
                             f"params[{i}].shape={tuple(x.shape)}")
    if names is None:
        names = [f"param{i}" for i in range(len(params))]
    names = [str(n) for n in names]
    if len(names) != len(params):
        raise ValueError(f"len(names)={len(names)} is not allowed: expected len(params)="
                         f"{len(params)}")
    return params, grads, names


# ----------------------------------------------------------------------- 0-dim building blocks

def kkt_residual(grads, params, weight_decay: float) -> torch.Tensor:
    """G_λ(x) = ‖g‖₁ + λ·⟨g, x⟩ over all tensors, as a 0-dim float64 tensor (no sync)."""
    weight_decay = _check_weight_decay(weight_decay)
    params, grads, _ = _check_pairs(params, grads, None)
    sums = reduce_per_tensor(grads, params, min_nonzero=False)[:3].sum(dim=1)
    return kkt_from_sums(sums[0], sums[2], weight_decay)


def _abs_maxes(params) -> torch.Tensor:
    """max_j |x_j| per tensor (0 for an empty one) as a float64 vector, one multi-tensor op."""
    tensors = [x.detach() for x in params]
    if not tensors:
        return torch.zeros(0, dtype=torch.float64)
    return torch.stack(torch._foreach_norm(tensors, _INF)).to(torch.float64)


def x_abs_max(params) -> torch.Tensor:
    """‖x‖∞ = max_j |x_j| over all tensors (0 if there are none), as a 0-dim float64 tensor
    (no sync; a max is exact in any dtype)."""
    parts = [x.detach().abs().amax().to(torch.float64) for x in params if x.numel()]
    return torch.stack(parts).amax() if parts else torch.zeros((), dtype=torch.float64)


def feasibility_violation(params, weight_decay: float) -> torch.Tensor:
    """max(0, λ·‖x‖∞ − 1) over all tensors, as a 0-dim float64 tensor (no sync)."""
    weight_decay = _check_weight_decay(weight_decay)
    return feasibility_from_linf(x_abs_max(params), weight_decay)


# ----------------------------------------------------------------------------- logged metrics

def _append_whole_model(table: np.ndarray) -> np.ndarray:
    """(5, n) per-tensor table -> (5, n + 1), the last column the whole model: sums add, the
    max of |x| is the largest max, the min of non-zero |g| the smallest min."""
    whole = [table[0].sum(), table[1].sum(), table[2].sum(), table[3].max(initial=0.0),
             table[4].min(initial=_INF)]
    return np.concatenate([table, np.array(whole)[:, None]], axis=1)


def gradient_metrics(params, grads, weight_decay: float, names=None, per_tensor: bool = True,
                     tau_grad: bool = True) -> tuple[dict[str, float], list[dict]]:
    """Theory metrics of the full gradient g = ∇f(x) at x = params, with one host sync.

    Whole model (d = total numel):
        grad_l1 ‖g‖₁, grad_l2 ‖g‖₂, l1_l2 ‖g‖₁/‖g‖₂, ratio_r ‖g‖₁/(√d‖g‖₂) (NaN if g = 0),
        kkt_residual G_λ = ‖g‖₁ + λ⟨g, x⟩, feasibility max(0, λ‖x‖∞ − 1), x_linf ‖x‖∞,
        tau_grad min_{j: g_j≠0} |g_j| (inf if g = 0; only with `tau_grad`, which costs two
        more passes), d.
    Per tensor (list, empty unless per_tensor): tensor (names[i], default "param{i}"), numel,
        grad_l1, grad_l2, l1_l2, ratio_r, kkt_residual, feasibility — the same formulas
        restricted to that tensor (zero-size tensors: norms 0, ratios NaN).
    """
    weight_decay = _check_weight_decay(weight_decay)
    params, grads, names = _check_pairs(params, grads, names)
    numels = [g.numel() for g in grads]
    if weight_decay:
        table = reduce_per_tensor(grads, params, min_nonzero=tau_grad)
    else:
        # λ = 0 needs no ⟨g, x⟩, so no float64 copy of x: its max is exact in any dtype.
        table = reduce_per_tensor(grads, min_nonzero=tau_grad)
        table[3] = _abs_maxes(params)
    table = _append_whole_model(_to_host(table))
    l1, l2, dot_with_x, x_linf = table[0], np.sqrt(table[1]), table[2], table[3]
    d = np.array(numels + [sum(numels)], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        columns = {
            "grad_l1": l1,
            "grad_l2": l2,
            "l1_l2": l1_over_l2(l1, l2),
            "ratio_r": ratio_r(l1, l2, d),
            "kkt_residual": kkt_from_sums(l1, dot_with_x, weight_decay),
            "feasibility": feasibility_from_linf(x_linf, weight_decay),
        }
    columns = {key: values.tolist() for key, values in columns.items()}  # Python floats
    whole = {key: values[-1] for key, values in columns.items()}
    whole.update(x_linf=float(x_linf[-1]), d=sum(numels))
    if tau_grad:
        whole["tau_grad"] = float(table[4, -1])
    rows = []
    if per_tensor:
        for i, name in enumerate(names):
            rows.append({"tensor": name, "numel": numels[i],
                         **{key: values[i] for key, values in columns.items()}})
    return whole, rows


def minibatch_metrics(grads) -> dict[str, float]:
    """Norms of a stochastic gradient g_k with one host sync: mb_grad_l1 ‖g‖₁, mb_grad_l2 ‖g‖₂,
    mb_l1_l2 ‖g‖₁/‖g‖₂, mb_ratio_r ‖g‖₁/(√d‖g‖₂) (NaN if g = 0)."""
    grads = _check_grads(grads)
    table = _to_host(reduce_per_tensor(grads, min_nonzero=False))
    l1, l2, d = table[0].sum(), np.sqrt(table[1].sum()), sum(g.numel() for g in grads)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"mb_grad_l1": float(l1), "mb_grad_l2": float(l2),
                "mb_l1_l2": float(l1_over_l2(l1, l2)), "mb_ratio_r": float(ratio_r(l1, l2, d))}
