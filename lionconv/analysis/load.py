"""Read a sweep folder into one table: one row per run, flattened config + summary + per-run metric stats.

A run folder holds config.yaml, summary.json, metrics.parquet (and tensor_metrics.parquet);
see docs/RUN_LAYOUT.md (lionconv/schema.py). Runs that cannot enter a fit are never an error: they get
usable=False and a RunProblem naming them and saying why:
  diverged    summary status "diverged"
  failed      summary status "failed" (an error inside the run; the summary holds its message)
  unfinished  no summary.json yet, or status "running"
  broken      unreadable/truncated summary.json or config.yaml, missing or corrupt metrics.parquet,
              a summary without averages, an unknown status, a config.yaml whose identity is not
              the run_id it records (edited by hand)
  duplicate   a second folder with the run identity of a run already loaded (kept: the first
              usable one in path order)
Folders moved aside (`<run>.replaced-<time>`, `<run>.broken-<time>`, runio.is_aside) are never read.
metrics.parquet is read once per run here, only the few columns the per-run statistics need
(pyarrow column projection); the full table is read lazily by load_metrics (cached).
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from lionconv import runio, schema

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
LION_FAMILY = ("lion", "clion", "signsgd")
# per-run statistics taken from metrics.parquet in load_runs (missing columns give NaN)
_STAT_COLUMNS = schema.names(schema.METRICS, "step", "grad_l2", "x_linf", "l1_l2", "mb_l1_l2",
                             "ratio_r", "mb_ratio_r")


# RunProblem kinds, in the order the report's status table lists them
PROBLEM_KINDS = ("diverged", "failed", "unfinished", "broken", "duplicate")


class RunDataError(ValueError):
    """A run's files exist but cannot be read."""


@dataclass(frozen=True)
class RunProblem:
    """A run left out of the fits: where it is, which kind of problem, and why."""
    run: str                 # folder relative to the sweep root
    kind: str                # "diverged" | "failed" | "unfinished" | "broken" | "duplicate"
    reason: str
    optimizer: str | None = None


def find_run_dirs(root) -> list[Path]:
    """Folders under root holding summary.json or config.yaml (hidden folders such as .hydra, and
    folders moved aside, skipped).

    A folder that only has config.yaml and contains other run folders is a sweep-level config,
    not a run.
    """
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not runio.is_aside(d))
        if "summary.json" in filenames or "config.yaml" in filenames:
            found.append((Path(dirpath), "summary.json" in filenames))
    names = [str(p) for p, _ in found]
    return [p for p, has_summary in found
            if has_summary or not any(q.startswith(str(p) + os.sep) for q in names)]


def _flatten(d, prefix="cfg.") -> dict:
    """{'optimizer': {'lr': 1}} -> {'cfg.optimizer.lr': 1}; lists become tuples (hashable)."""
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _canonical(cfg: dict, summary: dict) -> dict:
    """Named columns the claims use; summary.json first, config.yaml as the fallback."""
    c = lambda key: cfg.get(f"cfg.{key}")  # noqa: E731
    betas = c("optimizer.betas") or (None, None)
    pick = lambda key, fallback: summary[key] if summary.get(key) is not None else fallback  # noqa: E731
    row = {
        "optimizer": pick("optimizer", c("optimizer.name")),
        "problem": pick("problem", c("problem.name")),
        "d": _float(pick("d", c("problem.d"))),
        "K": _float(pick("K", c("steps"))),
        "seed": pick("seed", c("seed")),
        "lr": _float(pick("lr", c("optimizer.lr"))),
        "beta1": _float(pick("beta1", betas[0])),
        "beta2": _float(pick("beta2", betas[1] if len(betas) > 1 else None)),
        "weight_decay": _float(pick("weight_decay", c("optimizer.weight_decay") or 0.0)),
        "schedule": c("schedule.name"), "c1": _float(c("schedule.c1")),
        "c2": _float(c("schedule.c2")), "c3": _float(c("schedule.c3")),
        # nu: the configured ν, an identity key (the default when neither nu nor nu_quantile is
        # set; NaN when calibrated, whose ν differs per seed); nu_used: the ν the run used.
        "nu": _float(c("optimizer.nu") if c("optimizer.nu_quantile") is not None
                     else pick("nu", c("optimizer.nu"))),
        "nu_quantile": _float(c("optimizer.nu_quantile")), "nu_used": _float(pick("nu", c("optimizer.nu"))),
        "gate": c("optimizer.gate"),
        "momentum": _float(c("optimizer.momentum")), "dtype": c("dtype"),
        "run_id": pick("run_id", c("run_id")),
    }
    avg = summary.get("averages") or {}
    row.update(avg_grad_l1=_float(avg.get("grad_l1")), avg_kkt_residual=_float(avg.get("kkt_residual")),
               avg_kind=avg.get("kind"), avg_n=_float(avg.get("n")))
    for k, v in (summary.get("final") or {}).items():
        row[f"final_{k}"] = _float(v)
    consts = summary.get("constants") or {}
    row.update({k: _float(consts.get(k)) for k in ("Delta", "L", "sigma", "f_low")})
    row["constants_kind"] = consts.get("kind")
    for k in ("diverged_step", "min_tau", "mean_sign_fraction", "wall_time_s"):
        row[k] = _float(summary.get(k))
    training = summary.get("training") or {}     # THEORY §7's "did it train" inputs (theory.did_train)
    row.update(initial_loss=_float(training.get("initial_loss")),
               distance_from_start=_float(training.get("distance_from_start")))
    # median τ_k over ALL steps (tau_steps.parquet), not over the logged ones
    row["tau_median_all"] = _float((summary.get("tau_quantiles") or {}).get("0.5"))
    return row


