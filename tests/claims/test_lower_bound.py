"""The lower_bound claim (THEORY §9): its measurements on constructed tables with known answers, its
verdict rules with controls that must say "no", and scripts/analyze.py on a real tiny sweep."""
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, run_cli
from lionconv.claims import lower_bound
from lionconv.claims.lower_bound import (hitting_exponent, hitting_step, l1_l2_summary, plot_hitting_times,
                                         plot_progress, progress_ratio, run_measurements)


def test_hitting_step_first_passage_and_censoring():
    steps = [0, 1, 2, 3, 4]
    assert hitting_step(steps, [5, 4, 1.9, 3, 1], 2.0, last_step=4) == (2, False)
    assert hitting_step(steps, [5, 4, 3, 3, 3], 2.0, last_step=4) == (5, True)
    assert hitting_step([0, 10, 20], [5, 2.0, 1], 2.0, last_step=29) == (10, False)  # ≤, on a grid


def _metrics(grad, prog_q, prog_1, prog_0, l1_l2):
    return pd.DataFrame({"step": np.arange(len(grad)), "grad_l2": grad, "prog_1_4": prog_q,
                         "prog_1": prog_1, "prog_0": prog_0, "l1_l2": l1_l2})


def test_run_measurements_by_hand():
    # T = 2, ε = 0.5 (2ε = 1): traversed (prog_1 = 2) at step 4, K = 5
    m = _metrics(grad=[3, 2, 2, 1.5, 1.2, 0.5, 0.2], prog_q=[0, 1, 1, 2, 2, 2, 2],
                 prog_1=[0, 0, 1, 1, 2, 2, 2], prog_0=[0, 1, 1, 2, 2, 2, 2],
                 l1_l2=[1, 1, 1.2, 1.2, 1.4, 1.4, 1.4])
    out = run_measurements(m, {"T": 2, "p": 0.25, "epsilon": 0.5}, steps_done=7)
    assert out["K"] == 5 and not out["censored"] and out["traversed_step"] == 4
    assert out["T_over_p"] == 8 and out["K_over_T_over_p"] == 5 / 8
    assert out["progress"] == 2 and out["progress_steps"] == 3 and out["progress_per_step"] == 2 / 3
    assert out["min_grad_over_2eps_before"] == 1.5 and out["max_support_growth"] == 1
    assert out["l1_l2_before"] == pytest.approx(np.mean([1, 1, 1.2, 1.2]))
    assert out["l1_l2_after"] == pytest.approx(1.4) and out["sqrt_T"] == math.sqrt(2)
    never = run_measurements(m.assign(grad_l2=3.0, prog_1=0), {"T": 2, "p": 0.25, "epsilon": 0.5},
                             steps_done=7)
    assert never["K"] == 7 and never["censored"] and math.isnan(never["traversed_step"])


def synthetic_table(exponent, seeds=6, censor_below=None, rng=0):
    rng = np.random.default_rng(rng)
    rows = []
    for eps in 0.005 * 2.0 ** (-np.arange(5) / 4):
        for seed in range(seeds):
            K = 1e-7 * eps ** -exponent * math.exp(0.1 * rng.standard_normal())
            cens = censor_below is not None and K > censor_below
            rows.append({"optimizer": "lion", "schedule": "constant", "lr": 1.0, "seed": seed,
                         "inv_epsilon": 1 / eps, "K": min(K, censor_below or K), "censored": cens,
                         "T_over_p": 1e-7 * eps ** -4, "K_over_T_over_p": 1.0})
    return pd.DataFrame(rows)


def test_hitting_exponent_recovers_four_and_its_control_does_not():
    four = hitting_exponent(synthetic_table(4.0), n_boot=400).iloc[0]
    assert four["ci_low"] <= 4.0 <= four["ci_high"] and four["method"] == "seed-bootstrap"
    assert four["T_over_p_slope"] == pytest.approx(4.0) and four["censoring"] == "none"
    two = hitting_exponent(synthetic_table(2.0), n_boot=400).iloc[0]   # control: a faster method
    assert two["ci_high"] < 4.0


def test_censoring_opens_the_interval_instead_of_dropping_runs():
    table = synthetic_table(4.0)
    cap = float(table["K"].quantile(0.8))
    censored = synthetic_table(4.0, censor_below=cap)
    fit = hitting_exponent(censored, n_boot=200).iloc[0]
    assert fit["n"] == len(censored) and fit["n_censored"] > 0
    assert fit["censoring"] == "up" and fit["ci_high"] == math.inf   # only large-1/ε runs censored
    assert fit["slope"] < hitting_exponent(table, n_boot=0).iloc[0]["slope"]


