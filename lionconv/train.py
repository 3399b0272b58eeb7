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

from lionconv import runio
from lionconv.metrics import (GradientSums, minibatch_metrics, per_tensor_metrics,
                              whole_model_metrics)
from lionconv.optim import build_optimizer
from lionconv.problems import build_problem
from lionconv.schedules import LION_FAMILY, logged_hparams, optimizer_hparams

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
GRIDS = ("auto", "linear", "geometric")
PROGRESS = ("auto", "on", "off")
DIVERGENCE_CHECK_EVERY = 100  # host checks of the non-finite flag between logged steps


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
        self.lion_family = self.opt_name in LION_FAMILY
        if self.lion_family and cfg["log"]["tau"]:
            hparams["record_tau"] = True
        self.optimizer = build_optimizer(self.opt_name, self.problem.params, **hparams)
        self.hparams = logged_hparams(self.opt_name, hparams)
        # The KKT residual measures the box of Lion's decoupled decay; SGD's decay is an L2 term.
        self.kkt_lambda = self.hparams["weight_decay"] if self.lion_family else 0.0
        self.generator = torch.Generator().manual_seed(int(cfg["seed"]))
        closed_form = self.constants.get("kind") == "closed_form"
        log = cfg["log"]
        self.log_steps = logged_steps(self.K, log["grid"], log["every"], log["points"], closed_form)
        self.averages_kind = "exact" if len(self.log_steps) == self.K else "logged_steps"
        self.state = LoopState()
        # Accumulated on the device, read only when the host syncs anyway.
        self.first_bad = torch.tensor(-1, dtype=torch.int64, device=self.device)
        self.sign_fraction_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.min_tau = torch.full((), math.inf, dtype=torch.float64, device=self.device)
        self.pending: list[tuple[dict, torch.Tensor]] = []
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

    def _tables(self) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """(metrics rows, per-tensor rows or None) as they go to the parquet files."""
        self._resolve_pending()
        self._resolve_tensor_sums()
        tensor_rows = pd.DataFrame(self.state.tensor_rows) if self.state.tensor_rows else None
        return pd.DataFrame(self.state.rows), tensor_rows

    def _first_loss(self) -> float | None:
        """f(x_0) as logged (None before the first logged step)."""
        return self.state.rows[0]["loss"] if self.state.rows else None

    def _write_tables(self) -> None:
        rows, tensor_rows = self._tables()
        runio.write_parquet(self.run_dir / "metrics.parquet", rows)
        if tensor_rows is not None:
            runio.write_parquet(self.run_dir / "tensor_metrics.parquet", tensor_rows)
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
            "min_tau": self.min_tau,
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
        """Fill in per-step values (τ, sign fraction) kept as tensors until the host syncs."""
        for row, values in self.pending:
            row["tau"], row["sign_fraction"] = values.tolist()
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
        whole["loss"] = float(loss)
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
        st.rows.append(row)
        if self.cfg["log"]["snapshots"]:
            flat = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in self.problem.params])
            st.snapshots.append((k, flat.cpu().numpy()))
        return row

    def _after_step(self, row: dict | None) -> None:
        opt = self.optimizer
        tau = getattr(opt, "last_tau", None)
        fraction = getattr(opt, "last_sign_fraction", None)
        if tau is not None:
            self.min_tau = torch.minimum(self.min_tau, tau.to(torch.float64))
        if fraction is not None:
            self.sign_fraction_sum += fraction
        if row is not None and (tau is not None or fraction is not None):
            nan = torch.tensor(math.nan, dtype=torch.float64, device=self.device)
            values = torch.stack([nan if t is None else t.to(torch.float64) for t in (tau, fraction)])
            self.pending.append((row, values))

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
        return summary

    def run(self) -> dict:
        self.begin()
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
                for p in self.problem.params:  # problems accumulate into p.grad; as zero_grad(
                    p.grad = None  # set_to_none=True) without its profiler hook (~20 µs a step)
                batch_loss = self.problem.stochastic_loss(self.generator)
                bad_now = ~torch.isfinite(batch_loss) & (self.first_bad < 0)
                self.first_bad = torch.where(bad_now, k, self.first_bad)
                row = self._log_step(k, batch_loss) if k in log_set else None
                if (row is not None or k % DIVERGENCE_CHECK_EVERY == 0) and self._diverged(row):
                    status = "diverged"
                    break
                self.optimizer.step()
                self._after_step(row)
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
        return self.finish(status, final)

    def _summary(self, status: str, final: dict | None = None) -> dict:
        st = self.state
        first_bad = int(self.first_bad)
        constants = dict(self.constants)
        first_loss = self._first_loss()
        if math.isfinite(st.min_loss) and first_loss is not None:
            constants["Delta_seen"] = first_loss - st.min_loss
        min_tau = float(self.min_tau)
        return {
            "status": status, "diverged_step": first_bad if status == "diverged" else None,
            "run_id": self.run_id, "optimizer": self.opt_name, "problem": self.cfg["problem"]["name"],
            "d": self.problem.d, "K": self.K, "seed": int(self.cfg["seed"]), **self.hparams,
            "schedule": self.cfg["schedule"]["name"], "steps_done": st.step,
            "averages": {"grad_l1": st.sum_grad_l1 / st.n_logged if st.n_logged else None,
                         "kkt_residual": st.sum_kkt / st.n_logged if st.n_logged else None,
                         "kind": self.averages_kind, "n": st.n_logged},
            "final": final, "constants": constants,
            "min_tau": min_tau if math.isfinite(min_tau) else None,
            "mean_sign_fraction": (float(self.sign_fraction_sum) / st.step
                                   if self.opt_name == "clion" and st.step else None),
            "wall_time_s": st.wall_time,
            "provenance": runio.provenance(str(self.device)),
        }


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
    trainer = prepare(cfg, slug, echo)
    if isinstance(trainer, dict):  # already done
        return trainer
    summary = trainer.run()
    report(summary, trainer.run_dir, echo)
    return summary


def prepare(cfg: Mapping[str, Any], slug: str = "", echo=print, trainer_class=None) -> "Trainer | dict":
    """`launch` up to the loop: the finished run's summary, or a Trainer (`trainer_class`, a
    subclass, for the batched loop) whose folder holds the config (built and validated before
    anything is written)."""
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
    trainer = (trainer_class or Trainer)(cfg, run_dir, run_id)  # validates and builds before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    import yaml
    from omegaconf._utils import get_omega_conf_dumper

    # OmegaConf.to_yaml's text without building a DictConfig first (3x faster; a sweep of short
    # runs pays it per run)
    runio.write_text(run_dir / "config.yaml", yaml.dump(
        {**cfg, "run_id": run_id}, Dumper=get_omega_conf_dumper(), default_flow_style=False,
        allow_unicode=True, sort_keys=False))
    for torn in run_dir.glob(".*.tmp"):  # a write that a kill interrupted before its rename
        torn.unlink()
    resuming = trainer.checkpoint_path.exists()
    echo(f"{'resume' if resuming else 'run'}: {run_dir}")
    return trainer


def report(summary: dict, run_dir: Path, echo=print) -> None:
    """The one line a launcher prints when a run ends."""
    echo(f"{summary['status']}: {run_dir.name}  avg ‖∇f‖₁ = {summary['averages']['grad_l1']}"
         + (f"  (diverged at step {summary['diverged_step']})" if summary["diverged_step"] is not None else ""))
