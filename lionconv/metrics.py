"""Full-gradient theory metrics (THEORY §3, §5): norms, ℓ1/ℓ2 ratio, KKT residual, feasibility.

Two layers:
  * one reduction, `reduce_per_tensor`, that turns gradients (and parameters) into a small
    float64 table of per-tensor sums on the tensors' own device, without synchronising;
  * formulas (`l1_over_l2`, `ratio_r`, `kkt_from_sums`, `feasibility_from_linf`) written once
    and applied either to 0-dim tensors (no sync) or, after the single host copy, to numpy
    arrays: `metrics_from_sums` takes any stack of tables, so a trainer can keep each logged
    step's table (`gradient_sums`) and convert the per-tensor rows of many steps at once.
`gradient_metrics` / `minibatch_metrics` compose the two with exactly one device-to-host copy
(`_to_host`), so logging them costs one synchronisation per call, also on CUDA.

Accuracy: every value is copied to float64 before it is reduced, so sums over 1e7 float32/bf16
entries are float64-accurate (and products g_j·x_j of float32 values are exact). Plain float32
reductions on CPU err by ~1e-5..1e-4 relative at that size (THEORY §5).
Cost: the float64 copy is made block by block (`BLOCK_SIZE` elements, 8 MiB), so a call needs
no memory proportional to d; small CPU models (`SMALL_MODEL`) take a NumPy path whose fixed
cost per op is lower. `python scripts/bench_metrics.py` times both against the gradient pass.
"""

from __future__ import annotations

import functools
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
    excess = weight_decay * x_linf - 1.0
    # max(0, v) as (v + |v|)/2: exact, keeps NaN, and the same on floats, arrays and tensors.
    return (excess + abs(excess)) / 2


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
"""Up to this many elements, a model on the CPU in float32/float64 is reduced with NumPy on one
flat float64 copy: at that size each op's fixed dispatch cost, not its arithmetic, is what a call
pays, and right after a gradient pass (which evicts the interpreter from the caches) a NumPy call
costs ~5-10 µs where a torch op costs ~10-25 µs."""

_NUMPY_DTYPES = (torch.float32, torch.float64)


def _takes_numpy_path(grads, params, numel: int) -> bool:
    tensors = grads if params is None else [*grads, *params]
    return numel <= SMALL_MODEL and all(t.is_cpu and t.dtype in _NUMPY_DTYPES for t in tensors)