def simulate_progress(links_per_reveal, p=0.1, T=15, seeds=8, steps=400, rng=0):
    """Runs of an ideal zero-respecting method (one link per revealing draw) or of a cheat."""
    rng = np.random.default_rng(rng)
    rows = []
    for seed in range(seeds):
        prog = np.minimum(np.cumsum(rng.random(steps) < p) * links_per_reveal, T)
        prog = np.concatenate([[0], prog[:-1]])
        full = np.flatnonzero(prog >= T)
        k = int(full[0]) if len(full) else steps - 1
        rows.append({"optimizer": "x", "schedule": "constant", "lr": 1.0, "seed": seed, "p": p,
                     "progress": float(prog[k]), "progress_steps": k, "max_support_growth": 1.0,
                     "min_grad_over_2eps_before": 1.5})
    return pd.DataFrame(rows)


def test_progress_ratio_is_about_one_for_one_link_per_reveal_and_its_control_is_not():
    ideal = progress_ratio(simulate_progress(1), n_boot=500).iloc[0]
    assert ideal["ci_low"] <= 1.0 <= ideal["ci_high"]
    cheat = progress_ratio(simulate_progress(2), n_boot=500).iloc[0]
    assert cheat["ci_low"] > 1.0


def test_l1_l2_summary_and_figures(tmp_path):
    table = pd.DataFrame({"optimizer": ["lion", "lion", "sgd"], "T": [4, 4, 4], "K": [10, 12, 30],
                          "l1_l2_before": [1.0, 1.2, 1.5], "l1_l2_after": [1.9, 1.9, 1.8],
                          "sqrt_T": [2.0, 2.0, 2.0], "inv_epsilon": [200.0, 200.0, 200.0],
                          "T_over_p": [11.0] * 3, "censored": [False, False, True]})
    s = l1_l2_summary(table).set_index("optimizer")
    assert s.loc["lion", "l1_l2_before"] == pytest.approx(1.1) and s.loc["lion", "runs"] == 2
    assert plot_hitting_times(table, tmp_path, "k").stat().st_size > 0
    curves = pd.DataFrame({"optimizer": "lion", "epsilon": 0.01, "p": 0.1, "T": 2, "seed": 0,
                           "step": np.arange(20), "prog_1_4": np.arange(20) // 10})
    assert plot_progress(curves, tmp_path, "p").stat().st_size > 0


def claim_table(K_over_T_over_p, seeds=5, growth=1.0, min_grad=1.5, progress_over_p=0.9, censored=False,
                opt="lion", rng=0):
    """A claim table (the columns verdicts() reads) for one optimizer over 4 ε and `seeds` seeds:
    K = K_over_T_over_p·(T/p) with 10 % log-normal scatter, progress = progress_over_p·p·k."""
    rng = np.random.default_rng(rng)
    rows = []
    for eps, T in zip(0.005 * 2.0 ** (-np.arange(4) / 4), (5, 7, 10, 15)):
        p = 2116 * eps**2 / (1 + 2116 * eps**2)
        for seed in range(seeds):
            K = K_over_T_over_p * T / p * math.exp(0.1 * rng.standard_normal())
            k = int(T / p)
            rows.append({"scope": f"zero_chain {opt}", "figure": "lower_bound-plotK", "optimizer": opt,
                         "schedule": "constant", "lr": 1.0, "seed": seed, "d": T, "T": T, "p": p,
                         "epsilon": eps, "inv_epsilon": 1 / eps, "T_over_p": T / p, "K": K,
                         "censored": censored, "K_over_T_over_p": K / (T / p),
                         "progress": progress_over_p * p * k, "progress_steps": k,
                         "progress_per_step": progress_over_p * p, "min_grad_over_2eps_before": min_grad,
                         "max_support_growth": growth, "l1_l2_before": 1.3, "l1_l2_after": 1.8,
                         "sqrt_T": math.sqrt(T)})
    return pd.DataFrame(rows)


def _rows(table):
    return {r.claim.split(":")[0]: r for r in lower_bound.verdicts(table, n_boot=400)}


def test_verdicts_a_reveal_limited_method_above_the_bound_says_yes():
    table = claim_table(1.5)
    rows = _rows(table)
    level = rows["lower bound"]
    assert level.kind == "theory" and level.holds == "yes" and level.interval == "seed-bootstrap (5 seeds)"
    assert level.measured == pytest.approx(1.5, rel=0.05)
    assert rows["‖∇f‖₂ > 2ε until the chain is traversed"].holds == "yes"
    assert rows["support grows ≤ 1 coordinate per step"].holds == "yes"
    assert rows["progress per step ≤ p"].holds == "yes"
    exponent = rows["K(ε) ∝ (1/ε)^a"]
    assert exponent.kind == "context" and exponent.holds == "n.a."
    # K ∝ T/p: the fitted slope is T/p's own slope on the grid (NumPy OLS), not necessarily 4
    grid = table.drop_duplicates("epsilon")
    Tp_slope = np.polyfit(np.log(grid["inv_epsilon"]), np.log(grid["T_over_p"]), 1)[0]
    assert exponent.measured == pytest.approx(Tp_slope, abs=0.3)
    assert exponent.ci_low < exponent.measured < exponent.ci_high
    ratio = rows["‖∇f‖₁/‖∇f‖₂ before the traversal"]
    assert ratio.kind == "context" and ratio.measured == pytest.approx(1.3)


def test_control_a_method_below_the_bound_says_no_and_censoring_caps_it():
    rows = _rows(claim_table(0.5))                       # K = T/p / 2: a cheat that skips reveals
    assert rows["lower bound"].holds == "no"
    assert rows["lower bound"].ci_high < 1.0
    capped = _rows(claim_table(0.5, censored=True))      # censored K are lower bounds: no "no"
    assert capped["lower bound"].holds == "unclear"
    few = _rows(claim_table(0.5, seeds=3))               # < 5 seeds: at most "unclear"
    assert few["lower bound"].holds == "unclear"


def test_controls_for_the_sanity_rows_say_no():
    rows = _rows(claim_table(1.5, growth=2.0, min_grad=0.8, progress_over_p=2.0))
    assert rows["support grows ≤ 1 coordinate per step"].holds == "no"
    assert rows["‖∇f‖₂ > 2ε until the chain is traversed"].holds == "no"
    assert rows["progress per step ≤ p"].holds == "no"


def test_run_measurements_on_a_grid_divide_the_growth_by_the_steps_between_rows():
    m = _metrics(grad=[3, 3, 3], prog_q=[0, 2, 4], prog_1=[0, 0, 0], prog_0=[0, 2, 4], l1_l2=[1, 1, 1])
    m["step"] = [0, 2, 4]
    out = run_measurements(m, {"T": 10, "p": 0.5, "epsilon": 0.5}, steps_done=5)
    assert out["max_support_growth"] == 1.0 and out["censored"] and out["K"] == 5


def test_analyze_on_a_tiny_sweep_from_the_command_line(tmp_path):
    run_cli("-m", "experiment=lower_bound", "optimizer=lion", "problem.epsilon=0.005,0.0042045",
            "seed=0,1", "steps=150", f"out_dir={tmp_path}", "progress=off")
    out = tmp_path / "analysis"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "analyze.py"), str(tmp_path / "lower_bound"),
                           "--out", str(out), "--n-boot", "50"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out / "lower_bound.csv")
    assert len(table) == 4 and set(table["T"]) == {5, 7}
    assert (table["max_support_growth"] <= 1).all()
    assert (table["min_grad_over_2eps_before"].dropna() > 1).all()
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert {"theory", "sanity", "context"} <= set(verdicts["kind"])
    sanity = verdicts[verdicts["claim"].str.startswith(("support", "‖∇f‖₂ >"))]
    assert len(sanity) == 2 and (sanity["holds"] == "yes").all()
    assert (out / "figures" / "lower_bound-plotK.png").exists()
    assert (out / "figures" / "lower_bound-plotprogress.png").exists()


def test_ratio_of_sums_bootstraps_whole_seeds_by_hand():
    # seeds 0, 1 with sums (3, 2) and (7, 2): resamples {0,0} → 3/2, {0,1} → 10/4, {1,1} → 7/2
    est, lo, hi = lower_bound.ratio_of_sums([1, 2, 3, 4], [1, 1, 1, 1], [0, 0, 1, 1], n_boot=2000, seed=0)
    assert est == 2.5 and (lo, hi) == (1.5, 3.5)
    assert math.isnan(lower_bound.ratio_of_sums([1, 2], [1, 1], [0, 0], n_boot=100, seed=0)[1])
