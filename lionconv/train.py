"""One training run: a problem, an optimizer, and the theory metrics on the full gradient.

Step k (0 ≤ k < K) draws the stochastic gradient g_k at x_k, logs the full-gradient metrics of x_k
if k is on the log grid, then takes the optimizer step to x_{k+1}. The summary's averages are the
theorems' (1/K)Σ_k over the logged steps (exact when every step is logged); its `final` block is
measured once at x_K.

Resumable: every `checkpoint_every` steps (or `checkpoint_seconds`) the metrics so far and a
checkpoint (parameters, optimizer state, RNG state, step, running sums) are written atomically;
running the same config again continues from there and ends bit-identical to an uninterrupted run.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from lionconv import runio, schema
from lionconv.calibrate import resolve_nu
from lionconv.metrics import (GradientSums, face_fraction, minibatch_metrics,
                              per_tensor_metrics, whole_model_metrics)
from lionconv.optim import build_optimizer, unhooked_step
from lionconv.problems import build_problem
from lionconv.schedules import (LION_FAMILY, check_lr_schedule, logged_hparams, lr_multiplier,
                                optimizer_hparams)

DTYPES = {"float32": torch.float32, "float64": torch.float64}  # what the problems support
GRIDS = ("auto", "linear", "geometric")
PROGRESS = ("auto", "on", "off")
DIVERGENCE_CHECK_EVERY = 100  # host checks of the non-finite flag between logged steps
CONSTANT_LR = {"name": "constant", "warmup_steps": 0}  # configs written without lr_schedule
TAU_QUANTILES = (0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0)  # of τ_k over all steps, in the summary
SERIES_CHUNK = 1024  # per-step τ / sign fraction go to the device buffer in one op per chunk
MAX_SEED = 2**63  # seeds are 0 <= seed < 2^63 (torch.Generator and NumPy take them)
# Memory a run needs, estimated before anything is allocated (a design constant, not measured
# per run): parameter-sized float buffers of a closed-form problem (x, grad, m, c, the gate's
# spare, the full gradient, the problem's scales and metric temporaries), and the bytes of one
# logged row held in memory until the tables are written (a dict of ~40 Python floats).
PARAM_SIZED_BUFFERS = 12
ROW_BYTES = 4096


def validate(cfg: Mapping[str, Any]) -> None:
    """One clear ValueError for each top-level setting out of range (before anything is built)."""
    dtype_ok = cfg["dtype"] in DTYPES
    checks = [
        (cfg["steps"] > 0, f"steps must be > 0, got {cfg['steps']}"),
        (dtype_ok, f"Unknown dtype {cfg['dtype']!r}; choose one of {', '.join(DTYPES)}"),
        (0 <= cfg["seed"] < MAX_SEED, f"seed must be in [0, 2^63), got {cfg['seed']}"),
        (cfg["threads"] >= 1, f"threads must be >= 1, got {cfg['threads']}"),
        (cfg["threads"] <= (os.cpu_count() or 1),
         f"threads={cfg['threads']} is more than this machine's {os.cpu_count()} CPUs"),
        (cfg["checkpoint_every"] >= 0, f"checkpoint_every must be >= 0, got {cfg['checkpoint_every']}"),
        (cfg["checkpoint_seconds"] >= 0, f"checkpoint_seconds must be >= 0, got {cfg['checkpoint_seconds']}"),
        (cfg["progress"] in PROGRESS, f"Unknown progress {cfg['progress']!r}; choose one of {', '.join(PROGRESS)}"),
        (cfg["log"]["grid"] in GRIDS, f"Unknown log.grid {cfg['log']['grid']!r}; choose one of {', '.join(GRIDS)}"),
        (cfg["log"]["every"] >= 1, f"log.every must be >= 1, got {cfg['log']['every']}"),
        (cfg["log"]["points"] >= 2, f"log.points must be >= 2, got {cfg['log']['points']}"),
        (bool(str(cfg["out_dir"]).strip()), "out_dir must name a folder, got ''"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    _check_sweep_name(cfg["sweep_name"])
    check_output_dir(cfg["out_dir"])
    device = str(cfg["device"])
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device=cpu")
    try:
        torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"Invalid device {device!r}: {err}") from None
    for group in ("optimizer", "problem", "schedule"):
        check_in_dtype_range(cfg[group], cfg["dtype"], prefix=f"{group}.")
    check_in_dtype_range({"lr_scale": cfg["lr_scale"]}, cfg["dtype"])
    _check_fits_in_memory(cfg)


def _check_sweep_name(sweep_name: str) -> None:
    """Run folders stay under out_dir: a relative path without `..`."""
    path = Path(str(sweep_name))
    if not str(sweep_name).strip() or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"sweep_name={sweep_name!r} is not allowed: it must be a relative folder "
                         "name inside out_dir (no leading '/', no '..')")


def check_output_dir(out_dir) -> None:
    """out_dir is (or can be made) a writable folder: not a file, not under a file, not read-only."""
    path = Path(str(out_dir)).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"out_dir={str(out_dir)!r} is not usable: {str(existing)!r} is a file, "
                         "not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"out_dir={str(out_dir)!r} is not usable: {str(existing)!r} is read-only")


def check_command_line(argv: list[str]) -> str | None:
    """The first problem with the overrides Hydra acts on before the app runs (out_dir,
    sweep_name: the folder it creates; hydra.launcher.n_jobs), as a message; None if fine.
    A multirun value `a,b` is checked for each item."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.lstrip("+~").split("=", 1)
        values = value.split(",") if value else [value]
        try:
            if key == "out_dir":
                for v in values:
                    if not v.strip():
                        raise ValueError("out_dir must name a folder, got ''")
                    check_output_dir(v)
            elif key == "sweep_name":
                for v in values:
                    _check_sweep_name(v)
            elif key == "hydra.launcher.n_jobs":
                for v in values:
                    try:
                        n = int(v)
                    except ValueError:
                        n = 0
                    if n == 0 or n < -(os.cpu_count() or 1):
                        raise ValueError(f"hydra.launcher.n_jobs={v} is not allowed: use 1..N parallel "
                                         "jobs (or -1 for one per core)")
        except ValueError as err:
            return str(err)
    return None