@functools.lru_cache(maxsize=64)
def _segments(sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | slice]:
    """(start of each non-empty tensor in the flat vector, which columns are non-empty)."""
    sizes = np.array(sizes, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    nonempty = np.flatnonzero(sizes)
    return starts[nonempty], (slice(None) if len(nonempty) == len(sizes) else nonempty)


def _reduce_small_cpu(grads, params, sizes: list[int], dot_with_x: bool,
                      min_nonzero: bool) -> np.ndarray:
    """`reduce_per_tensor`'s (5, n) table for a small CPU model, with NumPy: the tensors are
    concatenated into one float64 vector and every row is one segmented reduction (`reduceat`).
    Written for the fewest NumPy calls: each costs ~5-10 µs right after a gradient pass."""
    starts, columns = _segments(tuple(sizes))
    if not isinstance(columns, slice):   # empty tensors: reduce the others, then scatter
        table = np.zeros((len(REDUCTION_ROWS), len(grads)))
        table[4] = _INF
        if len(starts):
            keep = columns.tolist()
            table[:, columns] = _reduce_small_cpu(
                [grads[i] for i in keep], None if params is None else [params[i] for i in keep],
                [sizes[i] for i in keep], dot_with_x, min_nonzero)
        return table
    table = np.empty((len(REDUCTION_ROWS), len(grads)))
    tensors = grads if params is None else [*params, *grads]
    dot_with_x = dot_with_x and params is not None
    # Rows: [x,] g, g², [g·x]; x and g are filled by one concatenation, which also converts to
    # float64 (so products are exact; axis=None flattens every tensor).
    first = 0 if params is None else 1   # the row of g
    work = np.empty((first + 2 + dot_with_x, sum(sizes)))
    np.concatenate([t.numpy(force=True) for t in tensors], axis=None,
                   out=work[:first + 1].reshape(-1))
    g = work[first]
    # g² and g·x in one broadcast multiply: rows [g, x] times g.
    np.multiply(work[first::-1] if dot_with_x else g, g, out=work[first + 1:])
    if not dot_with_x:
        table[2] = 0.0
    np.abs(work[:first + 1], out=work[:first + 1])
    np.add.reduceat(work[first:], starts, axis=1, out=table[:2 + dot_with_x])
    if params is None:
        table[3] = 0.0
    else:
        np.maximum.reduceat(work[0], starts, out=table[3])
    if min_nonzero:
        g[g == 0.0] = _INF    # so that a plain min finds the smallest non-zero |g_j|
        np.minimum.reduceat(g, starts, out=table[4])
    else:
        table[4] = _INF
    return table


def _abs_maxes(params, device) -> torch.Tensor:
    """max_j |x_j| per tensor (0 for an empty one) as a float64 vector, exact in any dtype, read
    from the tensors themselves: one `aminmax` pass each (the ∞-norm kernels are ~10x slower)."""
    extremes = [torch.stack(torch.aminmax(x.detach())).to(torch.float64) if x.numel()
                else torch.zeros(2, dtype=torch.float64, device=device) for x in params]
    extremes = torch.stack(extremes)
    return torch.maximum(-extremes[:, 0], extremes[:, 1])


@torch.no_grad()
def reduce_per_tensor(grads: Sequence[torch.Tensor],
                      params: Sequence[torch.Tensor] | None = None, *, dot_with_x: bool = True,
                      min_nonzero: bool = True, block_size: int | None = None) -> torch.Tensor:
    """Float64 table T of shape (5, n) on the tensors' device; column i is tensor i, rows are
    `REDUCTION_ROWS`:
        abs_sum          Σ_j |g_j|              square_sum   Σ_j g_j²
        dot_with_x       Σ_j g_j·x_j            x_abs_max    max_j |x_j|   (0 if empty)
        min_nonzero_abs  min_{j: g_j≠0} |g_j|   (inf if g = 0 or empty)
    Without `params` the two x rows are 0; with dot_with_x=False the dot row is 0 (no float64
    copy of x); with min_nonzero=False the last row is inf (skips two passes). No host
    synchronisation.

    Every value of g (and of x for the dot) is copied to float64 before it is reduced, so all sums
    accumulate in float64 (and g_j·x_j of float32/bf16 values is exact). The work goes block by
    block (block_size elements, default `BLOCK_SIZE`) through one workspace. (The host-side
    callers take `_reduce_small_cpu`, the same table by NumPy, for small CPU models.)
    """
    block_size = BLOCK_SIZE if block_size is None else block_size
    if not (isinstance(block_size, int) and block_size >= 1):
        raise ValueError(f"block_size={block_size!r} is not allowed: expected an int >= 1")
    grads = list(grads)
    params = None if params is None else list(params)
    n = len(grads)
    device = grads[0].device if grads else torch.device("cpu")
    if n == 0:
        return torch.zeros((len(REDUCTION_ROWS), 0), dtype=torch.float64, device=device)
    g_pieces, counts = _pieces(grads, block_size)
    x_pieces = _pieces(params, block_size)[0] if params is not None and dot_with_x else None
    sizes = [piece.numel() for piece in g_pieces]

    rows = 1 if x_pieces is None else 2
    workspace = torch.empty((rows, min(block_size, sum(sizes))), dtype=torch.float64,
                            device=device)
    inf = workspace.new_full((), _INF)
    grams, abs_sums, min_nonzero_abses = [], [], []
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
        block[0].abs_()
        abs_sums += [part.sum() for part in g64]
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
        no_x,
        torch.stack(min_nonzero_abses) if min_nonzero else workspace.new_full((pieces,), _INF),
    ])
    if pieces != n:
        # Merge the pieces of each tensor (consecutive columns): sums add, minima combine.
        columns, start = [], 0
        for count in counts:
            part = table[:, start:start + count]
            columns.append(torch.cat([part[:4].sum(dim=1), part[4:].amin(dim=1)]))
            start += count
        table = torch.stack(columns, dim=1)
    if params is not None:
        table[3] = _abs_maxes(params, device)
    return table


