"""rate_in_K: the exponent on the largest decade, the bound check first, and its controls (a stalled
sweep says "no"), on synthetic folders and through the real command line."""
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import REPO, run_cli
from lionconv import theory
from lionconv.claims import rate_in_K
from synthetic import edit_config, evaluate, write_rate_run

CONSTS = {"Delta": 2.0, "L": 3.0, "sigma": 0.5}


def _sweep(root, exponent, Ks=(100, 300, 1000, 3000, 10000), seeds=range(5), scale=1.0, opt="lion"):
    rng = np.random.default_rng(1)
    for K in Ks:
        for seed in seeds:
            avg = scale * K**exponent * math.exp(rng.normal(0, 0.02))
            write_rate_run(root, f"{opt}_K{K}_s{seed}", optimizer=opt, K=K, seed=seed, avg=avg, constants=CONSTS)


def _rate_row(rows, opt="lion"):
    (row,) = [r for r in rows if r.claim.startswith("rate in K") and r.scope.startswith(opt)]
    return row


def test_rate_at_the_theory_exponent_is_yes_on_the_largest_decade(tmp_path):
    _sweep(tmp_path, -0.25)
    table, rows = evaluate(tmp_path, rate_in_K)
    row = _rate_row(rows)
    assert row.kind == "theory" and row.holds == "yes" and row.interval == "seed-bootstrap (5 seeds)"
    assert row.measured == pytest.approx(-0.25, abs=0.02) and row.n == 15         # K ∈ {1000, 3000, 10000} only
    assert "K ∈ {1000, 3000, 10000}" in row.evidence and "runs under" in row.evidence
    assert "falls at least as fast as the bound" in row.evidence or "cross the bound" in row.evidence
    assert set(table["figure"]) == {"rate_in_K-problemscaled_separable-d100-wd0"}


def test_control_a_stalled_sweep_says_no(tmp_path):
    _sweep(tmp_path, 0.0, scale=0.01)           # flat far under the bound: a step far too small
    row = _rate_row(evaluate(tmp_path, rate_in_K)[1])
    assert row.holds == "no" and row.measured == pytest.approx(0.0, abs=0.02) and row.ci_low > -0.22


def test_control_a_pre_asymptotic_rate_is_not_yes_and_a_slow_one_is_no(tmp_path):
    _sweep(tmp_path / "slow", -0.15)
    assert _rate_row(evaluate(tmp_path / "slow", rate_in_K)[1]).holds == "no"
    _sweep(tmp_path / "edge", -0.22)            # the tolerance's edge: the CI straddles it
    assert _rate_row(evaluate(tmp_path / "edge", rate_in_K)[1]).holds == "unclear"


def test_control_a_run_over_its_bound_says_no(tmp_path):
    _sweep(tmp_path, -0.25, scale=1e3)          # the right exponent, but far above every bound
    row = _rate_row(evaluate(tmp_path, rate_in_K)[1])
    assert row.holds == "no" and "bound: 0/25 runs under" in row.evidence


def test_crossing_K_is_where_the_fits_meet():
    K = np.array([1e3, 3e3, 1e4] * 2)
    g = pd.DataFrame({"K": K, "y": 2.0 * K**-0.1, "bound": 20.0 * K**-0.35, "seed": [0] * 3 + [1] * 3})
    fit = rate_in_K.decade_fit(g, "y", 0, 0)
    assert rate_in_K.crossing_K(g, "y", fit) == pytest.approx(10.0 ** (1 / 0.25), rel=1e-6)   # 2K^-.1 = 20K^-.35


def test_few_seeds_and_baselines(tmp_path):
    _sweep(tmp_path / "two", -0.25, seeds=(0, 1))
    row = _rate_row(evaluate(tmp_path / "two", rate_in_K)[1])
    assert row.holds == "unclear" and row.interval == "ols-t (2 seeds)"
    _sweep(tmp_path / "b", -0.3, opt="sgd")
    _sweep(tmp_path / "b", 0.0, opt="signsgd")
    rows = evaluate(tmp_path / "b", rate_in_K)[1]
    assert {r.kind for r in rows} == {"context"} and {r.holds for r in rows} == {"n.a."}


def test_constant_schedule_gets_no_rate_verdict(tmp_path):
    for K in (100, 400, 1600):
        run = write_rate_run(tmp_path, f"c{K}", K=K, avg=1.0)
        edit_config(run, lambda cfg: (cfg["schedule"].update(name="constant"),
                                      cfg["optimizer"].update(lr=0.01, betas=[0.9, 0.99])))
        summary = json.loads((run / "summary.json").read_text())
        summary.update(lr=0.01, beta1=0.9, beta2=0.99)
        (run / "summary.json").write_text(json.dumps(summary))
    (row,) = evaluate(tmp_path, rate_in_K, n_boot=0)[1]
    assert row.kind == "context" and "constant" in row.theory and row.measured == pytest.approx(0.0)


def test_control_through_the_command_line_a_stalled_sweep_says_no(tmp_path):
    """The Bar's stalled sweep, shrunk: the rate_in_K preset with a step 1000× too small."""
    run_cli("-m", "experiment=rate_in_K", "optimizer=lion", "schedule.c2=1.0", "schedule.c3=0.001",
            "problem.d=100", "steps=100,300,1000", "seed=0,1,2,3,4", f"out_dir={tmp_path}", "progress=off",
            "log.every=10")
    out = tmp_path / "analysis"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "analyze.py"), str(tmp_path / "rate_in_K"),
                           "--out", str(out), "--n-boot", "200", "--no-figures"], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    v = pd.read_csv(out / "verdicts.csv")
    rate = v[(v["claim_module"] == "rate_in_K") & (v["kind"] == "theory")]
    assert len(rate) == 1 and rate["holds"].iloc[0] == "no", rate.to_dict("records")
    bound = v[(v["claim_module"] == "bound") & (v["kind"] == "theory")]
    assert (bound["holds"] == "yes").all()             # far under the bound: only the rate can catch it
