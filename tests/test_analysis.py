"""The analysis core (lionconv.analysis) and scripts/analyze.py on small synthetic run folders (docs/RUN_LAYOUT.md)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from lionconv import theory
from lionconv.analysis import FitResult, bound_checks, fit_power_law, load_runs, running_average_slope
from lionconv.analysis.groups import comparable_groups
from lionconv.analysis.load import load_metrics
from lionconv.analysis.verdict import EXACT, VerdictRow, decisive, judge, judge_exact, judge_fit, le, within
from lionconv.claims import CLAIMS, claims_for, presets

sys.path.insert(0, str(Path(__file__).resolve().parent / "claims"))
from synthetic import write_rate_run as write_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ANALYZE = REPO / "scripts" / "analyze.py"
REPRODUCE = REPO / "scripts" / "reproduce.py"


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



# ---------------------------------------------------------------------------- verdicts (THEORY §10)


def test_judge_needs_the_whole_interval():
    boot5 = "seed-bootstrap (5 seeds)"
    assert judge(-0.5, -0.3, le(-0.22), boot5) == "yes"           # faster than the bound: fine
    assert judge(-0.24, -0.2, le(-0.22), boot5) == "unclear"      # straddles: the point estimate does not decide
    assert judge(-0.15, -0.05, le(-0.22), boot5) == "no"
    assert judge(0.48, 0.52, within(0.5, 0.05), boot5) == "yes"
    assert judge(0.40, 0.52, within(0.5, 0.05), boot5) == "unclear"
    assert judge(0.1, 0.3, within(0.5, 0.05), boot5) == "no"


def test_few_seeds_or_unnamed_intervals_cannot_decide():
    assert judge(-0.5, -0.3, le(-0.22), "seed-bootstrap (4 seeds)") == "unclear"
    assert judge(-0.5, -0.3, le(-0.22), "ols-t (2 seeds)") == "unclear"
    assert judge(-0.15, -0.05, le(-0.22), "ols-t (1 seed)") == "unclear"
    assert judge(0.1, 0.2, le(0.5), "seed range (5 seeds each)") == "yes"
    assert judge(0.1, 0.2, le(0.5), "seed range (2 seeds)") == "unclear"
    assert judge_exact(0.99, le(1.0)) == "yes" and judge_exact(1.01, le(1.0)) == "no"
    assert decisive(EXACT) and not decisive("none")
    f = FitResult(-0.3, 0.0, -0.35, -0.25, 25, 1.0, "seed-bootstrap", 5)
    assert judge_fit(f, le(-0.22)) == "yes"
    assert judge_fit(FitResult(-0.3, 0.0, -0.35, -0.25, 25, 1.0, "ols-t", 2), le(-0.22)) == "unclear"


def test_context_rows_never_hold_and_kinds_are_checked():
    assert VerdictRow("c", "context", "s", "none", 1.0, holds="yes").holds == "n.a."
    with pytest.raises(ValueError, match="kind"):
        VerdictRow("c", "claimish", "s", "none", 1.0)


# ---------------------------------------------------------------------------- claims discovery


def test_every_claim_module_declares_the_interface_and_its_presets_exist():
    conf = REPO / "conf" / "experiment"
    for name, claim in CLAIMS.items():
        assert claim.NAME == name and claim.THEORY and claim.PRESETS and claim.__doc__
        for preset in claim.PRESETS:
            assert (conf / f"{preset}.yaml").exists() and (conf / "paper" / f"{preset}.yaml").exists()
            assert f"preset: {preset}" in (conf / f"{preset}.yaml").read_text()
        for t in claim.THRESHOLDS.values():
            assert t.reason and math.isfinite(float(t))
        assert (REPO / "tests" / "claims" / f"test_{name}.py").exists(), f"claim {name} has no test module"
    assert {p.stem for p in conf.glob("*.yaml")} == set(presets())       # every preset has claims
    assert [c.NAME for c in claims_for("paper/rate_in_K")] == [c.NAME for c in claims_for("rate_in_K")]
    with pytest.raises(ValueError, match="no claims"):
        claims_for("nope")


def test_reproduce_list_maps_presets_to_claims():
    proc = subprocess.run([sys.executable, str(REPRODUCE), "--list"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.strip().splitlines())
    assert lines == {p: ", ".join(c) for p, c in presets().items()}
    assert "rate_in_K" in lines["rate_in_K"].split(", ") and "bound" in lines["rate_in_K"].split(", ")


def test_claims_package_has_no_cycle_and_core_imports_no_claim():
    code = ("import sys, lionconv.analysis, lionconv.analysis.report, lionconv.analysis.plots; "
            "print([m for m in sys.modules if m.startswith('lionconv.claims')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


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


# ---------------------------------------------------------------------------- end to end


def _sweep(root, seeds=range(5)):
    """lion & clion × K ∈ {100, 400, 1600} × 5 seeds, averages ∝ K^-1/4 times 2 % noise, under their
    bounds; an SGD baseline; one diverged run. Every run records preset rate_in_K."""
    rng = np.random.default_rng(0)
    consts = {"Delta": 2.0, "L": 3.0, "sigma": 0.5}
    for opt in ("lion", "clion"):
        for K in (100, 400, 1600):
            for seed in seeds:
                avg = 1.0 * K**-0.25 * math.exp(rng.normal(0, 0.02))
                write_run(root, f"{opt}_K{K}_s{seed}", optimizer=opt, K=K, seed=seed, avg=avg, constants=consts,
                          preset="rate_in_K")
    for K in (400, 1600):
        write_run(root, f"sgd_K{K}", optimizer="sgd", K=K, avg=K**-0.3, preset="rate_in_K")
    write_run(root, "lion_diverged", status="diverged", K=400, seed=7, preset="rate_in_K")


def test_analyze_end_to_end_takes_the_claims_from_the_preset(tmp_path):
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    _sweep(runs_dir)
    proc = subprocess.run([sys.executable, str(ANALYZE), str(runs_dir), "--out", str(out), "--n-boot", "200"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    report = (out / "REPORT.md").read_text()
    assert "lion_diverged" in report and "diverged" in report and str(ANALYZE.name) in report
    v = pd.read_csv(out / "verdicts.csv", keep_default_na=False, na_values=[""])
    assert set(v["claim_module"]) == {c.NAME for c in claims_for("rate_in_K")}
    assert {"kind", "interval"} <= set(v.columns) and set(v["kind"]) <= {"theory", "sanity", "context"}
    rate = v[v["claim"].str.startswith("rate in K")].set_index("scope")
    for opt in ("lion", "clion"):
        row = rate.loc[f"{opt} · scaled_separable · d=100"]
        assert row["holds"] == "yes" and row["kind"] == "theory" and abs(row["measured"] + 0.25) < 0.03
        assert row["interval"] == "seed-bootstrap (5 seeds)"
    assert rate.loc["sgd · scaled_separable · d=100", "kind"] == "context"
    assert (v[v["claim"].str.startswith("under the bound")]["holds"] == "yes").all()
    pngs = sorted((out / "figures").glob("*.png"))
    assert {p.stem for p in pngs} >= {"rate_in_K-problemscaled_separable-d100-wd0"}
    assert all(p.stat().st_size > 1000 and p.with_suffix(".pdf").exists() for p in pngs)
    links = [line for line in report.splitlines() if line.startswith("![")]
    assert len(links) == len(set(links)) == len(pngs) and ".pdf" not in report
    body = "\n".join(line for line in report.splitlines() if "Made by" not in line)   # argv is shown as typed
    assert str(tmp_path) not in body
    assert not any(str(tmp_path) in p.read_text() for p in out.glob("*.csv"))
    # --claims overrides the preset
    out2 = tmp_path / "out2"
    proc = subprocess.run([sys.executable, str(ANALYZE), str(runs_dir), "--out", str(out2), "--claims", "bound",
                           "--no-figures"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert set(pd.read_csv(out2 / "verdicts.csv")["claim_module"]) == {"bound"}


@pytest.mark.parametrize("make", ["missing", "empty", "no_preset", "bad_claim"])
def test_analyze_bad_input(tmp_path, make):
    target = tmp_path / "nothing"
    args = []
    if make == "empty":
        target.mkdir()
    if make in ("no_preset", "bad_claim"):
        write_run(target, "r")
    if make == "bad_claim":
        args = ["--claims", "rate_in_K,nope"]
    proc = subprocess.run([sys.executable, str(ANALYZE), str(target), *args], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "error" in proc.stderr and "Traceback" not in proc.stderr
    assert (str(target) if make != "bad_claim" else "nope") in proc.stderr
    if make == "no_preset":
        assert "--claims" in proc.stderr


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



def test_reproduce_top_report_counts_theory_rows_and_is_portable(tmp_path):
    results = tmp_path / "results"
    _sweep(results / "runs" / "rate_in_K", seeds=range(2))
    proc = subprocess.run([sys.executable, str(REPRODUCE), "--results", str(results), "--analysis-only",
                           "--only", "rate_in_K"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    top = (results / "REPORT.md").read_text()
    v = pd.read_csv(results / "verdicts.csv", keep_default_na=False, na_values=[""])
    theory_yes = int(((v["kind"] == "theory") & (v["holds"] == "yes")).sum())
    assert f"**Theory verdicts** ({int((v['kind'] == 'theory').sum())} rows): yes: {theory_yes}" in top
    assert "### Sanity checks" in top and "### Context" in top and "[rate_in_K/REPORT.md](rate_in_K/REPORT.md)" in top
    assert set(v["preset"]) == {"rate_in_K"} and set(v["claim_module"]) == {c.NAME for c in claims_for("rate_in_K")}
    for path in [results / "REPORT.md", *results.glob("rate_in_K/*.md"), *results.glob("rate_in_K/*.csv")]:
        assert str(tmp_path) not in path.read_text(), path  # the "Made by" argv too: --results is written "."
    report = (results / "rate_in_K" / "REPORT.md").read_text()
    assert ".pdf" not in report and "](figures/" in report