def check_in_dtype_range(values: Mapping[str, Any], dtype: str, prefix: str = "") -> None:
    """Every float in `values` (nested) is finite and representable in the run's dtype: a larger
    one (lr=1e39 in float32) would overflow inside the optimizer step."""
    limit = torch.finfo(DTYPES[dtype]).max
    for key, value in values.items():
        if isinstance(value, Mapping):
            check_in_dtype_range(value, dtype, f"{prefix}{key}.")
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, float) and not (math.isfinite(v) and abs(v) <= limit):
                raise ValueError(f"{prefix}{key}={v!r} is not allowed: it must be a finite number "
                                 f"with |value| <= {limit:.3g} (the largest {dtype})")


def _available_memory(device: str) -> int | None:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def n_logged_steps(K: int, grid: str, every: int, points: int, closed_form: bool) -> int:
    """An upper bound on len(logged_steps(...)), computed without building the grid."""
    if grid == "auto":
        grid, every = ("linear", 1) if closed_form else ("geometric", every)
    return (-(-K // every) if grid == "linear" else min(points, K)) + 2


def _check_fits_in_memory(cfg: Mapping[str, Any]) -> None:
    """Reject a `problem.d` or `steps` whose buffers or logged rows cannot fit, before allocating."""
    available = _available_memory(str(cfg["device"]))
    if available is None:
        return
    itemsize = torch.finfo(DTYPES[cfg["dtype"]]).bits // 8
    d = cfg["problem"].get("d")
    if isinstance(d, int) and d * itemsize * PARAM_SIZED_BUFFERS > available:
        raise ValueError(f"problem.d={d} does not fit: a run needs about "
                         f"{d * itemsize * PARAM_SIZED_BUFFERS / 2**30:.3g} GiB, "
                         f"{available / 2**30:.3g} GiB are available")
    log = cfg["log"]
    closed_form = isinstance(d, int)  # the separable problems: every step logged under grid=auto
    rows = n_logged_steps(int(cfg["steps"]), log["grid"], log["every"], log["points"], closed_form)
    if rows * ROW_BYTES > available:
        raise ValueError(f"steps={cfg['steps']} with log.grid={log['grid']} logs {rows} rows, about "
                         f"{rows * ROW_BYTES / 2**30:.3g} GiB in memory, {available / 2**30:.3g} GiB "
                         "are available: use fewer steps or log.grid=geometric")


def logged_steps(K: int, grid: str, every: int, points: int, closed_form: bool) -> np.ndarray:
    """Sorted steps in [0, K) to log: linear (every `every`) or geometric (`points` of them);
    `auto` is every step when the full gradient is closed-form (cheap), geometric otherwise.
    0 and K−1 are always in."""
    if grid == "auto":
        grid, every = ("linear", 1) if closed_form else ("geometric", every)
    if grid == "linear":
        steps = np.arange(0, K, every)
    else:
        steps = np.round(np.geomspace(1, K, num=min(points, K))).astype(np.int64) - 1
    return np.unique(np.concatenate([steps, [0, K - 1]]))


@dataclass
class LoopState:
    """What a checkpoint must restore besides tensors (all exact Python numbers)."""

    step: int = 0
    sum_grad_l1: float = 0.0
    sum_kkt: float = 0.0
    n_logged: int = 0
    min_loss: float = math.inf
    wall_time: float = 0.0
    rows: list = field(default_factory=list)
    tensor_rows: list = field(default_factory=list)
    snapshots: list = field(default_factory=list)  # (step, flattened x) when log.snapshots


class Trainer:
    """Runs one config in `run_dir`; `run()` returns the summary dict."""

    def __init__(self, cfg: Mapping[str, Any], run_dir: Path, run_id: str):
        validate(cfg)
        self.cfg, self.run_dir, self.run_id = cfg, Path(run_dir), run_id
        torch.set_num_threads(int(cfg["threads"]))
        self.K = int(cfg["steps"])
        self.device = torch.device(cfg["device"])
        self.problem = build_problem(dict(cfg["problem"]), seed=int(cfg["seed"]),
                                     device=self.device, dtype=DTYPES[cfg["dtype"]])
        self.constants = dict(self.problem.constants())
        self.opt_name = cfg["optimizer"]["name"]
        hparams = optimizer_hparams(cfg["optimizer"], cfg["schedule"], K=self.K, d=self.problem.d,
                                    constants=self.constants, lr_scale=float(cfg["lr_scale"]))
        check_in_dtype_range(hparams, cfg["dtype"], prefix="optimizer.")  # after the schedule
        self.generator = torch.Generator().manual_seed(int(cfg["seed"]))
        # CLion: ν as given, or calibrated on a pilot from this start (copies; see calibrate.py).
        self.nu_calibration = (resolve_nu(hparams, self.problem, self.generator, self.K)
                               if self.opt_name == "clion" else None)
        self.lion_family = self.opt_name in LION_FAMILY
        if self.lion_family and cfg["log"]["tau"]:
            hparams["record_tau"] = True
        self.optimizer = build_optimizer(self.opt_name, self.problem.params, **hparams)
        self.hparams = logged_hparams(self.opt_name, hparams)
        # The lr schedule multiplies each group's base lr per step; None: lr constant, never set.
        self.lr_schedule = dict(cfg.get("lr_schedule") or CONSTANT_LR)
        check_lr_schedule(self.lr_schedule, self.K)
        self.scheduled_lr = not (self.lr_schedule["name"] == "constant"
                                 and not self.lr_schedule.get("warmup_steps", 0))
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        # The KKT residual measures the box of Lion's decoupled decay; SGD's decay is an L2 term.
        self.kkt_lambda = self.hparams["weight_decay"] if self.lion_family else 0.0
        closed_form = self.constants.get("kind") == "closed_form"
        log = cfg["log"]
        self.log_steps = logged_steps(self.K, log["grid"], log["every"], log["points"], closed_form)
        self.averages_kind = "exact" if len(self.log_steps) == self.K else "logged_steps"
        self.state = LoopState()
        # Accumulated on the device, read only when the host syncs anyway.
        self.first_bad = torch.tensor(-1, dtype=torch.int64, device=self.device)
        self.sign_fraction_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.min_tau = torch.full((), math.inf, dtype=torch.float64, device=self.device)
        # τ_k and the sign-branch fraction of EVERY step k (NaN where the optimizer has none),
        # on the device, written as tau_steps.parquet. Each step only appends its two 0-dim
        # tensors to a list; one stack per SERIES_CHUNK steps moves them into the buffer
        # (measured: 16 µs per step, against 91 µs for two indexed copies per step).
        self.step_series = torch.full((2, self.K), math.nan, dtype=torch.float64, device=self.device)
        self.series_chunk: tuple[int, list, list] = (0, [], [])  # (first step, taus, fractions)
        self.x0 = _flat_params(self.problem.params)  # built afresh at x_0, also when resuming
        # (row, keys, values): per-step values kept as tensors until the host syncs anyway
        self.pending: list[tuple[dict, tuple[str, ...], torch.Tensor]] = []
        # Per-tensor sums of the logged steps not yet turned into rows (done in one vectorised
        # call when the tables are written, off the per-step path).
        self.pending_tensor_sums: list[tuple[int, np.ndarray]] = []
        # THEORY's τ is of c, logged from the optimizer, so the gradient's τ is not needed.
        self.gradient_sums = GradientSums(self.problem.params, self.kkt_lambda)
        self.t0 = time.perf_counter()

    # --- files ----------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def _flush_series(self) -> None:
        start, taus, fractions = self.series_chunk
        for row, values in ((0, taus), (1, fractions)):
            if values:
                self.step_series[row, start:start + len(values)] = torch.stack(values).to(torch.float64)
        self.series_chunk = (start + max(len(taus), len(fractions)), [], [])

    def _tables(self) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """(metrics rows, per-tensor rows or None) as they go to the parquet files."""
        self._flush_series()
        self._resolve_pending()
        self._resolve_tensor_sums()
        tensor_rows = (_table(self.state.tensor_rows, schema.TENSOR_METRICS)
                       if self.state.tensor_rows else None)
        return _table(self.state.rows, schema.METRICS), tensor_rows

    def logged_lr(self, k: int) -> float:
        """η_k as the metrics table logs it: the schedule's η times lr_multiplier(k, K)."""
        return self.hparams["lr"] * lr_multiplier(k, self.K, self.lr_schedule)

    def _first_loss(self) -> float | None:
        """f(x_0) as logged (None before the first logged step)."""
        return self.state.rows[0]["loss"] if self.state.rows else None

    def _write_tables(self) -> None:
        rows, tensor_rows = self._tables()
        runio.write_parquet(self.run_dir / "metrics.parquet", rows)
        if tensor_rows is not None:
            runio.write_parquet(self.run_dir / "tensor_metrics.parquet", tensor_rows)
        if self.lion_family:
            series = self.step_series[:, :self.state.step].cpu().numpy()
            runio.write_parquet(self.run_dir / "tau_steps.parquet", pd.DataFrame(
                {"step": np.arange(self.state.step), "tau": series[0], "sign_fraction": series[1]}))
        if self.state.snapshots:
            steps, xs = zip(*self.state.snapshots)
            runio.atomic_write(self.run_dir / "snapshots.npz",
                               lambda f: np.savez(f, step=np.array(steps), x=np.stack(xs)))

    def _checkpoint(self) -> None:
        # Tables first: a kill between the two leaves rows past the checkpoint, which resume drops.
        self._write_tables()
        runio.write_torch(self.checkpoint_path, {
            "run_id": self.run_id,
            "params": [p.detach().clone() for p in self.problem.params],
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "problem": self.problem.state_dict(),
            "loop": {k: v for k, v in vars(self.state).items()
                     if k not in ("rows", "tensor_rows", "snapshots")},
            "first_bad": self.first_bad, "sign_fraction_sum": self.sign_fraction_sum,
            "min_tau": self.min_tau, "step_series": self.step_series,
            "nu_calibration": self.nu_calibration,
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
        })

    def _restore(self) -> bool:
        """Continue from checkpoint.pt; False if there is none. Raises ResumeError, before changing
        anything, when the checkpoint is unreadable or the tables it continues are incomplete."""
        if not self.checkpoint_path.exists():
            return False
        try:  # weights_only: a planted checkpoint cannot run code
            ckpt = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
            if not isinstance(ckpt, dict):
                raise ValueError(f"holds a {type(ckpt).__name__}, not a checkpoint dict")
            missing = sorted(CHECKPOINT_KEYS - set(ckpt))
            if missing:
                raise ValueError(f"misses {missing}")
            step = int(ckpt["loop"]["step"])
        except Exception as err:  # torch raises many types for truncated / garbage files
            raise ResumeError(f"{self.checkpoint_path} is unreadable "
                              f"({type(err).__name__}: {_one_line(err)})") from None
        if ckpt["run_id"] != self.run_id:
            raise ResumeError(f"{self.checkpoint_path} belongs to run {ckpt['run_id']}, not {self.run_id}")
        tables = self._read_tables(step)
        with torch.no_grad():
            for p, saved in zip(self.problem.params, ckpt["params"]):
                p.copy_(saved)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.generator.set_state(ckpt["generator"])
        self.problem.load_state_dict(ckpt["problem"])
        for key, value in ckpt["loop"].items():
            setattr(self.state, key, value)
        self.first_bad, self.sign_fraction_sum = ckpt["first_bad"], ckpt["sign_fraction_sum"]
        self.min_tau = ckpt["min_tau"]
        if "step_series" in ckpt:  # checkpoints written before the per-step series lack them
            self.step_series = ckpt["step_series"]
        self.series_chunk = (self.state.step, [], [])
        if ckpt.get("nu_calibration"):  # the ν the run started with (its groups carry it too)
            self.nu_calibration = ckpt["nu_calibration"]
            self.hparams["nu"] = self.nu_calibration["nu"]
        if ckpt["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        self.state.rows, self.state.tensor_rows, self.state.snapshots = tables
        return True

    def _read_tables(self, step: int) -> tuple[list, list, list]:
        """The rows of the logged steps before `step`; ResumeError unless every one is there (a
        vanished or stale metrics.parquet would otherwise publish a truncated run)."""
        expected = self.log_steps[self.log_steps < step].tolist()
        log = self.cfg["log"]
        try:
            rows = _read_rows(self.run_dir / "metrics.parquet", step)
            _check_steps("metrics.parquet", [r["step"] for r in rows], expected)
            tensor_rows = _read_rows(self.run_dir / "tensor_metrics.parquet", step)
            if log["per_tensor"]:
                n = len(self.problem.params)
                steps = [r["step"] for r in tensor_rows[::n]] if len(tensor_rows) == n * len(expected) else []
                _check_steps("tensor_metrics.parquet", steps, expected)
            snapshots = []
            if log["snapshots"]:
                with np.load(self.run_dir / "snapshots.npz") as saved:
                    snapshots = [(int(k), x) for k, x in zip(saved["step"], saved["x"]) if k < step]
                _check_steps("snapshots.npz", [k for k, _ in snapshots], expected)
        except ResumeError:
            raise
        except Exception as err:
            raise ResumeError(f"the tables of {self.run_dir} are unreadable "
                              f"({type(err).__name__}: {_one_line(err)})") from None
        return rows, tensor_rows, snapshots

    # --- metrics --------------------------------------------------------------------------------
    def _resolve_pending(self) -> None:
        """Fill in per-step values (τ, sign fraction, the problem's extra metrics) kept as
        tensors until the host syncs: one copy for all of them."""
        if not self.pending:
            return
        values = torch.cat([v.reshape(-1) for _, _, v in self.pending]).tolist()
        for row, keys, _ in self.pending:
            row.update(zip(keys, values[:len(keys)]))
            values = values[len(keys):]
        self.pending.clear()

    def _resolve_tensor_sums(self) -> None:
        """Turn the per-tensor sums of the logged steps into tensor_metrics rows."""
        if not self.pending_tensor_sums:
            return
        steps, sums = zip(*self.pending_tensor_sums)
        frame = tensor_rows_frame(steps, np.stack(sums), self.problem.param_names,
                                  self.gradient_sums.sizes, self.kkt_lambda)
        self.state.tensor_rows.extend(frame.to_dict("records"))
        self.pending_tensor_sums.clear()

    def _measure(self, step: int | None) -> dict:
        """Full-gradient metrics of the current x (the loss included), plus test metrics; the
        per-tensor sums of a logged `step` are kept for its tensor_metrics rows."""
        loss, grads = self.problem.full_gradient()
        sums = self.gradient_sums(grads)
        whole = whole_model_metrics(sums, self.problem.d, self.kkt_lambda)
        if step is not None and self.cfg["log"]["per_tensor"]:
            self.pending_tensor_sums.append((step, sums))
        extras = dict(self.problem.extra_metrics(self.problem.params))
        if self.kkt_lambda > 0:
            extras["face_fraction"] = face_fraction(self.problem.params, self.kkt_lambda)
        # the loss and the extra metrics come to the host together: one sync
        values = torch.stack([torch.as_tensor(v, device=self.device).detach().to(torch.float64)
                              for v in (loss, *extras.values())]).tolist()
        whole["loss"] = values[0]
        whole.update(zip(extras, values[1:]))
        whole.update(self.problem.evaluate())
        self.state.min_loss = min(self.state.min_loss, whole["loss"])
        return whole

    def _log_step(self, k: int, batch_loss: torch.Tensor) -> dict:
        row = self._measure(k)
        self._resolve_pending()
        row.update(minibatch_metrics([p.grad for p in self.problem.params]))
        st = self.state
        st.n_logged += 1
        st.sum_grad_l1 += row["grad_l1"]
        st.sum_kkt += row["kkt_residual"]
        row.update(step=k, batch_loss=float(batch_loss), avg_grad_l1=st.sum_grad_l1 / st.n_logged,
                   avg_kkt_residual=st.sum_kkt / st.n_logged, tau=math.nan, sign_fraction=math.nan,
                   wall_time=time.perf_counter() - self.t0, **self.hparams)
        if self.scheduled_lr:
            row["lr"] = self.logged_lr(k)
        st.rows.append(row)
        if self.cfg["log"]["snapshots"]:
            st.snapshots.append((k, _flat_params(self.problem.params).cpu().numpy()))
        return row

    def _after_step(self, k: int, row: dict | None) -> None:
        opt = self.optimizer
        tau = getattr(opt, "last_tau", None)
        fraction = getattr(opt, "last_sign_fraction", None)
        start, taus, fractions = self.series_chunk
        if not (taus or fractions):
            self.series_chunk = (k, taus, fractions)
        if tau is not None:
            self.min_tau = torch.minimum(self.min_tau, tau.to(torch.float64))
            taus.append(tau)
        if fraction is not None:
            self.sign_fraction_sum += fraction
            fractions.append(fraction)
        if max(len(taus), len(fractions)) >= SERIES_CHUNK:
            self._flush_series()
        if row is not None and (tau is not None or fraction is not None):
            nan = torch.tensor(math.nan, dtype=torch.float64, device=self.device)
            values = torch.stack([nan if t is None else t.to(torch.float64) for t in (tau, fraction)])
            self.pending.append((row, ("tau", "sign_fraction"), values))

    def _diverged(self, row: dict | None) -> bool:
        if int(self.first_bad) >= 0:
            return True
        if row is not None and not all(math.isfinite(row[k]) for k in ("loss", "grad_l1", "x_linf")):
            self.first_bad.fill_(row["step"])
            return True
        return False

    # --- the loop -------------------------------------------------------------------------------
    def begin(self) -> bool:
        """Restore from the checkpoint if there is one (True), else mark the run as running."""
        resumed = self._restore()
        if not resumed:
            runio.write_json(self.run_dir / "summary.json", self._summary("running"))
        return resumed

    def finish(self, status: str, final: dict | None) -> dict:
        """Write the tables and the summary of a run that ended with `status`; drop the checkpoint."""
        self._write_tables()
        summary = runio.json_safe(self._summary(status, final))  # as the file holds it
        runio.write_json(self.run_dir / "summary.json", summary)
        self.checkpoint_path.unlink(missing_ok=True)
        lock = getattr(self, "run_lock", None)  # held since `prepare` (a batched run)
        if lock is not None:
            lock.__exit__(None, None, None)
            self.run_lock = None
        return summary

    def run(self) -> dict:
        """Train to the end (resuming a checkpoint); an error inside the run is written to the
        summary as status 'failed' with its message, and returned, not raised."""
        self.begin()
        try:
            return self._run()
        except (KeyboardInterrupt, OSError):
            raise  # the user stopped it / the disk failed: resumable from the last checkpoint
        except Exception as err:
            return self.fail(err)

    def fail(self, err: Exception) -> dict:
        """Write the summary of a run that `err` stopped: status 'failed', the error's one line."""
        summary = runio.json_safe({**self._summary("failed"),
                                   "error": f"{type(err).__name__}: {_one_line(err)}"})
        runio.write_json(self.run_dir / "summary.json", summary)
        return summary

    def _run(self) -> dict:
        st = self.state
        log_set = set(self.log_steps.tolist())
        ckpt_every = int(self.cfg["checkpoint_every"])
        ckpt_seconds = float(self.cfg["checkpoint_seconds"])
        last_ckpt = time.monotonic()
        self.t0 = t0 = time.perf_counter() - st.wall_time
        bar = _progress(self.cfg["progress"], self.K, st.step)
        optimizer_step = unhooked_step(self.optimizer)
        status = "finished"
        try:
            for k in range(st.step, self.K):
                if self.scheduled_lr:
                    multiplier = lr_multiplier(k, self.K, self.lr_schedule)
                    for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                        group["lr"] = base * multiplier
                for p in self.problem.params:  # problems accumulate into p.grad; as zero_grad(
                    p.grad = None  # set_to_none=True) without its profiler hook (~20 µs a step)
                batch_loss = self.problem.stochastic_loss(self.generator)
                bad_now = ~torch.isfinite(batch_loss) & (self.first_bad < 0)
                self.first_bad = torch.where(bad_now, k, self.first_bad)
                row = self._log_step(k, batch_loss) if k in log_set else None
                if (row is not None or k % DIVERGENCE_CHECK_EVERY == 0) and self._diverged(row):
                    status = "diverged"
                    break
                optimizer_step()
                self._after_step(k, row)
                st.step = k + 1
                if bar is not None:
                    bar.update(1)
                    if row is not None:
                        bar.set_postfix(loss=f"{row['loss']:.4g}", l1=f"{row['grad_l1']:.3g}", refresh=False)
                now = time.monotonic()
                if (ckpt_every and st.step % ckpt_every == 0) or (ckpt_seconds and now - last_ckpt > ckpt_seconds):
                    if self._diverged(None):
                        status = "diverged"
                        break
                    st.wall_time = time.perf_counter() - t0
                    self._checkpoint()
                    last_ckpt = now
        finally:
            if bar is not None:
                bar.close()
        st.wall_time = time.perf_counter() - t0
        final = None
        if status == "finished":
            final = self._measure(None)
            if not math.isfinite(final["loss"]):
                status = "diverged"
                self.first_bad.fill_(self.K)
            elif self.cfg["log"]["snapshots"]:  # x_K too: the stability probe's x_T
                st.snapshots.append((self.K, _flat_params(self.problem.params).cpu().numpy()))
        return self.finish(status, final)

    def _summary(self, status: str, final: dict | None = None) -> dict:
        """summary.json; status is 'running', 'finished', 'diverged' or 'failed'."""
        st = self.state
        first_bad = int(self.first_bad)
        constants = dict(self.constants)
        first_loss = self._first_loss()
        if math.isfinite(st.min_loss) and first_loss is not None:
            constants["Delta_seen"] = first_loss - st.min_loss
        min_tau = float(self.min_tau)
        self._flush_series()
        taus = self.step_series[0, :st.step].cpu().numpy()
        taus = taus[np.isfinite(taus)]
        return {
            "status": status, "diverged_step": first_bad if status == "diverged" else None,
            "run_id": self.run_id, "optimizer": self.opt_name, "problem": self.cfg["problem"]["name"],
            "d": self.problem.d, "K": self.K, "seed": int(self.cfg["seed"]), **self.hparams,
            "schedule": self.cfg["schedule"]["name"], "lr_schedule": self.lr_schedule,
            "steps_done": st.step,
            "averages": {"grad_l1": st.sum_grad_l1 / st.n_logged if st.n_logged else None,
                         "kkt_residual": st.sum_kkt / st.n_logged if st.n_logged else None,
                         "kind": self.averages_kind, "n": st.n_logged},
            "final": final, "constants": constants,
            "min_tau": min_tau if math.isfinite(min_tau) else None,
            # quantiles of τ_k over all steps (THEORY §7: "per step and the minimum over the run")
            "tau_quantiles": ({str(q): float(v) for q, v in zip(TAU_QUANTILES, np.quantile(taus, TAU_QUANTILES))}
                              if taus.size else None),
            "nu_calibration": self.nu_calibration,
            "training_set": self.problem.training_set(),
            # inputs of theory.did_train (THEORY §7: verdicts are n.a. for runs that did not train)
            "training": {"initial_loss": self._first_loss(),
                         "final_loss": final["loss"] if final else None,
                         "distance_from_start": (float(torch.linalg.vector_norm(
                             _flat_params(self.problem.params) - self.x0)) if final else None)},
            "mean_sign_fraction": (float(self.sign_fraction_sum) / st.step
                                   if self.opt_name == "clion" and st.step else None),
            "wall_time_s": st.wall_time,
            "provenance": runio.provenance(str(self.device)),
        }


def _table(rows: list[dict], fields) -> pd.DataFrame:
    """Rows as a table with the columns in docs/RUN_LAYOUT.md's order (lionconv/schema.py)."""
    frame = pd.DataFrame(rows)
    return frame[schema.ordered(frame.columns, fields)]


def _flat_params(params) -> torch.Tensor:
    """All parameters as one float64 vector (a copy), on their device."""
    return torch.cat([p.detach().reshape(-1).to(torch.float64) for p in params])


CHECKPOINT_KEYS = frozenset({"run_id", "params", "optimizer", "generator", "problem", "loop",
                             "first_bad", "sign_fraction_sum", "min_tau", "cuda_rng"})


class ResumeError(RuntimeError):
    """A checkpoint that cannot be continued (unreadable, or its tables are incomplete)."""


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


def _check_steps(name: str, got: list, expected: list) -> None:
    if [int(k) for k in got] != expected:
        have = len(got)
        raise ResumeError(f"{name} holds {have} of the {len(expected)} logged steps before the "
                          "checkpoint (missing or stale)")


def tensor_rows_frame(steps, sums: np.ndarray, names: list[str], sizes, kkt_lambda: float) -> pd.DataFrame:
    """tensor_metrics rows of the logged `steps` from their stacked (S, 5, n) sums tables."""
    columns = per_tensor_metrics(sums, sizes, kkt_lambda)
    return pd.DataFrame({"tensor": list(names) * len(steps), **columns,
                         "step": np.repeat(np.asarray(steps, dtype=np.int64), len(names))})


def _read_rows(path: Path, before_step: int) -> list[dict]:
    if not path.exists():
        return []
    frame = pd.read_parquet(path)
    return frame[frame["step"] < before_step].to_dict("records")


def _progress(mode: str, total: int, initial: int):
    if mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, dynamic_ncols=True, mininterval=0.5, unit="step")


def run_folder(cfg: Mapping[str, Any], slug: str = "") -> tuple[Path, str]:
    """`out_dir/sweep_name/<slug>__<config hash>`: the hash makes a changed config a new folder.

    The slug (Hydra's override_dirname) and the hash both leave out runio.BOOKKEEPING_KEYS, so a
    run re-launched with other bookkeeping (threads, checkpointing) finds its own folder."""
    run_id = runio.run_identity(cfg)
    slug = cfg.get("name") or slug or "run"
    slug = "".join(c if c.isalnum() or c in "=,.-_+" else "_" for c in slug)[:120]
    return Path(cfg["out_dir"]) / cfg["sweep_name"] / f"{slug}__{run_id}", run_id


def _done_summary(run_dir: Path, echo) -> dict | None:
    """The summary of a finished/diverged run in run_dir, else None. A summary.json that is not
    a JSON object is moved aside with the whole folder (the run then starts afresh)."""
    path = run_dir / "summary.json"
    if not path.exists():
        return None
    try:
        summary = runio.read_json(path)
        if not isinstance(summary, dict):
            raise ValueError(f"holds {type(summary).__name__}, not an object")
    except (ValueError, UnicodeDecodeError) as err:
        aside = runio.move_aside(run_dir, "broken")
        echo(f"restart: {path} is unreadable ({_one_line(err)}); the old run is kept at {aside}")
        return None
    return summary if summary.get("status") in runio.DONE_STATUSES else None


def _write_config(run_dir: Path, cfg: Mapping[str, Any], run_id: str) -> None:
    import yaml
    from omegaconf._utils import get_omega_conf_dumper

    # OmegaConf.to_yaml's text without building a DictConfig first (3x faster; a sweep of short
    # runs pays it per run)
    runio.write_text(run_dir / "config.yaml", yaml.dump(
        {**cfg, "run_id": run_id}, Dumper=get_omega_conf_dumper(), default_flow_style=False,
        allow_unicode=True, sort_keys=False))


def _check_recorded_config(run_dir: Path, cfg: Mapping[str, Any], run_id: str, echo) -> None:
    """Say so when the config.yaml on disk no longer has the identity in its folder name (a
    hand edit), and rewrite it from the config that has that identity."""
    path = run_dir / "config.yaml"
    if not path.exists():
        return
    import yaml

    try:
        recorded = yaml.safe_load(path.read_text())
        recorded_id = runio.run_identity(recorded) if isinstance(recorded, dict) else None
    except (yaml.YAMLError, UnicodeDecodeError):
        recorded_id = None
    if recorded_id != run_id:
        echo(f"warning: {path} does not match run {run_id} (edited by hand?); "
             "rewriting it from the config being run")
        _write_config(run_dir, cfg, run_id)


def launch(cfg: Mapping[str, Any], slug: str = "", echo=print) -> dict:
    """Run `cfg` (a resolved plain dict) unless its folder already holds a finished run.

    The config is validated and the run built before the disk is looked at. The run folder is
    locked (runio.lock_run_dir) for the whole run: a run held by another live process is skipped
    (the returned summary has status 'locked'). An unfinished folder is resumed from its
    checkpoint, or, when that checkpoint or the tables it continues are unreadable or
    incomplete, moved aside (`<name>.broken-<time>`) and run afresh; `restart=True` moves an
    existing folder aside (`<name>.replaced-<time>`) — nothing already written is deleted.
    """
    validate(cfg)
    run_dir, run_id = run_folder(cfg, slug)
    trainer = Trainer(cfg, run_dir, run_id)  # validates and builds before anything is written
    try:
        with runio.lock_run_dir(run_dir):
            done = _open_folder(cfg, trainer, echo)
            if done is not None:
                return done
            try:
                summary = trainer.run()
            except ResumeError as err:
                trainer = _restart_broken(cfg, trainer, err, echo)
                summary = trainer.run()
            report(summary, run_dir, echo)
            return summary
    except runio.RunLocked as err:
        echo(f"skip: {err}")
        return _locked_summary(run_id)


def prepare(cfg: Mapping[str, Any], slug: str = "", echo=print, trainer_class=None) -> "Trainer | dict":
    """`launch` up to the loop, for a launcher that runs the loop itself (lionconv.batched): the
    summary of a run that is done or locked by another process, or a Trainer (`trainer_class`, a
    subclass) that holds its run's lock (released by `finish`), whose folder holds the config, and
    that has begun (restored from its checkpoint, or a broken folder moved aside and begun afresh)."""
    validate(cfg)
    run_dir, run_id = run_folder(cfg, slug)
    make = trainer_class or Trainer
    trainer = make(cfg, run_dir, run_id)  # validates and builds before anything is written
    lock = runio.lock_run_dir(run_dir)
    try:
        lock.__enter__()
    except runio.RunLocked as err:
        echo(f"skip: {err}")
        return _locked_summary(run_id)
    try:
        done = _open_folder(cfg, trainer, echo)
        if done is not None:
            lock.__exit__(None, None, None)
            return done
        try:
            trainer.begin()
        except ResumeError as err:
            trainer = _restart_broken(cfg, trainer, err, echo, make)
            trainer.begin()
    except BaseException:
        lock.__exit__(None, None, None)
        raise
    trainer.run_lock = lock
    return trainer


def _locked_summary(run_id: str) -> dict:
    return {"status": "locked", "run_id": run_id, "averages": {}, "diverged_step": None}


def _open_folder(cfg: Mapping[str, Any], trainer: Trainer, echo) -> dict | None:
    """With the run's lock held: the summary of a finished run (skip), else the folder made ready
    (a restart moves the old one aside; config.yaml written; torn temp files removed) and None."""
    run_dir, run_id = trainer.run_dir, trainer.run_id
    if run_dir.exists() and cfg["restart"]:
        aside = runio.move_aside(run_dir, "replaced")
        echo(f"restart: moved the old run to {aside}")
    else:
        _check_recorded_config(run_dir, cfg, run_id, echo)
        summary = _done_summary(run_dir, echo)
        if summary is not None:
            echo(f"skip: {run_dir} is already {summary['status']}")
            return summary
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_config(run_dir, cfg, run_id)
    runio.remove_torn_temps(run_dir)  # writes a kill interrupted before their rename
    resuming = trainer.checkpoint_path.exists()
    echo(f"{'resume' if resuming else 'run'}: {run_dir}")
    return None


def _restart_broken(cfg, trainer: Trainer, err: Exception, echo, make=None) -> Trainer:
    """The folder of a run whose checkpoint or tables could not be continued, moved aside; a new
    trainer for a fresh start in a fresh folder."""
    run_dir, run_id = trainer.run_dir, trainer.run_id
    aside = runio.move_aside(run_dir, "broken")
    echo(f"restart: {err}; the old run is kept at {aside}")
    trainer = (make or Trainer)(cfg, run_dir, run_id)
    run_dir.mkdir(parents=True)
    _write_config(run_dir, cfg, run_id)
    return trainer


def report(summary: dict, run_dir: Path, echo=print) -> None:
    """The one line a launcher prints when a run ends."""
    if summary["status"] == "failed":
        echo(f"failed: {run_dir.name}: {summary['error']}")
        return
    echo(f"{summary['status']}: {run_dir.name}  avg ‖∇f‖₁ = {summary['averages']['grad_l1']}"
         + (f"  (diverged at step {summary['diverged_step']})" if summary["diverged_step"] is not None else ""))
