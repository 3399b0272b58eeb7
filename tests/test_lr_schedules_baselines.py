"""The lr_schedule group (constant / cosine, linear warmup) for every optimizer, the torch.optim
baselines (sgd, sgd_momentum, adamw), and the trainer's per-problem extra-metrics hook."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import compose_config, run_cli
from lionconv.problems import synthetic
from lionconv.schedules import check_lr_schedule, lr_multiplier
from lionconv.train import launch, run_folder

TINY = ["problem.d=10", "steps=40", "progress=off", "log.per_tensor=false"]


def closed_form_lr(lr, K, kind, W=0, f=0.0):
    """η_k by hand: linear warmup (k+1)/W, then 1 or f + (1−f)(1 + cos(π(k−W)/(K−W)))/2."""
    k = np.arange(K, dtype=np.float64)
    decay = np.ones(K) if kind == "constant" else f + (1 - f) * 0.5 * (1 + np.cos(np.pi * (k - W) / (K - W)))
    return lr * np.where(k < W, (k + 1) / max(W, 1), decay)


def _rows(cfg):
    launch(cfg, echo=lambda m: None)
    return pd.read_parquet(run_folder(cfg)[0] / "metrics.parquet")


@pytest.mark.parametrize("optimizer", ["lion", "clion", "signsgd", "sgd", "sgd_momentum", "adamw"])
@pytest.mark.parametrize("schedule", [("cosine", 0, 0.0), ("cosine", 5, 0.1), ("constant", 8, 0.0)])
def test_logged_lr_is_the_closed_form_schedule(tmp_path, optimizer, schedule):
    kind, W, f = schedule
    cfg = compose_config(TINY + [f"optimizer={optimizer}", "optimizer.lr=0.002",
                                 f"lr_schedule={kind}", f"lr_schedule.warmup_steps={W}"]
                         + ([f"lr_schedule.final_fraction={f}"] if kind == "cosine" else []),
                         tmp_path=tmp_path)
    rows = _rows(cfg)
    np.testing.assert_allclose(rows["lr"], closed_form_lr(0.002, 40, kind, W, f), rtol=1e-12)
    assert [lr_multiplier(k, 40, cfg["lr_schedule"]) for k in (0, 39)] == pytest.approx(
        list(closed_form_lr(1.0, 40, kind, W, f)[[0, 39]]))


def test_the_scheduled_lr_is_the_one_the_step_uses(tmp_path):
    """SignSGD on the noiseless quadratic moves θ by exactly η_k·sign(θ) at step k."""
    cfg = compose_config(["problem=quadratic", "problem.init=100", "optimizer=signsgd",
                          "optimizer.lr=0.5", "lr_schedule=cosine", "lr_schedule.warmup_steps=3",
                          "steps=20", "progress=off", "log.per_tensor=false"], tmp_path=tmp_path)
    rows = _rows(cfg)
    theta = 100 - np.concatenate([[0], np.cumsum(closed_form_lr(0.5, 20, "cosine", 3))])[:20]
    np.testing.assert_allclose(rows["grad_l1"], theta, rtol=1e-6)


def test_lr_schedule_multiplies_the_horizon_schedule(tmp_path):
    cfg = compose_config(TINY + ["schedule=horizon", "lr_schedule=cosine"], tmp_path=tmp_path)
    rows = _rows(cfg)
    base = 1.0 / (math.sqrt(10) * 40 ** 0.75)                 # THEORY §4, c3 = 1
    np.testing.assert_allclose(rows["lr"], closed_form_lr(base, 40, "cosine"), rtol=1e-6)
    assert rows["beta1"].iloc[0] == pytest.approx(1 - 1 / math.sqrt(40))


def test_constant_schedule_leaves_the_run_bit_identical(tmp_path):
    plain = _rows(compose_config(TINY, tmp_path=tmp_path / "a"))
    explicit = _rows(compose_config(TINY + ["lr_schedule=constant"], tmp_path=tmp_path / "b"))
    cols = [c for c in plain.columns if c != "wall_time"]
    pd.testing.assert_frame_equal(plain[cols], explicit[cols], check_exact=True)


def test_resume_with_a_cosine_schedule_is_bit_identical(tmp_path, monkeypatch):
    args = ["problem.d=50", "steps=300", "progress=off", "optimizer=lion", "optimizer.lr=0.01",
            "lr_schedule=cosine", "lr_schedule.warmup_steps=20", "checkpoint_every=37"]
    reference = compose_config(args, tmp_path=tmp_path / "ref")
    expected = _rows(reference).drop(columns="wall_time")
    cfg = compose_config(args, tmp_path=tmp_path / "cut")
    original, calls = synthetic._Separable.stochastic_loss, {"n": 0}

    def interrupted(self, generator):
        calls["n"] += 1
        if calls["n"] == 200:
            raise KeyboardInterrupt
        return original(self, generator)

    monkeypatch.setattr(synthetic._Separable, "stochastic_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        launch(cfg, echo=lambda m: None)
    assert (run_folder(cfg)[0] / "checkpoint.pt").exists()
    monkeypatch.setattr(synthetic._Separable, "stochastic_loss", original)
    got = _rows(cfg).drop(columns="wall_time")
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_bad_lr_schedule_gives_one_clear_line(tmp_path):
    proc = run_cli(*TINY, "lr_schedule.warmup_steps=40", f"out_dir={tmp_path}", check=False)
    assert proc.returncode != 0
    assert "lr_schedule.warmup_steps=40 is not allowed" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    with pytest.raises(ValueError, match=r"lr_schedule.final_fraction=2.0 is not allowed: "
                                         r"expected a number in \[0, 1\]"):
        check_lr_schedule({"name": "cosine", "warmup_steps": 0, "final_fraction": 2.0}, 40)
    with pytest.raises(ValueError, match="lr_schedule='linear' is not allowed"):
        check_lr_schedule({"name": "linear"}, 40)


def test_baselines_from_the_command_line(tmp_path):
    """sgd, sgd_momentum (0.9) and adamw are torch.optim's, each trained by the same trainer;
    one multirun from the command line."""
    run_cli("-m", "optimizer=sgd,sgd_momentum,adamw", "problem=digits_mlp", "problem.width=8",
            "problem.n_train=200", "problem.estimate_constants=false", "steps=30",
            "lr_schedule=cosine", "progress=off", f"out_dir={tmp_path}")
    summaries = {p.parent.name.split("__")[0]: p for p in tmp_path.rglob("summary.json")}
    assert len(summaries) == 3
    for path in summaries.values():
        rows = pd.read_parquet(path.parent / "metrics.parquet")
        assert rows["loss"].iloc[-1] < rows["loss"].iloc[0]
    from lionconv.optim import OPTIMIZERS
    assert OPTIMIZERS["sgd_momentum"] is torch.optim.SGD and OPTIMIZERS["adamw"] is torch.optim.AdamW
    assert compose_config(["optimizer=sgd_momentum"])["optimizer"]["momentum"] == 0.9


def test_adamw_decay_is_lr_times_lambda_times_x():
    """torch's AdamW: with a zero gradient the step is x ← x − lr·λ·x (THEORY §2's convention)."""
    x = torch.tensor([2.0, -4.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.AdamW([x], lr=0.1, weight_decay=0.5)
    x.grad = torch.zeros_like(x)
    opt.step()
    torch.testing.assert_close(x.detach(), torch.tensor([2.0, -4.0], dtype=torch.float64) * (1 - 0.05))


def test_horizon_schedule_rejects_adamw_in_one_line(tmp_path):
    proc = run_cli(*TINY, "optimizer=adamw", "schedule=horizon", f"out_dir={tmp_path}", check=False)
    assert proc.returncode != 0 and "schedule=horizon is not defined for optimizer='adamw'" in \
        proc.stdout + proc.stderr


def test_extra_metrics_hook_writes_columns_with_the_loss_sync(tmp_path, monkeypatch):
    """Problem.extra_metrics(params) values become metrics.parquet columns at logged steps."""
    def extra(self, params):
        x = params[0].detach()
        return {"x_sum": x.sum(), "x_pos": (x > 0).double().mean()}

    monkeypatch.setattr(synthetic._Separable, "extra_metrics", extra, raising=False)
    cfg = compose_config(TINY + ["log.snapshots=true"], tmp_path=tmp_path)
    rows = _rows(cfg)
    with np.load(run_folder(cfg)[0] / "snapshots.npz") as snap:
        xs = snap["x"][np.isin(snap["step"], rows["step"])]  # the snapshot of x_K has no row
    np.testing.assert_allclose(rows["x_sum"], xs.sum(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rows["x_pos"], (xs > 0).mean(1))
    assert "face_fraction" not in rows  # no weight decay: no box


def test_face_fraction_counts_coordinates_within_the_tolerance(tmp_path):
    from lionconv.metrics import FACE_TOL, face_fraction

    lam = 4.0
    x = torch.tensor([0.25, -0.25, 0.25 * (1 - FACE_TOL / 2), 0.25 * (1 - 2 * FACE_TOL), 0.0])
    assert face_fraction([x[:3], x[3:]], lam).item() == pytest.approx(3 / 5)