def _reduce_to_host(grads, params, *, dot_with_x: bool, min_nonzero: bool) -> np.ndarray:
    """`reduce_per_tensor`'s table on the host: for a small CPU model computed by NumPy
    (`_reduce_small_cpu`, no device at all), for any other copied by `_to_host`, the call's one
    synchronisation."""
    sizes = [g.numel() for g in grads]
    if grads and _takes_numpy_path(grads, params, sum(sizes)):
        return _reduce_small_cpu(grads, params, sizes, dot_with_x, min_nonzero)
    return _to_host(reduce_per_tensor(grads, params, dot_with_x=dot_with_x,
                                      min_nonzero=min_nonzero))


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


def _check_pairs(params, grads) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    params, grads = list(params), _check_grads(grads)
    if len(params) != len(grads):
        raise ValueError(f"len(grads)={len(grads)} is not allowed: expected len(params)="
                         f"{len(params)} (one gradient per parameter tensor)")
    if [x.shape for x in params] != [g.shape for g in grads]:
        i = next(i for i, (x, g) in enumerate(zip(params, grads)) if x.shape != g.shape)
        raise ValueError(f"grads[{i}].shape={tuple(grads[i].shape)} is not allowed: expected "
                         f"params[{i}].shape={tuple(params[i].shape)}")
    return params, grads


def _check_names(names, count: int) -> list[str]:
    names = [f"param{i}" for i in range(count)] if names is None else [str(n) for n in names]
    if len(names) != count:
        raise ValueError(f"len(names)={len(names)} is not allowed: expected len(params)={count}")
    return names


# ----------------------------------------------------------------------- 0-dim building blocks

def kkt_residual(grads, params, weight_decay: float) -> torch.Tensor:
    """G_λ(x) = ‖g‖₁ + λ·⟨g, x⟩ over all tensors, as a 0-dim float64 tensor (no sync)."""
    weight_decay = _check_weight_decay(weight_decay)
    params, grads = _check_pairs(params, grads)
    sums = reduce_per_tensor(grads, params, min_nonzero=False)[:3].sum(dim=1)
    return kkt_from_sums(sums[0], sums[2], weight_decay)


def x_abs_max(params) -> torch.Tensor:
    """‖x‖∞ = max_j |x_j| over all tensors (0 if there are none), as a 0-dim float64 tensor
    (no sync; a max is exact in any dtype)."""
    params = list(params)
    if not params:
        return torch.zeros((), dtype=torch.float64)
    return _abs_maxes(params, params[0].device).amax()


def feasibility_violation(params, weight_decay: float) -> torch.Tensor:
    """max(0, λ·‖x‖∞ − 1) over all tensors, as a 0-dim float64 tensor (no sync)."""
    weight_decay = _check_weight_decay(weight_decay)
    return feasibility_from_linf(x_abs_max(params), weight_decay)


# ----------------------------------------------------------------------------- logged metrics

METRIC_KEYS = ("grad_l1", "grad_l2", "l1_l2", "ratio_r", "kkt_residual", "feasibility")
"""The metrics logged for the whole model and for each tensor."""


