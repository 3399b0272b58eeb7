"""lionconv.analysis on small synthetic run folders written here (RUN LAYOUT of the design)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from lionconv import runio, theory
from lionconv.analysis import (FitResult, bound_checks, evaluate_claims, fit_power_law, judge, load_runs,
                               running_average_slope)
from lionconv.analysis.claims import claim_bound, comparable_groups, tensor_ratio_table
from lionconv.analysis.load import load_metrics, load_tensor_metrics, safe_loader

REPO = Path(__file__).resolve().parents[1]
ANALYZE = REPO / "scripts" / "analyze.py"


def write_run(root, name, *, optimizer="lion", problem="scaled_separable", d=100, K=400, seed=0,
              weight_decay=0.0, avg=1.0, status="finished", constants=None, e0=2.0, ratio=0.8,
              n_logged=8, write_summary=True):
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
           "problem": {"name": problem, "d": d, "sigma": 0.1}, "schedule": schedule,
           "log": {"every": max(1, K // n_logged)}, "sweep_name": "t"}
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


# ---------------------------------------------------------------------------- fit


def _synthetic(rng, a=-0.25, n_seeds=6, xs=(100, 400, 1600, 6400, 25600)):
    x = np.repeat(np.asarray(xs, float), n_seeds)
    g = np.tile(np.arange(n_seeds), len(xs))
    noise = rng.normal(0, 0.1, len(x)) + rng.normal(0, 0.05, n_seeds)[g]   # per-point + per-seed noise
    return x, 3.0 * x**a * np.exp(noise), g


def test_fit_recovers_exponent_and_ci_covers():
    fit = fit_power_law(*_synthetic(np.random.default_rng(0))[:2], groups=_synthetic(np.random.default_rng(0))[2],
                        n_boot=500)
    assert isinstance(fit, FitResult) and fit.method == "seed-bootstrap" and fit.n == 30
    assert abs(fit.slope + 0.25) < 0.05 and fit.ci_low < -0.25 < fit.ci_high
    assert fit.predict(100) == pytest.approx(math.exp(fit.intercept) * 100**fit.slope)
    covered = 0
    for rep in range(20):
        x, y, g = _synthetic(np.random.default_rng(100 + rep))
        f = fit_power_law(x, y, groups=g, n_boot=200, seed=rep)
        covered += f.ci_low <= -0.25 <= f.ci_high
    assert covered >= 15


def test_fit_single_seed_falls_back_to_t_interval():
    x, y, _ = _synthetic(np.random.default_rng(1), n_seeds=1)
    fit = fit_power_law(x, y, groups=np.zeros(len(x)))
    assert fit.method == "ols-t" and fit.ci_low < fit.slope < fit.ci_high
    exact = fit_power_law([1, 10, 100], [2, 20, 200])
    assert exact.slope == pytest.approx(1.0) and exact.r2 == pytest.approx(1.0)


def test_fit_bad_input():
    with pytest.raises(ValueError, match="distinct"):
        fit_power_law([5, 5, 5], [1, 2, 3])
    with pytest.raises(ValueError, match="same length"):
        fit_power_law([1, 2], [1, 2, 3])


def test_running_average_slope():
    k = np.arange(1, 10001)
    assert running_average_slope(k - 1, 3.0 * k**-0.25) == pytest.approx(-0.25)


def test_judge_rules():
    f = lambda s, lo, hi: FitResult(s, 0.0, lo, hi, 10, 1.0)  # noqa: E731
    assert judge(f(-0.5, -0.6, -0.4), "<=", -0.25, 0.05) == "yes"      # faster than the bound: fine
    assert judge(f(-0.1, -0.15, -0.05), "<=", -0.25, 0.05) == "no"
    assert judge(f(-0.1, -0.3, 0.1), "<=", -0.25, 0.05) == "unclear"
    assert judge(f(0.52, 0.4, 0.6), "==", 0.5, 0.05) == "yes"
    assert judge(f(0.2, 0.1, 0.3), "==", 0.5, 0.05) == "no"


# ---------------------------------------------------------------------------- loader


def test_loader_counts_and_names_bad_runs(tmp_path):
    good = write_run(tmp_path, "good")
    (good / ".hydra").mkdir()
    (good / ".hydra" / "config.yaml").write_text("a: 1\n")       # Hydra's copy is not a run
    write_run(tmp_path, "diverged", status="diverged", avg=float("nan"))
    truncated = write_run(tmp_path, "truncated")
    (truncated / "summary.json").write_text((truncated / "summary.json").read_text()[:40])
    corrupt = write_run(tmp_path, "corrupt")
    (corrupt / "metrics.parquet").write_bytes(b"PAR1 this is not parquet")
    write_run(tmp_path, "unfinished", write_summary=False)
    nested = write_run(tmp_path / "sub", "nested", status="running")

    runs, problems = load_runs(tmp_path)
    assert len(runs) == 6 and runs["usable"].sum() == 1
    assert runs.loc[runs.usable, "run"].tolist() == ["good"]
    kinds = {p.run: p.kind for p in problems}
    assert kinds == {"diverged": "diverged", "truncated": "broken", "corrupt": "broken",
                     "unfinished": "unfinished", str(Path("sub") / "nested"): "unfinished"}
    reasons = {p.run: p.reason for p in problems}
    assert "step 17" in reasons["diverged"] and "summary.json" in reasons["truncated"]
    assert "metrics.parquet" in reasons["corrupt"]
    assert next(p for p in problems if p.run == "diverged").optimizer == "lion"
    row = runs.set_index("run").loc["good"]
    assert row["K"] == 400 and row["d"] == 100 and row["schedule"] == "horizon" and row["cfg.problem.sigma"] == 0.1
    assert row["e0_norm"] == pytest.approx(2.0) and row["mean_l1_l2"] == pytest.approx(8.0)
    assert load_metrics(good)["step"].iloc[0] == 0 and nested.exists()


# ---------------------------------------------------------------------------- bound check


def test_bound_check_under_and_over(tmp_path):
    consts = {"Delta": 2.0, "L": 3.0, "sigma": 0.5}
    K, d = 400, 100
    b1, b2, lr = theory.horizon_schedule(K, d, 1, 1, 1)
    bound = theory.bound_template(K, d, 2.0, 3.0, 0.5, lr, b1, b2, 0.0, 2.0)   # e0 = grad_l2 at step 0 = 2
    write_run(tmp_path, "under", K=K, d=d, avg=bound / 4, constants=consts)
    write_run(tmp_path, "over", K=K, d=d, avg=bound * 2, constants=consts, problem="other")
    write_run(tmp_path, "nobound", K=K, d=d, avg=1.0)                                  # constants unknown
    write_run(tmp_path, "sgd", optimizer="sgd", K=K, d=d, avg=bound * 2, constants=consts)  # bound n/a
    runs, _ = load_runs(tmp_path)
    checks = bound_checks(runs).set_index("run")
    assert sorted(checks.index) == ["over", "under"]
    assert checks.loc["under", "bound"] == pytest.approx(bound)
    assert checks.loc["under", "slack"] == pytest.approx(4.0) and bool(checks.loc["under", "under"])
    assert checks.loc["over", "slack"] == pytest.approx(0.5) and not bool(checks.loc["over", "under"])
    rows = {r.scope: r for r in claim_bound(runs, load_metrics)}
    assert rows["lion · scaled_separable"].holds == "yes" and rows["lion · scaled_separable"].measured == pytest.approx(4.0)
    assert rows["lion · other"].holds == "no" and rows["lion · other"].measured == pytest.approx(0.5)


# ---------------------------------------------------------------------------- end to end


def _sweep(root):
    """lion & clion × K ∈ {100, 400, 1600} × seeds {0, 1}, averages ∝ K^-1/4 exactly times noise;
    lion also at d ∈ {25, 400} for K = 1600; an SGD baseline; one diverged run."""
    rng = np.random.default_rng(0)
    consts = {"Delta": 2.0, "L": 3.0, "sigma": 0.5}
    for opt in ("lion", "clion"):
        for K in (100, 400, 1600):
            for seed in (0, 1):
                avg = 5.0 * K**-0.25 * math.exp(rng.normal(0, 0.02))
                write_run(root, f"{opt}_K{K}_s{seed}", optimizer=opt, K=K, seed=seed, avg=avg, constants=consts)
    for d in (25, 400):
        for seed in (0, 1):
            write_run(root, f"lion_d{d}_s{seed}", d=d, K=1600, seed=seed, constants=consts,
                      avg=5.0 * 1600**-0.25 * math.sqrt(d / 100) * math.exp(rng.normal(0, 0.02)))
    write_run(root, "sgd_K400", optimizer="sgd", K=400, avg=1.0)
    write_run(root, "lion_diverged", status="diverged", K=400, seed=7)


def test_analyze_end_to_end(tmp_path):
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    _sweep(runs_dir)
    proc = subprocess.run([sys.executable, str(ANALYZE), str(runs_dir), "--out", str(out), "--n-boot", "200"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = (out / "REPORT.md").read_text()
    assert "lion_diverged" in report and "diverged" in report and str(ANALYZE.name) in report
    v = pd.read_csv(out / "verdicts.csv")
    assert (out / "verdicts.md").stat().st_size > 0
    rate = v[v["claim"].str.startswith("rate in K")].set_index("scope")
    for opt in ("lion", "clion"):
        row = rate.loc[f"{opt} · scaled_separable · d=100"]
        assert row["holds"] == "yes" and abs(row["measured"] + 0.25) < 0.03
    d_row = v[v["claim"].str.startswith("rate in d")].iloc[0]
    assert d_row["holds"] == "yes" and d_row["measured"] == pytest.approx(0.5, abs=0.03)
    ratio = v[v["claim"].str.contains("‖·‖₁/‖·‖₂")]
    assert len(ratio) >= 2 and (ratio["holds"] == "yes").all()
    assert (v[v["claim"].str.startswith("under the bound")]["holds"] == "yes").all()
    pngs = sorted((out / "figures").glob("*.png"))
    stems = {p.stem for p in pngs}
    assert {"rate_K-scaled_separable-d100", "rate_d-scaled_separable-K1600", "ratio-scaled_separable",
            "training-scaled_separable"} <= stems
    assert all(p.stat().st_size > 1000 and p.with_suffix(".pdf").exists() for p in pngs)
    for p in pngs:
        assert f"(figures/{p.name})" in report


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_analyze_bad_folder(tmp_path, make):
    target = tmp_path / "nothing"
    if make == "empty":
        target.mkdir()
    proc = subprocess.run([sys.executable, str(ANALYZE), str(target)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "error" in proc.stderr and "Traceback" not in proc.stderr
    assert str(target) in proc.stderr


def test_registry_is_extensible(tmp_path):
    from lionconv.analysis import CLAIMS, VerdictRow, register_claim
    write_run(tmp_path, "r")
    runs, _ = load_runs(tmp_path)

    @register_claim("test_only")
    def _claim(runs, load_metrics, **_):
        return [VerdictRow("count", "all", "> 0", float(len(runs)), holds="yes")]
    try:
        rows = evaluate_claims(runs, load_metrics, names=["test_only"])
        assert rows[0].measured == 1.0
        with pytest.raises(ValueError, match="unknown claims"):
            evaluate_claims(runs, load_metrics, names=["nope"])
    finally:
        del CLAIMS["test_only"]


def test_groups_drop_config_keys_that_follow_the_swept_variable(tmp_path):
    # a model-size sweep: problem.width determines d, so it must not split the d-groups;
    # problem.sigma differs independently, so it must
    for d, width in ((100, 10), (400, 20)):
        for sigma in (0.1, 0.2):
            run = write_run(tmp_path, f"d{d}_s{sigma}", d=d, K=1600)
            cfg = OmegaConf.load(run / "config.yaml")
            cfg.problem.width, cfg.problem.sigma = width, sigma
            OmegaConf.save(cfg, run / "config.yaml")
    runs, _ = load_runs(tmp_path)
    groups = dict(comparable_groups(runs, "d"))
    assert sorted(groups) == ["lion · scaled_separable · K=1600 · sigma=0.1", "lion · scaled_separable · K=1600 · sigma=0.2"]
    assert all(sorted(g["d"]) == [100, 400] for g in groups.values())


def test_constant_schedule_gets_no_rate_verdict(tmp_path):
    for K in (100, 400, 1600):
        run = write_run(tmp_path, f"c{K}", K=K, avg=1.0)
        cfg = OmegaConf.load(run / "config.yaml")
        cfg.schedule.name, cfg.optimizer.lr, cfg.optimizer.betas = "constant", 0.01, [0.9, 0.99]
        OmegaConf.save(cfg, run / "config.yaml")
        summary = json.loads((run / "summary.json").read_text())
        summary.update(lr=0.01, beta1=0.9, beta2=0.99)
        (run / "summary.json").write_text(json.dumps(summary))
    runs, _ = load_runs(tmp_path)
    (row,) = evaluate_claims(runs, load_metrics, names=["rate_in_K"], n_boot=0)
    assert row.holds == "n.a." and "constant" in row.theory and row.measured == pytest.approx(0.0)


def test_unreadable_table_after_loading_is_reported_not_raised(tmp_path):
    write_run(tmp_path, "ok")
    bad = write_run(tmp_path, "badtensors", seed=1)
    (bad / "tensor_metrics.parquet").write_bytes(b"garbage")
    runs, problems = load_runs(tmp_path)
    assert runs["usable"].all() and problems == []
    table = tensor_ratio_table(runs, safe_loader(load_tensor_metrics, problems, tmp_path))
    assert set(table["runs"]) == {1} and [p.run for p in problems] == ["badtensors"]
    assert problems[0].kind == "broken" and "tensor_metrics.parquet" in problems[0].reason


def test_box_envelope_claim(tmp_path):
    write_run(tmp_path, "inside", weight_decay=0.5)            # x_linf = 0.5 at every step: under the envelope
    bad = write_run(tmp_path, "outside", weight_decay=0.5, problem="other")
    m = pd.read_parquet(bad / "metrics.parquet")
    m.loc[m.index[-1], "x_linf"] = 10.0                        # outside the box 1/λ = 2 and the envelope
    m.to_parquet(bad / "metrics.parquet", index=False)
    runs, _ = load_runs(tmp_path)
    rows = {r.scope: r for r in evaluate_claims(runs, load_metrics, names=["box_invariance"])}
    assert rows["lion · scaled_separable · λ=0.5"].holds == "yes"
    assert rows["lion · other · λ=0.5"].holds == "no" and rows["lion · other · λ=0.5"].measured > 4
