"""Batched runs: many runs of one closed-form problem as one run on stacked [R, d] tensors.

Runs that share the problem config, dtype, device, threads and current step (and differ in seed,
K, optimizer among Lion / CLion / SignSGD / SGD, hyperparameters incl. weight decay, schedule
constants, logging) step together; the separable families (rotated too: each run's row with its
own rotation), the quadratic, Gaussian and two-point noise, the zero chain (THEORY §9, float64 CPU
chains: its oracle reads x, and each row is its run's NumPy path). Left to the one-run path: networks,
SGD with momentum, snapshots (`unstackable_reason`). Row i of X is run i's x_k.
Each step does, for all rows at once, what
`Trainer.run` does for one (THEORY §2, the order of train.py's loop):

    f(x_k), ∇f(x_k)               problem.stacked_full_gradient
    g_k = ∇f(x_k) + ξ_k           ξ_i drawn from run i's own generator (its stream alone)
    full-gradient and g_k sums    float64, per row, block by block (Σ|.|, Σ(.)², Σ∇f·x if λ > 0)
    c = lerp(m, g, 1−β1)          β1 per row ([R, 1] tensors; SignSGD and SGD: weight 1, c = g)
    h = sign(c) | CLion's h | c   the gate decided per row (global/tensor) or per entry
    x ← x − ηλx ; x ← x − ηh      η, λ per row; SGD: h = g + λx (its L2 term), no decoupled decay
    m ← lerp(m, g, 1−β2)

The per-row hyperparameters are tensors in x's dtype, and `addcmul`/`lerp` with an [R, 1]
tensor round exactly as `add(alpha=)`/`lerp` with the scalar do, so x, m, the losses and the
noise are bit-identical to the one-run path; only the float64 sums are summed in another order
(≈1e-16 relative). The per-step values go to a float64 record on the device and reach the host
once per `chunk` steps. A run that ends (K reached) leaves the batch at that step; a run that
diverges is found at the next host copy, its record cut where the one-run path stops, and it
leaves the batch too: the others go on.

On two or more threads a large batch (R·d ≥ AHEAD_ELEMENTS) splits each step over two threads:
a worker draws the next step's noise (the draws do not depend on x, and each generator's draws
stay in order) and then sums this step's ∇f and g in float64 (only the record reads them) while
this thread updates x and computes the next gradient; the next draws start only when nothing
reads or saves the generators before the next step (no host copy, checkpoint or change of rows),
so every run's stream is the one it draws alone. `run_configs(n_jobs=)` deals a sweep's
stackable runs into processes of equal work instead (small d is bound by op dispatch, which
threads do not share out).

Each run stays a `Trainer` (`BatchedRun`): its folder, config, generator, checkpoint and resume
(the one-run checkpoint format: a batched run resumes on either path), summary and tables are
the one-run code's; this module only replaces the loop. `launch` runs a single stackable config
as a batch of one (the app's single runs: a third of the loop's cost a step at d = 1000).
"""
from __future__ import annotations

import collections
import functools
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch

from lionconv import runio, schema, train
from lionconv.metrics import FACE_TOL, metrics_from_sums, ratio_r
from lionconv.problems import PROBLEMS
from lionconv.schedules import SCHEDULES, lr_multiplier

STACKED_DTYPES = ("float32", "float64")
CHUNK_STEPS = 256  # steps between host copies of the record (and checks for divergence)
MAX_ELEMENTS = 1 << 23  # R·d of one batch: its [R, 3, d] rows stay 96 MiB in float32
THREADED_ELEMENTS = 1 << 18  # R·d from which a batch runs on the runs' `threads` (else on one)
SUM_BLOCK = 1 << 14  # the float64 sums go through an [R, 3, SUM_BLOCK] buffer that stays in cache
# R·d from which (with threads ≥ 2) the next step's noise is drawn on a worker thread while this
# step computes: below it, handing a draw to a thread costs more than the draw
AHEAD_ELEMENTS = 1 << 18
ROW_OPS_D = 1 << 14  # d from which CLion's sign is applied row by row (CPU)
# set to 1: a single run (`launch`) goes through train.py's loop even when it could be stacked
ONE_RUN_LOOP = "LIONCONV_ONE_RUN_LOOP"
OFF = ("", "0", "false", "no")  # the values of ONE_RUN_LOOP that leave the stacked engine on

# Columns of the per-step record (float64, one row per run); the problem's extra metrics follow.
# The first _SUMS are Float64Sums' columns: Σ|∇f|, Σ|g|, Σ∇f², Σg², Σ∇f·x.
_ABS, _MB_ABS, _SQUARE, _MB_SQUARE, _DOT, _XMAX, _LOSS, _TAU, _FRACTION, _FACE = range(10)
_SUMS, _COLUMNS = 5, 10


def unstackable_reason(cfg: Mapping[str, Any]) -> str | None:
    """Why `cfg` must run alone (None: it can be batched)."""
    problem = PROBLEMS.get(cfg["problem"]["name"])
    opt = cfg["optimizer"]
    reason = (f"problem {cfg['problem']['name']!r} has no stacked gradient" if problem is None
              else problem.why_not_stacked(cfg))
    if reason is not None:
        return reason
    if cfg["dtype"] not in STACKED_DTYPES:
        return f"dtype {cfg['dtype']!r}"
    if opt["name"] not in ("lion", "clion", "signsgd", "sgd"):
        return f"optimizer {opt['name']!r}"
    if opt["name"] == "sgd" and (opt.get("momentum", 0.0) != 0.0 or opt.get("nesterov", False)):
        return "SGD with momentum"
    if cfg["log"].get("snapshots"):
        return "log.snapshots"
    if cfg["schedule"]["name"] not in SCHEDULES:
        return f"schedule {cfg['schedule']['name']!r}"
    return None


def group_key(cfg: Mapping[str, Any], step: int) -> tuple:
    """Runs with equal keys can share a batch: one problem (all its options), dtype, device,
    threads, and the step they are at (a resumed sweep restarts where it stopped)."""
    return (json.dumps(cfg["problem"], sort_keys=True), cfg["dtype"], str(cfg["device"]),
            int(cfg["threads"]), step)


