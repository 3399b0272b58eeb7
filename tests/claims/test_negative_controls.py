"""negative_controls (§8): the exact 2-cycle, the constant-η level, the converging contrast and the
constant-β1 floor; each rule's control says no."""
import math

import numpy as np
import pytest

from lionconv.claims import negative_controls
from synthetic import by_claim, evaluate, write_run

HORIZON = {"name": "horizon", "c1": 1.0, "c2": 1.0, "c3": 1.0}


def _cycle_metrics(K, d, lr, transient=10):
    """|f'_i| = η/2 on every coordinate after a short transient: the exact 2-cycle."""
    per = np.where(np.arange(K) < transient, 1.0, lr / 2)
    return {"grad_l1": d * per, "grad_l2": math.sqrt(d) * per, "ratio_r": 1.0}


def test_two_cycle_control_holds_and_a_converging_run_does_not(tmp_path):
    for K in (100, 1000):
        write_run(tmp_path, f"cycle{K}", d=100, K=K, metrics=_cycle_metrics(K, 100, 0.01),
                  problem_cfg={"sigma": 0.0, "init": 1.005})
        k = np.arange(K) + 1.0
        write_run(tmp_path, f"conv{K}", d=50, K=K, metrics={"grad_l1": 50 / k, "grad_l2": math.sqrt(50) / k},
                  problem_cfg={"sigma": 0.0, "init": 1.005})
    table, rows = evaluate(tmp_path, negative_controls)
    cyc = {r.scope.split(" · ")[2]: r for r in by_claim(rows, "§8 control: exact 2-cycle")}
    level = {r.scope.split(" · ")[2]: r for r in by_claim(rows, "§8 control: constant η does not converge")}
    assert cyc["d=100"].holds == "yes" and cyc["d=100"].measured == pytest.approx(0.0, abs=1e-12)
    assert cyc["d=100"].kind == "theory" and cyc["d=100"].interval == "exact (deterministic rule)"
    assert level["d=100"].holds == "yes" and level["d=100"].measured == pytest.approx(1.0)
    assert cyc["d=50"].holds == "no"                                   # control: a converging run
    assert level["d=50"].holds == "no" and level["d=50"].measured < 0.9
    assert set(table["figure"]) == {"negative_controls-problemquadratic-d100", "negative_controls-problemquadratic-d50"}


def _fixed_beta1_sweep(root, fixed_exponent, seeds=range(5)):
    rng = np.random.default_rng(5)
    for K in (100, 1000, 10000):
        k = np.arange(K) + 1.0
        conv = {"grad_l1": 100 * k**-1.0, "grad_l2": 10 * k**-1.0}
        write_run(root, f"h0_{K}", K=K, schedule=HORIZON, metrics=conv, problem_cfg={"sigma": 0.0})
        for seed in seeds:
            noise = math.exp(rng.normal(0, 0.02))
            ann = {"grad_l1": noise * 100 * k**-0.5, "grad_l2": noise * 10 * k**-0.5}
            write_run(root, f"h1_{K}_{seed}", K=K, seed=seed, schedule=HORIZON, metrics=ann,
                      betas=(0.5, 0.9), lr=0.001, problem_cfg={"sigma": 1.0}, constants={"sigma": 1.0})
            if fixed_exponent is None:
                fixed = {"grad_l1": noise * 100 * np.maximum(k**-1.0, 0.05), "grad_l2": noise * 10 * np.maximum(k**-1.0, 0.05)}
            else:
                fixed = {"grad_l1": noise * 100 * k**fixed_exponent, "grad_l2": noise * 10 * k**fixed_exponent}
            write_run(root, f"f1_{K}_{seed}", K=K, seed=seed, schedule={**HORIZON, "beta1": 0.5}, metrics=fixed,
                      betas=(0.5, 0.9), lr=0.001, problem_cfg={"sigma": 1.0}, constants={"sigma": 1.0})


def test_contrast_and_fixed_beta1_rows(tmp_path):
    _fixed_beta1_sweep(tmp_path, None)
    rows = evaluate(tmp_path, negative_controls)[1]
    contrast = by_claim(rows, "§8 contrast")
    assert len(contrast) == 2 and all(r.holds == "yes" and r.kind == "theory" for r in contrast)
    (floor,) = by_claim(rows, "§8 control: constant β1 leaves a floor")
    assert floor.holds == "yes" and floor.interval == "seed-bootstrap (5 seeds)"
    (flatter,) = by_claim(rows, "§8 control: constant β1 flattens")
    assert flatter.holds == "yes" and flatter.measured > 0.05


def test_controls_a_fixed_beta1_run_that_keeps_converging_says_no(tmp_path):
    _fixed_beta1_sweep(tmp_path, -0.5)            # decays exactly like the annealed runs: no floor, no flattening
    rows = evaluate(tmp_path, negative_controls)[1]
    (floor,) = by_claim(rows, "§8 control: constant β1 leaves a floor")
    (flatter,) = by_claim(rows, "§8 control: constant β1 flattens")
    assert flatter.holds == "no" and flatter.measured == pytest.approx(0.0, abs=0.02)
    assert floor.holds == "no", floor.evidence


def test_control_a_stalled_annealed_run_says_no(tmp_path):
    for K in (100, 1000, 10000):
        write_run(tmp_path, f"h0_{K}", K=K, schedule=HORIZON, metrics={"grad_l1": 5.0, "grad_l2": 0.5},
                  problem_cfg={"sigma": 0.0})
    contrast = by_claim(evaluate(tmp_path, negative_controls)[1], "§8 contrast")
    assert len(contrast) == 2 and all(r.holds == "no" for r in contrast)