class GradientSums:
    """`gradient_sums` for one fixed list of parameters, set up once (λ and the parameters
    checked, the layout and the path chosen) so that a logged step pays for the reduction only:
    `GradientSums(params, λ)(grads)` equals `gradient_sums(params, grads, λ)`."""

    def __init__(self, params, weight_decay: float, *, tau_grad: bool = False):
        self.params = list(params)
        self.weight_decay = _check_weight_decay(weight_decay)
        self.tau_grad = tau_grad
        self.shapes = [x.shape for x in self.params]
        self.sizes = [x.numel() for x in self.params]
        numpy_path = bool(self.params) and _takes_numpy_path(self.params, None, sum(self.sizes))
        # Gradients with exactly this (shape, dtype) each take the NumPy path unchecked.
        self.numpy_signature = [(x.shape, x.dtype) for x in self.params] if numpy_path else None

    def __call__(self, grads) -> np.ndarray:
        grads = list(grads)
        try:
            signature = [(g.shape, g.dtype) for g in grads]
        except AttributeError:
            signature = None
        dot_with_x = self.weight_decay > 0
        if signature == self.numpy_signature and all(g.is_cpu for g in grads):
            return _reduce_small_cpu(grads, self.params, self.sizes, dot_with_x, self.tau_grad)
        if signature is None or [shape for shape, _ in signature] != self.shapes:
            _check_pairs(self.params, grads)   # raises, naming the bad gradient
        return _reduce_to_host(grads, self.params, dot_with_x=dot_with_x,
                               min_nonzero=self.tau_grad)


def gradient_sums(params, grads, weight_decay: float, *, tau_grad: bool = False) -> np.ndarray:
    """`reduce_per_tensor`'s (5, n) table of the gradient g at x = params, copied to the host
    (the call's one synchronisation). ⟨g, x⟩ is summed only when λ > 0 (G_0 = ‖g‖₁); the
    min-non-zero row only with `tau_grad` (two more passes). For repeated calls on the same
    parameters, `GradientSums` does the set-up once."""
    return GradientSums(params, weight_decay, tau_grad=tau_grad)(grads)