def _metric_stats(path: Path) -> dict:
    """Per-run statistics from one projected read of metrics.parquet; RunDataError if unreadable."""
    try:
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        table = pf.read(columns=[c for c in _STAT_COLUMNS if c in names])
    except Exception as err:  # pyarrow raises several types for truncated/garbage files
        raise RunDataError(f"metrics.parquet unreadable ({type(err).__name__}: {err})") from None
    if table.num_rows == 0 or "step" not in names:
        raise RunDataError("metrics.parquet has no rows" if table.num_rows == 0 else "metrics.parquet has no 'step'")
    nan = np.full(table.num_rows, np.nan)
    col = {c: table.column(c).to_numpy(zero_copy_only=False).astype(float) if c in names else nan for c in _STAT_COLUMNS}
    first = np.flatnonzero(col["step"] == 0)
    at0 = lambda c: float(col[c][first[0]]) if len(first) else math.nan  # noqa: E731
    mean = lambda c: float(np.nanmean(col[c])) if np.isfinite(col[c]).any() else math.nan  # noqa: E731
    return {"n_logged": table.num_rows, "last_step": float(np.nanmax(col["step"])),
            "e0_norm": at0("grad_l2"),          # ‖e0‖₂ = ‖m0 − ∇f(x0)‖₂ = ‖∇f(x0)‖₂ since m0 = 0
            "x0_linf": at0("x_linf"),
            **{f"mean_{c}": mean(c) for c in ("l1_l2", "mb_l1_l2", "ratio_r", "mb_ratio_r")}}


def _read_run(run_dir: Path, root: Path) -> tuple[dict, RunProblem | None]:
    name = str(run_dir.relative_to(root)) if run_dir != root else "."
    row = {"run": name, "run_dir": str(run_dir), "status": "?", "usable": False, "issue": ""}
    cfg, summary = {}, {}

    def fail(kind, reason):
        row.update(issue=f"{kind}: {reason}")
        return row, RunProblem(name, kind, reason, row.get("optimizer"))

    cfg_path, sum_path = run_dir / "config.yaml", run_dir / "summary.json"
    cfg_error = None
    identity_error = None
    try:
        raw_cfg = yaml.load(cfg_path.read_text(), Loader=_YAML_LOADER)
        cfg = _flatten(raw_cfg)
        if isinstance(raw_cfg, dict):
            row["identity"] = runio.run_identity(raw_cfg)
            if raw_cfg.get("run_id") is not None and raw_cfg["run_id"] != row["identity"]:
                identity_error = (f"config.yaml does not match its run_id {raw_cfg['run_id']} "
                                  "(edited by hand?)")
    except FileNotFoundError:
        cfg_error = "config.yaml missing"
    except Exception as err:
        cfg_error = f"config.yaml unreadable ({type(err).__name__})"
    summary_error = None
    if sum_path.exists():
        try:
            summary = json.loads(sum_path.read_text())
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
        except Exception as err:
            summary, summary_error = {}, f"summary.json unreadable, truncated? ({type(err).__name__}: {err})"
    row.update(cfg)
    row.update(_canonical(cfg, summary))
    status = summary.get("status", "missing" if not sum_path.exists() else "unreadable")
    row["status"] = status
    if summary_error:
        return fail("broken", summary_error)
    if cfg_error:
        return fail("broken", cfg_error)
    if identity_error:
        return fail("broken", identity_error)
    if status in ("missing", "running"):
        return fail("unfinished", "no summary.json" if status == "missing" else "status 'running'")
    if status == "diverged":
        step = row.get("diverged_step")
        return fail("diverged", "diverged" + ("" if math.isnan(step) else f" at step {int(step)}"))
    if status == "failed":
        return fail("failed", f"failed: {summary.get('error', 'no message')}")
    if status != "finished":
        return fail("broken", f"unknown status {status!r}")
    if not math.isfinite(row["avg_grad_l1"]):
        return fail("broken", "summary.json has no finite averages.grad_l1")
    if not (run_dir / "metrics.parquet").exists():
        return fail("broken", "metrics.parquet missing")
    try:
        row.update(_metric_stats(run_dir / "metrics.parquet"))
    except RunDataError as err:
        return fail("broken", str(err))
    row["usable"] = True
    return row, None