class BatchedRun(train.Trainer):
    """One run of a batch: a Trainer whose loop the batch runs. It keeps its rows as arrays
    (the record of its steps) and turns them into the same tables the one-run path writes."""

    def __init__(self, cfg, run_dir, run_id):
        super().__init__(cfg, run_dir, run_id)
        self.resumed = False
        self.chunks: list[np.ndarray] = []  # record rows of steps start, start+1, ...
        self.times: list[np.ndarray] = []
        self.start = 0
        self.steps_done: int | None = None  # set when the run has stopped
        self.status = "running"
        self.final: dict | None = None
        self.stopped_at_row = False  # the loop broke at step `steps_done` after logging it
        self.base = {}  # the restored running sums
        self.previous = (pd.DataFrame(), pd.DataFrame())  # rows written before a resume
        self.log_mask = np.zeros(self.K, dtype=bool)
        self.log_mask[self.log_steps] = True
        self.hyper_ = self.hyper()
        self.extra_names = tuple(self.problem.extra_metrics(self.problem.params))

    # --- set-up -----------------------------------------------------------------------------
    def begin(self) -> bool:
        self.resumed = super().begin()
        st = self.state
        self.start = st.step
        self.previous = (pd.DataFrame(st.rows), pd.DataFrame(st.tensor_rows))
        st.rows, st.tensor_rows = [], []
        self.base = dict(sum_grad_l1=st.sum_grad_l1, sum_kkt=st.sum_kkt, n_logged=st.n_logged,
                         min_loss=st.min_loss, wall_time=st.wall_time,
                         first_bad=int(self.first_bad),
                         sign_fraction_sum=float(self.sign_fraction_sum),
                         min_tau=float(self.min_tau))
        self.found_bad = self.base["first_bad"]
        self.n_recorded = 0
        return self.resumed

    def hyper(self) -> dict:
        """The per-row constants of the stacked update (from the built optimizer's group)."""
        group = self.optimizer.param_groups[0]
        name = self.opt_name
        # the base η (a restored group holds the last step's scheduled one)
        lr, wd = float(self.base_lrs[0]), float(group["weight_decay"])
        betas = group.get("betas", (0.0, 0.0))
        return {
            "w1": 1.0 - betas[0] if name in ("lion", "clion") else 1.0,
            "w2": 1.0 - betas[1] if name in ("lion", "clion") else 0.0,
            "neg_lr": -lr, "neg_lrwd": -lr * wd if self.lion_family else 0.0,
            "l2": wd if name == "sgd" else 0.0,
            "nu": float(group.get("nu", 1.0)),
            "always_sign": name in ("lion", "signsgd"),
            "clion_unit": name == "clion" and group["gate"] in ("global", "tensor"),
            "clion_coordinate": name == "clion" and group["gate"] == "coordinate",
            "record_tau": bool(getattr(self.optimizer, "record_tau", False)),
            "face_lambda": float(self.kkt_lambda),
            "decay": wd if self.lion_family else 0.0,  # λ of −η_kλ, with an lr schedule
        }

    def momentum(self) -> torch.Tensor | None:
        state = self.optimizer.state.get(self.problem.params[0], {})
        return state.get("exp_avg")

    # --- the record -------------------------------------------------------------------------
    def record(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.chunks:
            return np.zeros((0, _COLUMNS + len(self.extra_names))), np.zeros(0)
        if len(self.chunks) > 1:
            self.chunks = [np.concatenate(self.chunks)]
            self.times = [np.concatenate(self.times)]
        return self.chunks[0], self.times[0]

    def append(self, rec: np.ndarray, times: np.ndarray) -> None:
        """Add the record of the next steps and look in them for divergence."""
        offset = self.n_recorded
        self.chunks.append(rec)
        self.times.append(times)
        self.n_recorded += len(rec)
        self.scan(rec, offset)

    def scan(self, rec: np.ndarray, offset: int) -> None:
        """Find where the one-run loop would have stopped for divergence (train.Trainer.run:
        non-finite batch loss at any step, or a logged row with a non-finite loss, ‖∇f‖₁ or
        ‖x‖∞; checked at logged steps, every DIVERGENCE_CHECK_EVERY steps, and at step-count
        checkpoints), in the record rows `rec` of steps start + offset, …: each row is looked at
        once (a run of 1e6 steps has ~4000 chunks)."""
        if self.steps_done is not None:
            return
        steps = self.start + offset + np.arange(len(rec))
        logged = self.log_mask[steps]
        finite = np.isfinite(rec[:, _LOSS])
        bad = ~finite | (logged & ~(finite & np.isfinite(rec[:, _ABS]) & np.isfinite(rec[:, _XMAX])))
        first_bad = self.found_bad
        if first_bad < 0:
            hits = np.flatnonzero(bad)
            if not len(hits):
                return
            first_bad = int(steps[hits[0]])
            self.found_bad = first_bad
        self.first_bad.fill_(first_bad)
        after = steps >= first_bad
        check = after & (logged | (steps % train.DIVERGENCE_CHECK_EVERY == 0))
        ckpt_every = int(self.cfg["checkpoint_every"])
        at_ckpt = after & ((steps + 1) % ckpt_every == 0) if ckpt_every else np.zeros_like(after)
        events = np.flatnonzero(check | at_ckpt)
        if len(events):
            s = int(steps[events[0]])
            self.stopped_at_row = bool(check[events[0]])
            self.steps_done = s if self.stopped_at_row else s + 1
            self.status = "diverged"

    def sync_state(self, x: torch.Tensor | None, m: torch.Tensor | None) -> None:
        """Put the batch's row (x, m) and the record's sums into this Trainer's own state, as
        its loop would have left them after `steps` steps."""
        rec, times = self.record()
        st, base = self.state, self.base
        done = self.start + len(rec) if self.steps_done is None else self.steps_done
        taken = rec[: done - self.start]  # optimizer steps taken
        rows = self._row_indices(done)
        loss = rec[rows, _LOSS]
        grad_l1 = rec[rows, _ABS]
        kkt = self._kkt(rec[rows])
        st.step = done
        st.n_logged = base["n_logged"] + len(rows)
        st.sum_grad_l1 = _running_sum(base["sum_grad_l1"], grad_l1)[-1]
        st.sum_kkt = _running_sum(base["sum_kkt"], kkt)[-1]
        measured = loss if self.final is None else np.append(loss, self.final["loss"])
        st.min_loss = float(np.fmin.reduce(measured, initial=base["min_loss"]))
        if len(taken):
            tau = taken[:, _TAU]
            if self.hyper_["record_tau"]:
                self.min_tau.fill_(np.minimum.reduce(tau, initial=base["min_tau"]))
            if self.opt_name == "clion":
                self.sign_fraction_sum.fill_(_running_sum(base["sign_fraction_sum"],
                                                          taken[:, _FRACTION])[-1])
            st.wall_time = float(times[len(taken) - 1])
        if x is not None:
            with torch.no_grad():
                self.problem.params[0].copy_(x)
            if m is not None:
                param = self.problem.params[0]
                self.optimizer.state[param]["exp_avg"] = m.reshape(param.shape).clone()

    def _row_indices(self, done: int) -> np.ndarray:
        """Record rows of the logged steps the one-run loop logged before stopping at `done`."""
        rec, _ = self.record()
        steps = self.start + np.arange(len(rec))
        last = done if self.stopped_at_row else done - 1
        return np.flatnonzero(self.log_mask[steps] & (steps <= last))

    def _kkt(self, rec: np.ndarray) -> np.ndarray:
        if self.kkt_lambda == 0:
            return rec[:, _ABS].copy()
        return rec[:, _ABS] + self.kkt_lambda * rec[:, _DOT]

    def _sums(self, rec: np.ndarray) -> np.ndarray:
        """(S, 5, 1) tables as `GradientSums` gives them (dot row 0 when λ = 0, no τ_grad)."""
        sums = np.empty((len(rec), 5, 1))
        sums[:, 0, 0], sums[:, 1, 0] = rec[:, _ABS], rec[:, _SQUARE]
        sums[:, 2, 0] = rec[:, _DOT] if self.kkt_lambda > 0 else 0.0
        sums[:, 3, 0], sums[:, 4, 0] = rec[:, _XMAX], math.inf
        return sums

    # --- tables: the one-run path's files from the record -------------------------------------
    def _tables(self):
        rec, times = self.record()
        done = self.state.step
        rows = self._row_indices(done)
        part = rec[rows]
        steps = (self.start + rows).astype(np.int64)
        d = self.problem.d
        whole = {k: v[:, 0] for k, v in metrics_from_sums(self._sums(part), d, self.kkt_lambda).items()}
        mb_l1, mb_l2 = part[:, _MB_ABS], np.sqrt(part[:, _MB_SQUARE])
        tau = part[:, _TAU].copy()
        fraction = part[:, _FRACTION].copy()
        if not self.hyper_["record_tau"]:
            tau[:] = math.nan
        if self.opt_name != "clion":
            fraction[:] = math.nan
        if len(rows) and steps[-1] == done:  # the row of the step that stopped the loop
            tau[-1] = fraction[-1] = math.nan
        # τ_k and the sign fraction of EVERY step (tau_steps.parquet), from the same record
        every = rec[:done - self.start]
        self.step_series[0, self.start:done] = torch.from_numpy(
            every[:, _TAU] if self.hyper_["record_tau"] else np.full(len(every), math.nan))
        self.step_series[1, self.start:done] = torch.from_numpy(
            every[:, _FRACTION] if self.opt_name == "clion" else np.full(len(every), math.nan))
        base = self.base
        n = base["n_logged"] + np.arange(1, len(rows) + 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            columns = {
                **whole, "x_linf": part[:, _XMAX], "d": np.full(len(rows), d, dtype=np.int64),
                "loss": part[:, _LOSS],
                "mb_grad_l1": mb_l1, "mb_grad_l2": mb_l2, "mb_l1_l2": mb_l1 / mb_l2,
                "mb_ratio_r": ratio_r(mb_l1, mb_l2, d),
                "step": steps, "batch_loss": part[:, _LOSS],
                "avg_grad_l1": _running_sum(base["sum_grad_l1"], whole["grad_l1"])[1:] / n,
                "avg_kkt_residual": _running_sum(base["sum_kkt"], whole["kkt_residual"])[1:] / n,
                "tau": tau, "sign_fraction": fraction, "wall_time": times[rows],
                **{k: np.full(len(rows), v) for k, v in self.hparams.items()},
                **self._extras(part),
            }
            if self.scheduled_lr:
                columns["lr"] = np.array([self.logged_lr(int(k)) for k in steps], dtype=np.float64)
        frame = pd.DataFrame(columns)
        frame = frame[schema.ordered(frame.columns, schema.METRICS)]  # the one-run path's order
        previous_rows, previous_tensors = self.previous
        if len(previous_rows):
            frame = pd.concat([previous_rows, frame], ignore_index=True)
        tensors = None
        if self.cfg["log"]["per_tensor"]:
            tensors = train.tensor_rows_frame(steps, self._sums(part), self.problem.param_names,
                                              [d], self.kkt_lambda)
            if len(previous_tensors):
                tensors = pd.concat([previous_tensors, tensors], ignore_index=True)
        elif len(previous_tensors):
            tensors = previous_tensors
        return frame, tensors

    def _extras(self, rec: np.ndarray) -> dict[str, np.ndarray]:
        """The problem's extra metrics and (λ > 0) the face fraction of these record rows."""
        extras = {name: rec[:, _COLUMNS + j] for j, name in enumerate(self.extra_names)}
        if self.kkt_lambda > 0:
            extras["face_fraction"] = rec[:, _FACE]
        return extras

    def _first_loss(self):
        previous = self.previous[0]
        if len(previous):
            return float(previous["loss"].iloc[0])
        rec, _ = self.record()
        rows = self._row_indices(self.state.step)
        return float(rec[rows[0], _LOSS]) if len(rows) else None


def _running_sum(start: float, values: np.ndarray) -> np.ndarray:
    """[start, start+v0, start+v0+v1, ...] added left to right, as the one-run loop's += does."""
    return np.cumsum(np.concatenate([[start], values]))


class Batch:
    """The stacked state of runs that step together (see module docstring).

    `rows` [R, 3, d] holds, per run, ∇f(x_k), x_k and g_k side by side, so the float64 sums
    convert (∇f, g) of a block of columns in one copy (Float64Sums)."""

    def __init__(self, runs: list[BatchedRun], chunk: int = CHUNK_STEPS):
        self.runs = runs
        first = runs[0]
        self.problem = first.problem
        self.device, self.dtype = first.device, first.problem.params[0].dtype
        self.d = first.problem.d
        self.chunk = chunk
        self.extra_names = first.extra_names
        self.threads = int(first.cfg["threads"])
        with torch.no_grad():
            x = torch.stack([r.problem.params[0].detach().reshape(-1) for r in runs])
            m = torch.stack([_or_zeros(r.momentum(), x[0]) for r in runs])
        self._set_rows(x, m)

    def _set_rows(self, x: torch.Tensor, m: torch.Tensor) -> None:
        """Buffers and per-row constants of the runs now in the batch."""
        hyper = [r.hyper_ for r in self.runs]
        def column(key):
            values = torch.tensor([h[key] for h in hyper], dtype=torch.float64)
            return values.to(self.device, self.dtype).reshape(-1, 1)
        def flag(key):
            return torch.tensor([h[key] for h in hyper], device=self.device).reshape(-1, 1)
        self.w1, self.w2 = column("w1"), column("w2")
        self.neg_lr, self.neg_lrwd, self.l2, self.nu = (column(k) for k in ("neg_lr", "neg_lrwd", "l2", "nu"))
        self.always_sign, self.clion_unit, self.clion_coordinate = (
            flag(k) for k in ("always_sign", "clion_unit", "clion_coordinate"))
        self.any_momentum = any(h["w2"] != 0.0 for h in hyper)
        self.any_l2 = any(h["l2"] != 0.0 for h in hyper)
        self.any_decay = any(h["neg_lrwd"] != 0.0 for h in hyper)
        self.all_sign = all(h["always_sign"] for h in hyper)
        self.any_coordinate = any(h["clion_coordinate"] for h in hyper)
        self.coordinate_rows = [h["clion_coordinate"] for h in hyper]
        self.scheduled = [(i, r) for i, r in enumerate(self.runs) if r.scheduled_lr]
        # [2, R] host copy of (−η_k, −η_kλ), written each step for the scheduled rows
        self.step_lrs = np.array([[h["neg_lr"] for h in hyper], [h["neg_lrwd"] for h in hyper]])
        self.generators = [r.generator for r in self.runs]
        rows = len(self.runs)
        self.ahead = self.threads >= 2 and rows * self.d >= AHEAD_ELEMENTS
        # one masked select over [R, d] costs more than R plain ops on rows this long
        self.row_ops = self.device.type == "cpu" and self.d >= ROW_OPS_D
        # torch's threads pay off on large batches only: on a small one each op's fork/join costs
        # more than its arithmetic (R = 45, d = 1000: 1.3 ms a step on one thread, 1.8 on two).
        # Drawing ahead, half the threads draw (a draw is serial per generator) and the rest compute.
        draw_threads = max(1, self.threads // 2) if self.ahead else self.threads
        compute_threads = self.threads - draw_threads if self.ahead else self.threads
        torch.set_num_threads(compute_threads if rows * self.d >= THREADED_ELEMENTS else 1)
        self.noise = NoiseStream(self.problem, self.generators, (rows, self.d), self.dtype,
                                 ahead=self.ahead, threads=draw_threads)
        # the face test λ|x_i| ≥ 1 − tol in x's dtype, as metrics.face_fraction rounds it
        self.face_lambda = column("face_lambda") if any(h["face_lambda"] for h in hyper) else None
        self.rows = torch.empty((rows, 3, self.d), dtype=self.dtype, device=self.device)
        self.full_grad, self.x, self.g = self.rows[:, 0], self.rows[:, 1], self.rows[:, 2]
        self.x.copy_(x)
        self.m = m.clone()
        # Σ∇f·x is needed only for the KKT residual of rows with λ > 0
        self.with_dot = self.face_lambda is not None
        self.float64_sums = Float64Sums(self.rows, self.with_dot)
        # the sums of ∇f_k and g_k on the worker while the update runs (x_k, in the dot, would
        # have to be kept: then they stay here)
        self.async_sums = self.ahead and not self.with_dot and self.device.type == "cpu"
        self.pending_sums = None
        self.c = torch.empty((rows, self.d), dtype=self.dtype, device=self.device)
        self.spare = torch.empty_like(self.c)
        # columns a step does not write keep these: NaN (no τ fraction, no face), Σ∇f·x = 0 (no λ)
        self.record = torch.full((self.chunk, rows, _COLUMNS + len(self.extra_names)), math.nan,
                                 dtype=torch.float64, device=self.device)
        if not self.with_dot:
            self.record[:, :, _DOT] = 0.0
        # each slot's columns, as views made once (at small d a step is bound by op dispatch, and
        # a slice is an op): the sums, ‖x‖∞, f, τ, the sign fraction, the metrics of x
        self.slots = [(r[:, :_SUMS], r[:, _XMAX:_FACE], r[:, _FACE:]) for r in self.record.unbind(0)]
        # a step's ‖x‖∞, f, τ and sign fraction in x's dtype, written by the ops themselves where
        # they can (`out=`), and copied into the record at once (columns _XMAX … _FRACTION)
        self.per_row = torch.full((rows, _FACE - _XMAX), math.nan, dtype=self.dtype, device=self.device)
        self.x_max, self.loss, self.tau, self.fraction = self.per_row.unbind(1)
        self.tau_2d = self.per_row[:, _TAU - _XMAX:_TAU - _XMAX + 1]
        # τ's zero check on the CPU reads the buffer through NumPy (no op, no sync)
        self.tau_numpy = self.tau.numpy() if self.device.type == "cpu" else None
        self.nan = torch.full((rows,), math.nan, dtype=torch.float64, device=self.device)

    def keep(self, keep: list[int]) -> None:
        """Only these rows go on."""
        assert self.noise.idle() and self.pending_sums is None, "rows leave only between steps"
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        x, m = self.x.index_select(0, index), self.m.index_select(0, index)
        self.runs = [self.runs[i] for i in keep]
        self._set_rows(x, m)

    # --- one step of every row (run_batch runs them under torch.no_grad) --------------------
    def measure(self, noisy: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """f(x) [R], ∇f(x) and (when `noisy`) g = ∇f(x) + ξ with this step's draws (into `rows`),
        and ‖x‖∞ [R], both in x's dtype (exact in float64) and in `per_row`; `float64_sums` then
        sums the rows."""
        self.wait_sums()  # the last step's sums read the rows written here
        if self.problem.per_run_rows:
            loss = torch.cat([run.problem.stacked_full_gradient(self.x[i:i + 1], out=self.full_grad[i:i + 1])
                              for i, run in enumerate(self.runs)])
        else:
            loss = self.problem.stacked_full_gradient(self.x, out=self.full_grad)
        if noisy:
            self.problem.add_stacked_noise(self.full_grad, self.noise.take(), out=self.g, x=self.x)
        else:
            self.g.copy_(self.full_grad)  # (its sums are not used)
        # ‖x‖∞ in x's dtype is exact; `spare` is free until the update
        torch.amax(torch.abs(self.x, out=self.spare), dim=1, out=self.x_max)
        self.loss.copy_(loss)
        return self.loss, self.x_max

    def wait_sums(self) -> None:
        """Until the sums of the last step (on the worker, see `step`) are in the record."""
        if self.pending_sums is not None:
            pending, self.pending_sums = self.pending_sums, None
            pending.result()

    def at_x(self) -> list[torch.Tensor]:
        """[R] float64 metrics of x besides the sums: the face fraction (NaN without λ) and the
        problem's extra metrics, in the record's order."""
        if self.face_lambda is None:
            face = self.nan
        else:
            on_face = torch.abs(self.x) * self.face_lambda >= 1.0 - FACE_TOL
            face = on_face.sum(dim=1).to(torch.float64) / self.d
        extras = self.problem.stacked_extra_metrics(self.x) if self.extra_names else {}
        return [face, *(extras[name] for name in self.extra_names)]

    def set_lrs(self, k: int) -> None:
        """−η_k and −η_kλ of step k in every row with an lr schedule: η_k = η·lr_multiplier(k, K,
        schedule) and η_kλ as Python floats, as train.py's loop sets the group's lr and the
        optimizer multiplies it (then rounded to x's dtype, as an op's alpha is)."""
        for i, run in self.scheduled:
            lr = run.base_lrs[0] * lr_multiplier(k, run.K, run.lr_schedule)
            self.step_lrs[0, i], self.step_lrs[1, i] = -lr, -lr * run.hyper_["decay"]
        values = torch.from_numpy(self.step_lrs).to(self.device)
        self.neg_lr.copy_(values[0].reshape(-1, 1))
        self.neg_lrwd.copy_(values[1].reshape(-1, 1))

    def step(self, slot: int, draw_next: bool = False, k: int | None = None) -> None:
        """One step of every row, its record in record[slot]. `draw_next`: the next step's noise
        may be drawn now (no host copy, checkpoint or change of rows before it: the generators'
        states there are then the one-run path's). `k`: the step's index (needed by rows with
        an lr schedule)."""
        if self.scheduled:
            self.set_lrs(k)
        if self.noise.idle():  # this step's draws (unless drawn ahead during the last step)
            self.noise.start()
        if draw_next and self.ahead:
            self.noise.start()
        self.measure()
        sums, per_row_columns, x_columns = self.slots[slot]
        if self.async_sums:  # only the record reads them: on the worker, behind the next draws,
            # while this step updates x (x_k is not in them) and until the next `measure`
            self.pending_sums = _ahead_pool().submit(self.float64_sums, sums)
        else:
            self.float64_sums(sums)
        # the face fraction and extra metrics of x_k, before the update (else the record's NaN)
        at_x = self.at_x() if self.face_lambda is not None or self.extra_names else None
        g = self.g
        c = torch.lerp(self.m, g, self.w1, out=self.c)
        if self.any_l2:
            c.addcmul_(self.x, self.l2)  # SGD's L2 term g + λx (zero for the other rows)
        magnitude = torch.abs(c, out=self.spare)
        # THEORY §7 τ of c; CLion's unit gate
        smallest = torch.amin(magnitude, dim=1, keepdim=True, out=self.tau_2d)
        # τ is the min over c_j ≠ 0: zeros are rare, so the masked pass runs only when one is
        # there (on CPU a look costs no sync; on a GPU always mask, never sync per step)
        if self.tau_numpy is None or np.count_nonzero(self.tau_numpy) < len(self.tau_numpy):
            magnitude.masked_fill_(magnitude == 0, math.inf)
            torch.amin(magnitude, dim=1, keepdim=True, out=self.tau_2d)
        if self.all_sign:
            c.sign_()
            fraction = None  # (the record's NaN)
        else:
            take = unit = self.always_sign | (self.clion_unit & (smallest >= self.nu))  # [R, 1]
            if self.any_coordinate:
                # (a zero c_j is +inf in `magnitude` if masked, so it takes the sign as alone)
                take = take | (self.clion_coordinate & (magnitude >= self.nu))
                fraction = take.expand_as(c).sum(dim=1).to(torch.float32) / self.d
            else:  # a whole row takes the sign or none of it: the fraction is 1 or 0, exactly
                fraction = take.reshape(-1)
            if self.row_ops:  # long rows on the CPU: sign only where it is taken, row by row
                for i, (row, unit_i) in enumerate(zip(c, unit.reshape(-1).tolist())):
                    if self.coordinate_rows[i]:
                        torch.where(take[i], torch.sign(row, out=self.spare[i]), row, out=row)
                    elif unit_i:
                        row.sign_()
            else:
                torch.sign(c, out=self.spare)
                torch.where(take, self.spare, c, out=c)
        if self.any_decay:
            self.x.addcmul_(self.x, self.neg_lrwd)
        self.x.addcmul_(c, self.neg_lr)
        if self.any_momentum:
            self.m.lerp_(g, self.w2)
        if fraction is not None:
            self.fraction.copy_(fraction)
        per_row_columns.copy_(self.per_row)  # (into float64: exact)
        if at_x is not None:
            x_columns.copy_(torch.stack(at_x, dim=1))

    def final(self, rows: list[int]) -> list[dict]:
        """The one-run path's `final` block (metrics at x_K) of these rows."""
        loss, x_max = self.measure(noisy=False)
        sums = self.float64_sums(torch.zeros((len(self.runs), _SUMS), dtype=torch.float64, device=self.device))
        full = torch.cat([sums, x_max.to(torch.float64)[:, None], *(v[:, None] for v in self.at_x())], dim=1)
        full, loss = full[rows].cpu().numpy(), loss[rows].cpu().numpy()
        out = []
        for i, row in enumerate(rows):
            run = self.runs[row]
            rec = np.full((1, _COLUMNS + len(self.extra_names)), math.nan)
            rec[0, :_XMAX + 1] = full[i, :_XMAX + 1]
            rec[0, _FACE:] = full[i, _XMAX + 1:]
            whole = {k: float(v[0, 0]) for k, v in
                     metrics_from_sums(run._sums(rec), self.d, run.kkt_lambda).items()}
            out.append({**whole, "x_linf": float(full[i, _XMAX]), "d": self.d, "loss": float(loss[i]),
                        **{k: float(v[0]) for k, v in run._extras(rec).items()},
                        **run.problem.evaluate()})
        return out


class Float64Sums:
    """Of rows = (∇f, x, g) as [R, 3, d], in float64 into out [R, _SUMS]: Σ|∇f|, Σ|g|, Σ∇f², Σg²,
    and with `with_dot` Σ∇f·x (else that column is left as it is). Block by block through two
    [R, 3, B] float64 buffers: every entry is converted once and summed while in cache, instead
    of passes over a float64 copy; x is converted only for the dot. The blocks' views are made
    once (at small d the step is bound by op dispatch, and slicing is an op)."""

    def __init__(self, rows: torch.Tensor, with_dot: bool, block: int = SUM_BLOCK):
        R, _, d = rows.shape
        self.with_dot = with_dot
        n = 3 if with_dot else 2
        work = torch.empty((2, R, 3, min(d, block)), dtype=torch.float64, device=rows.device)
        self.blocks = []
        for lo in range(0, d, block):
            b = min(block, d - lo)
            part, prod = work[0, :, :n, :b], work[1, :, :n, :b]  # (∇f, g[, x]) and their products
            self.blocks.append((rows[:, ::2, lo:lo + b], rows[:, 1, lo:lo + b], part, part[:, :2],
                                part[:, 2] if with_dot else None, prod, prod[:, :2]))

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        squares = out[:, _SQUARE:_SQUARE + (3 if self.with_dot else 2)]
        abs_sums = out[:, :2]
        for i, (grad_and_g, x, part, pair, x_part, prod, pair_prod) in enumerate(self.blocks):
            pair.copy_(grad_and_g)
            torch.mul(pair, pair, out=pair_prod)
            if x_part is not None:
                x_part.copy_(x)
                torch.mul(pair[:, 0], x_part, out=prod[:, 2])
            if i == 0:  # the first block's sums go straight into `out`
                torch.sum(prod, dim=2, out=squares)
                torch.sum(pair.abs_(), dim=2, out=abs_sums)
            else:
                squares.add_(prod.sum(dim=2))
                abs_sums.add_(pair.abs_().sum(dim=2))
        return out


class NoiseStream:
    """A batch's noise draws in step order: each `start` draws one step's ξ of every row
    (problem.draw_stacked_noise, into a buffer of its own) and `take` hands over the oldest.
    With `ahead`, the draws run on one worker thread, in order (each generator's draws stay
    sequential, so each run's stream is the one it draws alone) and a step's draws overlap the
    step before; else `start` draws at once."""

    def __init__(self, problem, generators, shape, dtype, *, ahead: bool, threads: int):
        self.problem, self.generators, self.ahead, self.threads = problem, generators, ahead, threads
        self.buffers = [torch.empty(shape, dtype=dtype) for _ in range(2 if ahead else 1)]
        self.turn = 0
        self.queue: collections.deque = collections.deque()

    def start(self) -> None:
        assert len(self.queue) < len(self.buffers), "a buffer is drawn into only after it is taken"
        buffer = self.buffers[self.turn]
        self.turn = (self.turn + 1) % len(self.buffers)
        if self.ahead:
            future = _ahead_pool().submit(self.problem.draw_stacked_noise, self.generators, buffer,
                                          self.threads)
        else:
            self.problem.draw_stacked_noise(self.generators, buffer, self.threads)
            future = None
        self.queue.append((future, buffer))

    def take(self) -> torch.Tensor:
        future, buffer = self.queue.popleft()
        if future is not None:
            future.result()
        return buffer

    def idle(self) -> bool:
        return not self.queue


@functools.lru_cache(maxsize=1)
def _ahead_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="lionconv-draw-ahead")


# a forked worker (process_pool) has no thread behind this process's pool: it makes its own
os.register_at_fork(after_in_child=_ahead_pool.cache_clear)


def _or_zeros(m: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if m is None else m.detach().reshape(-1)


@torch.no_grad()  # (once a batch: the step and measure are not decorated, two calls a step)
def run_batch(runs: list[BatchedRun], echo: Callable[[str], None] = print,
              chunk: int = CHUNK_STEPS, progress: bool = True) -> list[dict]:
    """Run `runs` (begun, all at one step) together; returns their summaries in order. With
    `progress`, a bar of the batch's steps as the runs' `progress` option asks."""
    batch = Batch(runs, chunk)
    k = runs[0].start
    summaries: dict[int, dict] = {}
    order = {id(r): i for i, r in enumerate(runs)}
    ckpt_seconds = min(float(r.cfg["checkpoint_seconds"]) for r in runs)
    ends = {r.K for r in runs}
    everies = {int(r.cfg["checkpoint_every"]) for r in runs} - {0}
    t0 = time.perf_counter()
    last_ckpt = time.monotonic()
    ckpt_cost = 0.0
    times = np.empty(chunk)
    filled = 0
    bar = train._progress(runs[0].cfg["progress"] if progress else "off", max(ends), k)
    try:
        while batch.runs:
            times[filled] = time.perf_counter() - t0
            # what follows this step is known before it (the next draws may start only if nothing
            # reads or saves the generators in between)
            ckpt_due = [] if not any((k + 1) % every == 0 for every in everies) else [
                i for i, r in enumerate(batch.runs)
                if r.cfg["checkpoint_every"] and (k + 1) % r.cfg["checkpoint_every"] == 0 and k + 1 < r.K]
            # every checkpoint_seconds, as each run alone would; but writing R runs' tables takes
            # R times as long, so at most 10% of the batch's time goes to timed checkpoints
            timed = ckpt_seconds and time.monotonic() - last_ckpt > max(ckpt_seconds, 10 * ckpt_cost)
            flush = filled + 1 == chunk or k + 1 in ends or bool(ckpt_due) or bool(timed)
            batch.step(filled, draw_next=not flush, k=k)
            filled += 1
            k += 1
            if flush:
                flushed = time.monotonic()
                _flush(batch, filled, times)
                if bar is not None:
                    _advance(bar, filled, batch.runs)
                filled = 0
                keep = []
                ending = [i for i, r in enumerate(batch.runs) if r.steps_done is None and r.K == k]
                finals = dict(zip(ending, batch.final(ending))) if ending else {}
                for i, run in enumerate(batch.runs):
                    if run.steps_done is None and i in finals:
                        run.final, run.steps_done = finals[i], k
                        run.status = "finished"
                        if not math.isfinite(run.final["loss"]):
                            run.status = "diverged"
                            run.first_bad.fill_(run.K)
                    if run.steps_done is not None:
                        # x_K for the summary's training block (a run that stopped early has none)
                        ended = i in finals and run.status == "finished"
                        run.sync_state(batch.x[i] if ended else None, None)
                        summaries[order[id(run)]] = _finish(run, echo)
                        continue
                    if i in ckpt_due or timed:
                        run.sync_state(batch.x[i], batch.m[i] if run.hyper_["w2"] else None)
                        run._checkpoint()
                    keep.append(i)
                if timed:
                    ckpt_cost = time.monotonic() - flushed
                    last_ckpt = time.monotonic()
                if len(keep) < len(batch.runs):
                    batch.keep(keep)
    finally:
        if bar is not None:
            bar.close()
    return [summaries[i] for i in range(len(runs))]


def _advance(bar, steps: int, runs: list[BatchedRun]) -> None:
    """The progress bar `steps` further: a run's loss at its last step, or how many runs go on."""
    bar.update(steps)
    if len(runs) == 1 and runs[0].chunks:
        bar.set_postfix(loss=f"{runs[0].chunks[-1][-1, _LOSS]:.4g}", refresh=False)
    else:
        bar.set_postfix(runs=len(runs), refresh=False)


def _flush(batch: Batch, filled: int, times: np.ndarray) -> None:
    """Copy the record of the last `filled` steps to each run (the host sync) and look for
    divergence."""
    batch.wait_sums()
    record = batch.record[:filled].cpu().numpy()
    for i, run in enumerate(batch.runs):
        if run.steps_done is not None:
            continue
        run.append(record[:, i, :].copy(), times[:filled] + run.base["wall_time"])


def _finish(run: BatchedRun, echo) -> dict:
    summary = run.finish(run.status, run.final if run.status == "finished" else None)
    train.report(summary, run.run_dir, echo)
    return summary


def run_configs(jobs: list[tuple[dict, str]], echo: Callable[[str], None] = print,
                max_elements: int = MAX_ELEMENTS, run_alone: Callable | None = None,
                n_jobs: int = 1, progress: bool = True, pool=None) -> list[dict]:
    """Run the resolved configs `jobs` ((cfg, slug) pairs): the stackable ones batched by
    `group_key` (at most `max_elements` = R·d per batch), the others by `run_alone(index)`
    (default: `train.launch`). Returns the summaries in job order.

    Every config is prepared (validated, folder and config.yaml written, finished runs skipped)
    before any runs, so a bad value stops the sweep before it starts. With `n_jobs` > 1 the
    stackable jobs are dealt into `n_jobs` shares of equal work (Σ K·d), each run by `run_configs`
    in a process of its own (so two dispatch-bound batches use two cores; `pool`: those processes,
    from `process_pool`, else made here); the others then run here."""
    if n_jobs > 1:
        return _run_in_processes(jobs, echo, max_elements, run_alone, n_jobs, pool)
    summaries: dict[int, Any] = {}
    groups: dict[tuple, list[tuple[int, BatchedRun]]] = {}
    alone = []
    try:
        for index, (cfg, slug) in enumerate(jobs):
            if unstackable_reason(cfg) is not None:
                alone.append(index)
                continue
            prepared = train.prepare(cfg, slug, echo, trainer_class=BatchedRun)
            if isinstance(prepared, dict):
                summaries[index] = prepared
                continue
            groups.setdefault(group_key(cfg, prepared.start), []).append((index, prepared))
        for members in groups.values():
            size = max(1, max_elements // members[0][1].problem.d)
            for start in range(0, len(members), size):
                part = members[start:start + size]
                if len(part) > 1:
                    echo(f"batch: {len(part)} runs of {part[0][1].cfg['problem']['name']} "
                         f"(d = {part[0][1].problem.d}) stacked")
                for (index, _), summary in zip(part, _run_or_fail([run for _, run in part], echo, progress)):
                    summaries[index] = summary
        for index in alone:
            summaries[index] = _alone(jobs, index, run_alone, echo)
    finally:  # runs that did not finish (an error, Ctrl-C) give their locks back
        for members in groups.values():
            for _, run in members:
                if getattr(run, "run_lock", None) is not None:
                    run.run_lock.__exit__(None, None, None)
                    run.run_lock = None
    return [summaries[i] for i in range(len(jobs))]


def _run_or_fail(runs: list[BatchedRun], echo, progress: bool = True) -> list[dict]:
    """run_batch, except that an error inside it ends its unfinished runs as 'failed' with the
    message (as train.Trainer.run ends one run; their summaries count the steps up to the last
    host copy of the record, at most CHUNK_STEPS before the error), their locks given back, and
    the sweep goes on."""
    try:
        return run_batch(runs, echo, progress=progress)
    except (KeyboardInterrupt, OSError):
        raise  # stopped by the user / the disk failed: resumable from the last checkpoints
    except Exception as err:
        out = []
        for run in runs:
            if run.run_lock is None:  # it ended (`finish`) before the error
                out.append(runio.read_json(run.run_dir / "summary.json"))
                continue
            run.sync_state(None, None)
            summary = run.fail(err)
            run.run_lock.__exit__(None, None, None)
            run.run_lock = None
            train.report(summary, run.run_dir, echo)
            out.append(summary)
        return out


def launch(cfg: Mapping[str, Any], slug: str = "", echo: Callable[[str], None] = print) -> dict:
    """One run, as `train.launch` runs it (same folder, files, resume and summary): a stackable
    config as a batch of one, whose loop costs a third of train.py's per step at d = 1000 and
    whose files are train.py's (bit-identical but for the float64 norms, summed in another order:
    within 1e-12; tests/test_batched.py); any other config, or any with LIONCONV_ONE_RUN_LOOP=1 in
    the environment, on train.py's loop."""
    if unstackable_reason(cfg) is not None or os.environ.get(ONE_RUN_LOOP, "").lower() not in OFF:
        return train.launch(cfg, slug, echo)
    return run_configs([(cfg, slug)], echo)[0]


def shares(jobs: list[tuple[dict, str]], n: int) -> list[list[int]]:
    """The indices of the stackable `jobs` in `n` shares of about equal work (Σ K·d, largest
    first onto the lightest share), each share a subset of every group (so each share's batches
    stack as the whole sweep's would)."""
    out: list[list[int]] = [[] for _ in range(n)]
    load = [0] * n
    work = [(int(cfg["steps"]) * int(cfg["problem"].get("d") or 1), i)
            for i, (cfg, _) in enumerate(jobs) if unstackable_reason(cfg) is None]
    for cost, i in sorted(work, key=lambda w: (-w[0], w[1])):
        lightest = min(range(n), key=lambda j: (load[j], j))
        out[lightest].append(i)
        load[lightest] += cost
    return [sorted(share) for share in out if share]


def fork_safe(jobs: list[tuple[dict, str]]) -> bool:
    """Whether worker processes for `jobs` may be forked from this one (ready at once, the suite
    already imported) instead of spawned (each imports torch and the suite, ≈3–4 s): on Linux,
    when every job runs on the CPU on one thread. A forked child's first parallel region on two
    or more threads hangs if this process's OpenMP threads had started (GNU OpenMP is not
    fork-safe), and CUDA cannot start in a forked child of a process that started it; on one
    thread no parallel region starts, and the draw/sum worker threads are not used."""
    return (sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
            and all(int(cfg["threads"]) == 1 and str(cfg["device"]) == "cpu" for cfg, _ in jobs))


def process_pool(n: int, fork: bool = False):
    """`n` worker processes for `run_configs(n_jobs=n, pool=)`. `fork` (see `fork_safe`): forked
    from this process. Else spawned and started now: each imports the suite while the caller
    composes the sweep, instead of after it. The caller shuts it down."""
    from concurrent.futures import ProcessPoolExecutor

    if fork:
        sys.stdout.flush()  # (else each child prints this process's buffered output again)
        sys.stderr.flush()
    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork" if fork else "spawn"))
    for _ in range(n):
        pool.submit(_warm)
    return pool


def _warm() -> None:
    """A worker's set-up (its import of this module is the rest)."""
    from lionconv.optim import skip_dynamo_import

    skip_dynamo_import()  # a fresh process that never compiles


def _run_share(jobs: list[tuple[dict, str]], max_elements: int) -> list[dict]:
    _warm()  # (again: a pool's warm-up tasks need not land one on each worker)
    # (no progress bars: the processes would draw theirs over each other on one terminal)
    return run_configs(jobs, echo=lambda message: print(message, flush=True), max_elements=max_elements,
                       progress=False)


def _run_in_processes(jobs, echo, max_elements, run_alone, n_jobs, pool=None) -> list[dict]:
    for cfg, _ in jobs:  # a bad value stops the sweep before any process starts
        train.validate(cfg)
    parts = shares(jobs, n_jobs)
    if len(parts) < 2:  # nothing to share out
        return run_configs(jobs, echo, max_elements, run_alone)
    summaries: dict[int, Any] = {}
    echo(f"batched: {sum(map(len, parts))} stackable runs in {len(parts)} processes")
    own = pool is None
    pool = process_pool(len(parts), fork=fork_safe([jobs[i] for part in parts for i in part])) if own else pool
    try:
        futures = [pool.submit(_run_share, [jobs[i] for i in part], max_elements) for part in parts]
        for part, future in zip(parts, futures):
            summaries.update(zip(part, future.result()))
    finally:
        if own:
            pool.shutdown(cancel_futures=True)
    for index in range(len(jobs)):
        if index not in summaries:
            summaries[index] = _alone(jobs, index, run_alone, echo)
    return [summaries[i] for i in range(len(jobs))]


def _alone(jobs, index: int, run_alone: Callable | None, echo) -> Any:
    """Job `index` on its own: `run_alone(index)` (the launcher's), else `train.launch`."""
    return run_alone(index) if run_alone is not None else train.launch(*jobs[index], echo)