def metrics_from_sums(sums: np.ndarray, numel, weight_decay: float) -> dict[str, np.ndarray]:
    """`METRIC_KEYS` of sums tables of shape (..., 5, m) whose m columns hold `numel` entries
    each (broadcast against (..., m)), as (..., m) float64 arrays:
        grad_l1 ‖g‖₁, grad_l2 ‖g‖₂, l1_l2 ‖g‖₁/‖g‖₂, ratio_r ‖g‖₁/(√d‖g‖₂) (NaN if g = 0),
        kkt_residual ‖g‖₁ + λ⟨g, x⟩, feasibility max(0, λ‖x‖∞ − 1).
    Vectorised over any leading axes, so a run's logged steps convert in one call."""
    l1, l2 = sums[..., 0, :], np.sqrt(sums[..., 1, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"grad_l1": l1, "grad_l2": l2, "l1_l2": l1_over_l2(l1, l2),
                "ratio_r": ratio_r(l1, l2, np.asarray(numel, dtype=np.float64)),
                "kkt_residual": kkt_from_sums(l1, sums[..., 2, :], weight_decay),
                "feasibility": feasibility_from_linf(sums[..., 3, :], weight_decay)}


def whole_model_metrics(sums: np.ndarray, d: int, weight_decay: float,
                        tau_grad: bool = False) -> dict[str, float]:
    """The whole model's metrics from one (5, n) per-tensor table — sums add, the max of |x| is
    the largest max, the min of non-zero |g| the smallest min — as Python numbers: `METRIC_KEYS`
    (the same formulas, on floats), x_linf ‖x‖∞, d, and with `tau_grad` τ_grad =
    min_{j: g_j≠0} |g_j| (inf if g = 0)."""
    rows = sums.tolist()
    # Python sums over the few tensors (the per-tensor sums are already float64-accurate).
    l1, square_sum, dot_with_x = sum(rows[0]), sum(rows[1]), sum(rows[2])
    l2, x_linf = math.sqrt(square_sum), max(rows[3], default=0.0)
    if math.isnan(sum(rows[3])):   # Python's max drops a NaN that is not first; keep it
        x_linf = math.nan
    out = {"grad_l1": l1, "grad_l2": l2,
           # g = 0 (or d = 0): the ratios are undefined, NaN as in the array formulas
           "l1_l2": l1_over_l2(l1, l2) if l2 else math.nan,
           "ratio_r": ratio_r(l1, l2, d) if l2 else math.nan,
           "kkt_residual": kkt_from_sums(l1, dot_with_x, weight_decay),
           "feasibility": feasibility_from_linf(x_linf, weight_decay),
           "x_linf": x_linf, "d": int(d)}
    if tau_grad:
        out["tau_grad"] = float(sums[4].min(initial=_INF))
    return out


def per_tensor_metrics(sums: np.ndarray, numels, weight_decay: float) -> dict[str, np.ndarray]:
    """Per-tensor `METRIC_KEYS` of stacked tables (S, 5, n) (S logged steps), flattened
    step-major into arrays of length S·n, plus `numel`."""
    numels = np.asarray(numels, dtype=np.int64)
    metrics = metrics_from_sums(sums, numels, weight_decay)
    return {"numel": np.tile(numels, len(sums)),
            **{key: value.reshape(-1) for key, value in metrics.items()}}


def gradient_metrics(params, grads, weight_decay: float, names=None, per_tensor: bool = True,
                     tau_grad: bool = True) -> tuple[dict[str, float], list[dict]]:
    """Theory metrics of the full gradient g = ∇f(x) at x = params, with one host sync.

    Whole model (d = total numel): `whole_model_metrics` — grad_l1, grad_l2, l1_l2, ratio_r,
        kkt_residual, feasibility, x_linf, d, and tau_grad with `tau_grad` (two more passes).
    Per tensor (list, empty unless per_tensor): tensor (names[i], default "param{i}"), numel,
        and `METRIC_KEYS` restricted to that tensor (zero-size tensors: norms 0, ratios NaN).
    """
    params, grads = _check_pairs(params, grads)
    names = _check_names(names, len(params))
    sums = gradient_sums(params, grads, weight_decay, tau_grad=tau_grad)
    numels = [g.numel() for g in grads]
    whole = whole_model_metrics(sums, sum(numels), weight_decay, tau_grad=tau_grad)
    if not per_tensor:
        return whole, []
    columns = per_tensor_metrics(sums[None], numels, weight_decay)
    columns = {key: values.tolist() for key, values in columns.items()}  # Python numbers
    rows = [{"tensor": name, **{key: values[i] for key, values in columns.items()}}
            for i, name in enumerate(names)]
    return whole, rows


def minibatch_metrics(grads) -> dict[str, float]:
    """Norms of a stochastic gradient g_k with one host sync: mb_grad_l1 ‖g‖₁, mb_grad_l2 ‖g‖₂,
    mb_l1_l2 ‖g‖₁/‖g‖₂, mb_ratio_r ‖g‖₁/(√d‖g‖₂) (NaN if g = 0)."""
    grads = _check_grads(grads)
    table = _reduce_to_host(grads, None, dot_with_x=False, min_nonzero=False)
    l1, l2, d = table[0].sum(), np.sqrt(table[1].sum()), sum(g.numel() for g in grads)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"mb_grad_l1": float(l1), "mb_grad_l2": float(l2),
                "mb_l1_l2": float(l1_over_l2(l1, l2)), "mb_ratio_r": float(ratio_r(l1, l2, d))}


# A coordinate is on a face of the box ‖x‖∞ ≤ 1/λ (THEORY §3) when λ·|x_i| ≥ 1 − FACE_TOL: Lion
# approaches a face geometrically, (1 − λ|x_i|) shrinking by (1 − ηλ) per step, so it never lands
# exactly; 1% of the radius is far below the interior minimiser's distance in THEORY §3's test.
FACE_TOL = 1e-2


def face_fraction(params, weight_decay: float, tol: float = FACE_TOL) -> torch.Tensor:
    """Fraction of all coordinates with λ·|x_i| ≥ 1 − tol, as a 0-dim float64 tensor (no sync)."""
    weight_decay = _check_weight_decay(weight_decay)
    params = list(params)
    total = sum(p.numel() for p in params)
    on_face = [(p.detach().abs() * weight_decay >= 1.0 - tol).sum() for p in params]
    return torch.stack(on_face).sum().to(torch.float64) / max(total, 1)