def load_runs(root) -> tuple[pd.DataFrame, list[RunProblem]]:
    """Every run under root -> (one row per run, runs left out of the fits with the reason).

    Columns: run, run_dir, status, usable, issue; optimizer, problem, d, K, seed, lr, beta1, beta2,
    weight_decay, schedule, c1, c2, c3, nu, nu_quantile, nu_used, gate, momentum, dtype, run_id; avg_grad_l1,
    avg_kkt_residual, avg_kind, avg_n; final_<metric>; Delta, L, sigma, f_low, constants_kind;
    diverged_step, min_tau, mean_sign_fraction, wall_time_s, initial_loss, distance_from_start,
    tau_median_all; from metrics.parquet: n_logged,
    last_step, e0_norm (‖∇f(x0)‖₂), x0_linf, mean_l1_l2, mean_mb_l1_l2, mean_ratio_r,
    mean_mb_ratio_r; and every config key as cfg.<dotted.key>.
    """
    root = Path(root)
    rows, problems = [], []
    for run_dir in find_run_dirs(root):
        row, problem = _read_run(run_dir, root)
        rows.append(row)
        if problem is not None:
            problems.append(problem)
    _drop_duplicates(rows, problems)
    return pd.DataFrame(rows), problems


def _drop_duplicates(rows: list[dict], problems: list[RunProblem]) -> None:
    """Keep one usable run per run identity (the folder the trainer names `<slug>__<identity>`
    if there is one, else the first in path order); mark the others usable=False, 'duplicate'."""
    kept: dict[str, str] = {}
    usable = [row for row in rows if row["usable"] and row.get("identity") is not None]
    canonical = lambda row: not Path(row["run_dir"]).name.endswith(f"__{row['identity']}")  # noqa: E731
    for row in sorted(usable, key=canonical):  # stable: path order within each kind
        identity = row["identity"]
        if identity in kept:
            reason = f"same run identity {identity} as {kept[identity]}"
            row.update(usable=False, issue=f"duplicate: {reason}")
            problems.append(RunProblem(row["run"], "duplicate", reason, row.get("optimizer")))
        else:
            kept[identity] = row["run"]


@functools.lru_cache(maxsize=64)
def _read_parquet(path: str, mtime_ns: int) -> pd.DataFrame:
    """Whole table, cached per (path, modification time) so a rewritten file is read again."""
    try:
        return pq.read_table(path).to_pandas()
    except OSError:
        raise
    except Exception as err:
        raise RunDataError(f"{path} unreadable ({type(err).__name__}: {err})") from None


def load_metrics(run_dir, columns=None) -> pd.DataFrame:
    """The per-step table metrics.parquet of one run (cached; do not modify the result in place).

    columns: if given, exactly these columns, missing ones filled with NaN.
    Raises FileNotFoundError or RunDataError.
    """
    path = Path(run_dir) / "metrics.parquet"
    df = _read_parquet(str(path), path.stat().st_mtime_ns)
    return df if columns is None else df.reindex(columns=list(columns))


def load_tensor_metrics(run_dir, columns=None) -> pd.DataFrame | None:
    """tensor_metrics.parquet (long format: step, tensor, numel, grad_l1, ...), or None if absent.

    Not cached (it can be long and is read once); columns are projected at read time.
    """
    path = Path(run_dir) / "tensor_metrics.parquet"
    if not path.exists():
        return None
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        cols = None if columns is None else [c for c in columns if c in names]
        df = pf.read(columns=cols).to_pandas()
    except Exception as err:
        raise RunDataError(f"{path} unreadable ({type(err).__name__}: {err})") from None
    return df if columns is None else df.reindex(columns=list(columns))


def safe_loader(load, problems: list, root=None):
    """Wrap a loader so that an unreadable file becomes None plus a RunProblem, never an exception.

    Such a run already passed load_runs (its summary and the metric statistics were readable), so
    its averages stay in the fits; the problem says which table could not be read.
    """
    def wrapped(run_dir, columns=None):
        try:
            return load(run_dir, columns)
        except (OSError, RunDataError) as err:
            name = os.path.relpath(run_dir, root) if root is not None else str(run_dir)
            reason = f"{err} (left out of figures/tables that need it)"
            if not any(p.run == name and p.reason == reason for p in problems):
                problems.append(RunProblem(name, "broken", reason))
            return None
    return wrapped
