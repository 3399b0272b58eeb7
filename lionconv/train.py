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
from lionconv.optim import build_optimizer
from lionconv.problems import build_problem
from lionconv.schedules import (LION_FAMILY, check_lr_schedule, logged_hparams, lr_multiplier,
                                optimizer_hparams)

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
GRIDS = ("auto", "linear", "geometric")
PROGRESS = ("auto", "on", "off")
DIVERGENCE_CHECK_EVERY = 100  # host checks of the non-finite flag between logged steps
CONSTANT_LR = {"name": "constant", "warmup_steps": 0}  # configs written without lr_schedule
TAU_QUANTILES = (0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0)  # of τ_k over all steps, in the summary
SERIES_CHUNK = 1024  # per-step τ / sign fraction go to the device buffer in one op per chunk


def validate(cfg: Mapping[str, Any]) -> None:
    """One clear ValueError for each top-level setting out of range."""
    checks = [
        (cfg["steps"] > 0, f"steps must be > 0, got {cfg['steps']}"),
        (cfg["dtype"] in DTYPES, f"Unknown dtype {cfg['dtype']!r}; choose one of {', '.join(DTYPES)}"),
        (cfg["threads"] >= 1, f"threads must be >= 1, got {cfg['threads']}"),
        (cfg["checkpoint_every"] >= 0, f"checkpoint_every must be >= 0, got {cfg['checkpoint_every']}"),
        (cfg["checkpoint_seconds"] >= 0, f"checkpoint_seconds must be >= 0, got {cfg['checkpoint_seconds']}"),
        (cfg["progress"] in PROGRESS, f"Unknown progress {cfg['progress']!r}; choose one of {', '.join(PROGRESS)}"),
        (cfg["log"]["grid"] in GRIDS, f"Unknown log.grid {cfg['log']['grid']!r}; choose one of {', '.join(GRIDS)}"),
        (cfg["log"]["every"] >= 1, f"log.every must be >= 1, got {cfg['log']['every']}"),
        (cfg["log"]["points"] >= 2, f"log.points must be >= 2, got {cfg['log']['points']}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    device = str(cfg["device"])
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device=cpu")
    try:
        torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"Invalid device {device!r}: {err}") from None


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

    def _write_tables(self) -> None:
        self._flush_series()
        self._resolve_pending()
        self._resolve_tensor_sums()
        runio.write_parquet(self.run_dir / "metrics.parquet", _table(self.state.rows, schema.METRICS))
        if self.state.tensor_rows:
            runio.write_parquet(self.run_dir / "tensor_metrics.parquet",
                                _table(self.state.tensor_rows, schema.TENSOR_METRICS))
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
        if not self.checkpoint_path.exists():
            return False
        ckpt = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        if ckpt["run_id"] != self.run_id:
            raise RuntimeError(f"{self.checkpoint_path} belongs to run {ckpt['run_id']}, not {self.run_id}")
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
        step = self.state.step
        self.state.rows = _read_rows(self.run_dir / "metrics.parquet", step)
        self.state.tensor_rows = _read_rows(self.run_dir / "tensor_metrics.parquet", step)
        if (self.run_dir / "snapshots.npz").exists():
            with np.load(self.run_dir / "snapshots.npz") as saved:
                self.state.snapshots = [(int(k), x) for k, x in zip(saved["step"], saved["x"]) if k < step]
        return True

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
        names = self.problem.param_names
        columns = per_tensor_metrics(np.stack(sums), self.gradient_sums.sizes,
                                     self.kkt_lambda)
        frame = pd.DataFrame({"tensor": names * len(steps), **columns,
                              "step": np.repeat(np.array(steps, dtype=np.int64), len(names))})
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
            row["lr"] = self.hparams["lr"] * lr_multiplier(k, self.K, self.lr_schedule)
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
    def run(self) -> dict:
        resumed = self._restore()
        if not resumed:
            runio.write_json(self.run_dir / "summary.json", self._summary("running"))
        st = self.state
        log_set = set(self.log_steps.tolist())
        ckpt_every = int(self.cfg["checkpoint_every"])
        ckpt_seconds = float(self.cfg["checkpoint_seconds"])
        last_ckpt = time.monotonic()
        self.t0 = t0 = time.perf_counter() - st.wall_time
        bar = _progress(self.cfg["progress"], self.K, st.step)
        status = "finished"
        try:
            for k in range(st.step, self.K):
                if self.scheduled_lr:
                    multiplier = lr_multiplier(k, self.K, self.lr_schedule)
                    for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                        group["lr"] = base * multiplier
                self.optimizer.zero_grad(set_to_none=True)  # problems accumulate into p.grad
                batch_loss = self.problem.stochastic_loss(self.generator)
                bad_now = ~torch.isfinite(batch_loss) & (self.first_bad < 0)
                self.first_bad = torch.where(bad_now, k, self.first_bad)
                row = self._log_step(k, batch_loss) if k in log_set else None
                if (row is not None or k % DIVERGENCE_CHECK_EVERY == 0) and self._diverged(row):
                    status = "diverged"
                    break
                self.optimizer.step()
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
        self._write_tables()
        summary = runio.json_safe(self._summary(status, final))  # as the file holds it
        runio.write_json(self.run_dir / "summary.json", summary)
        self.checkpoint_path.unlink(missing_ok=True)
        return summary

    def _summary(self, status: str, final: dict | None = None) -> dict:
        st = self.state
        first_bad = int(self.first_bad)
        constants = dict(self.constants)
        if math.isfinite(st.min_loss) and st.rows:
            constants["Delta_seen"] = st.rows[0]["loss"] - st.min_loss
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
            "training": {"initial_loss": st.rows[0]["loss"] if st.rows else None,
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
    """`out_dir/sweep_name/<slug>__<config hash>`: the hash makes a changed config a new folder."""
    run_id = runio.run_identity(cfg)
    slug = cfg.get("name") or slug or "run"
    slug = "".join(c if c.isalnum() or c in "=,.-_+" else "_" for c in slug)[:120]
    return Path(cfg["out_dir"]) / cfg["sweep_name"] / f"{slug}__{run_id}", run_id


def launch(cfg: Mapping[str, Any], slug: str = "", echo=print) -> dict:
    """Run `cfg` (a resolved plain dict) unless its folder already holds a finished run.

    An unfinished folder is resumed from its checkpoint; `restart=True` moves an existing folder
    aside (`<name>.replaced-<time>`) and starts afresh — nothing already written is deleted.
    """
    run_dir, run_id = run_folder(cfg, slug)
    if run_dir.exists() and cfg["restart"]:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
        run_dir.rename(aside)
        echo(f"restart: moved the old run to {aside}")
    elif (run_dir / "summary.json").exists():
        try:
            summary = runio.read_json(run_dir / "summary.json")
        except ValueError:
            summary = {"status": "unreadable"}
        if summary.get("status") in runio.DONE_STATUSES:
            echo(f"skip: {run_dir} is already {summary['status']}")
            return summary
    trainer = Trainer(cfg, run_dir, run_id)  # validates and builds before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    from omegaconf import OmegaConf

    runio.write_text(run_dir / "config.yaml", OmegaConf.to_yaml({**cfg, "run_id": run_id}))
    for torn in run_dir.glob(".*.tmp"):  # a write that a kill interrupted before its rename
        torn.unlink()
    resuming = trainer.checkpoint_path.exists()
    echo(f"{'resume' if resuming else 'run'}: {run_dir}")
    summary = trainer.run()
    echo(f"{summary['status']}: {run_dir.name}  avg ‖∇f‖₁ = {summary['averages']['grad_l1']}"
         + (f"  (diverged at step {summary['diverged_step']})" if summary["diverged_step"] is not None else ""))
    return summary
