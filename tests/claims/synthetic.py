"""Synthetic run folders in the RUN LAYOUT (config.yaml, summary.json, metrics.parquet, ...) whose answers
are known, and a helper that runs one claim module on a folder of them."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from lionconv import runio, theory
from lionconv.analysis import RunData, load_runs
from lionconv.analysis.load import load_metrics, load_tensor_metrics, safe_loader


def evaluate(root, claim, n_boot=200):
    """(table, verdict rows) of one claim module on the usable runs under root."""
    runs, problems = load_runs(root)
    runs = runs[runs["usable"]].reset_index(drop=True)
    data = RunData(runs, safe_loader(load_metrics, problems, root), safe_loader(load_tensor_metrics, problems, root))
    table = claim.table(data)
    return table, claim.verdicts(table, n_boot=n_boot, seed=0)


def edit_config(run, edit):
    """Change a synthetic run's config.yaml with edit(cfg) and record its new identity (config.yaml
    and summary.json), as the trainer would have written it."""
    cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))
    edit(cfg)
    cfg["run_id"] = runio.run_identity(cfg)
    OmegaConf.save(OmegaConf.create(cfg), run / "config.yaml")
    summary = json.loads((run / "summary.json").read_text())
    summary["run_id"] = cfg["run_id"]
    (run / "summary.json").write_text(json.dumps(summary))
    return cfg


def by_claim(rows, prefix):
    return [r for r in rows if r.claim.startswith(prefix)]


def write_rate_run(root, name, *, optimizer="lion", problem="scaled_separable", d=100, K=400, seed=0,
              weight_decay=0.0, avg=1.0, status="finished", constants=None, e0=2.0, ratio=0.8,
              n_logged=8, write_summary=True, preset=None, problem_cfg=None, log_grid=None):
    """One run folder: config.yaml (OmegaConf), metrics.parquet, tensor_metrics.parquet, summary.json."""
    run = Path(root) / name
    run.mkdir(parents=True)
    if optimizer == "sgd":
        lr, b1, b2 = 0.01, math.nan, math.nan
        schedule = {"name": "constant", "c1": None, "c2": None, "c3": None}
    else:
        b1, b2, lr = theory.horizon_schedule(K, d, 1.0, 1.0, 1.0)
        schedule = {"name": "horizon", "c1": 1.0, "c2": 1.0, "c3": 1.0}
    cfg = {"seed": seed, "steps": K, "device": "cpu", "dtype": "float64",
           "optimizer": {"name": optimizer, "lr": lr, "betas": [b1, b2], "weight_decay": weight_decay,
                         "nu": 1e-6, "gate": "global", "momentum": 0.0},
           "problem": {"name": problem, "d": d, "sigma": 0.1, **(problem_cfg or {})}, "schedule": schedule,
           "log": {"every": max(1, K // n_logged), **({"grid": log_grid} if log_grid else {})},
           "sweep_name": "t", "preset": preset}
    cfg["run_id"] = run_id = runio.run_identity(cfg)  # as the trainer records it
    OmegaConf.save(OmegaConf.create(cfg), run / "config.yaml")
    steps = np.linspace(0, K - 1, n_logged).astype(int)
    sd = math.sqrt(d)
    gl2 = e0 * (steps + 1.0) ** -0.25
    m = pd.DataFrame({
        "step": steps, "loss": 1.0 / (steps + 1.0), "batch_loss": 1.0 / (steps + 1.0),
        "grad_l1": ratio * sd * gl2, "grad_l2": gl2, "l1_l2": ratio * sd, "ratio_r": ratio,
        "kkt_residual": ratio * sd * gl2, "feasibility": 0.0, "x_linf": 0.5,
        "mb_grad_l1": 0.79 * sd * gl2, "mb_grad_l2": gl2, "mb_l1_l2": 0.79 * sd, "mb_ratio_r": 0.79,
        "test_acc": np.nan, "train_acc": np.nan, "tau": np.nan, "sign_fraction": np.nan})
    m.to_parquet(run / "metrics.parquet", index=False)
    pd.DataFrame({"step": np.repeat(steps, 2), "tensor": ["w", "b"] * n_logged, "numel": [d - 1, 1] * n_logged,
                  "grad_l1": 1.0, "grad_l2": 1.0, "l1_l2": 1.0, "ratio_r": ratio, "kkt_residual": 1.0,
                  "feasibility": 0.0}).to_parquet(run / "tensor_metrics.parquet", index=False)
    consts = constants or {"Delta": None, "L": None, "sigma": None}
    summary = {"status": status, "diverged_step": 17 if status == "diverged" else None, "run_id": run_id,
               "optimizer": optimizer, "problem": problem, "d": d, "K": K, "seed": seed, "lr": lr,
               "beta1": b1, "beta2": b2, "weight_decay": weight_decay,
               "averages": {"grad_l1": avg, "kkt_residual": avg, "kind": "exact", "n": K},
               "final": {"loss": 0.1, "grad_l1": ratio * sd, "grad_l2": 1.0},
               "constants": {**consts, "f_low": 0.0, "kind": "closed_form"}, "min_tau": None,
               "mean_sign_fraction": None, "wall_time_s": 1.0, "provenance": {}}
    if write_summary:
        (run / "summary.json").write_text(json.dumps(summary))
    return run




def write_run(root, name, *, optimizer="lion", problem="quadratic", d=100, K=100, seed=0, lr=0.01,
              betas=(0.9, 0.99), weight_decay=0.0, schedule=None, problem_cfg=None, optimizer_cfg=None,
              metrics=None, final=None, constants=None, summary=None, snapshots=None, lr_scale=1.0,
              dtype="float64", extra_cfg=None):
    """One run folder in the RUN LAYOUT: config.yaml, summary.json, metrics.parquet (+ snapshots.npz).

    metrics: columns for every step 0..K−1 (a scalar or an array each); missing columns are NaN."""
    run = Path(root) / name
    run.mkdir(parents=True)
    cfg = {"seed": seed, "steps": K, "device": "cpu", "dtype": dtype, "lr_scale": lr_scale,
           "optimizer": {"name": optimizer, "lr": lr, "betas": list(betas), "weight_decay": weight_decay,
                         **(optimizer_cfg or {})},
           "problem": {"name": problem, "d": d, **(problem_cfg or {})},
           "schedule": schedule or {"name": "constant"}, "log": {"every": 1}, "sweep_name": "t",
           **(extra_cfg or {})}
    cfg["run_id"] = run_id = runio.run_identity(cfg)  # as the trainer records it
    OmegaConf.save(OmegaConf.create(cfg), run / "config.yaml")
    steps = np.arange(K)
    m = pd.DataFrame({"step": steps})
    for col, v in (metrics or {}).items():
        m[col] = np.broadcast_to(np.asarray(v, dtype=float), steps.shape)
    for col in ("grad_l1", "grad_l2", "ratio_r", "mb_ratio_r", "l1_l2", "mb_l1_l2", "x_linf", "feasibility",
                "kkt_residual", "tau", "sign_fraction", "loss"):
        if col not in m:
            m[col] = np.nan
    m.to_parquet(run / "metrics.parquet", index=False)
    avg = float(np.nanmean(m["grad_l1"])) if m["grad_l1"].notna().any() else 1.0
    s = {"status": "finished", "diverged_step": None, "run_id": run_id, "optimizer": optimizer, "problem": problem,
         "d": d, "K": K, "seed": seed, "lr": lr, "beta1": betas[0], "beta2": betas[1], "weight_decay": weight_decay,
         "averages": {"grad_l1": avg, "kkt_residual": avg, "kind": "exact", "n": K}, "final": final or {},
         "constants": {"Delta": 1.0, "L": 1.0, "sigma": 0.0, "f_low": 0.0, "kind": "closed_form", **(constants or {})},
         "min_tau": None, "mean_sign_fraction": None, "wall_time_s": 1.0, "provenance": {}, **(summary or {})}
    (run / "summary.json").write_text(json.dumps(s))
    if snapshots is not None:
        np.savez(run / "snapshots.npz", step=snapshots[0], x=snapshots[1])
    return run
