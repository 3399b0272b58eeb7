"""negative_controls (§8): the exact 2-cycle, the constant-η level from several θ0, the converging
contrast, the skewed-noise fixed points and floor, the symmetric-noise context; each rule's control says no."""
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
    cyc = {r.scope.split(" · ")[1]: r for r in by_claim(rows, "§8 control: exact 2-cycle")}
    level = {r.scope.split(" · ")[1]: r for r in by_claim(rows, "§8 control: constant η does not converge")}
    assert cyc["d=100"].holds == "yes" and cyc["d=100"].measured == pytest.approx(0.0, abs=1e-12)
    assert cyc["d=100"].kind == "sanity" and cyc["d=100"].interval == "exact (deterministic rule)"
    assert level["d=100"].holds == "yes" and level["d=100"].measured == pytest.approx(1.0)
    assert cyc["d=50"].holds == "no"                                   # control: a converging run
    assert level["d=50"].holds == "no" and level["d=50"].measured < 0.9
    assert set(table["figure"]) == {"negative_controls-problemquadratic-d100", "negative_controls-problemquadratic-d50"}


def test_constant_eta_level_from_the_lattice_and_a_generic_theta0(tmp_path):
    """The level rule, not the cycle: the 4-cycle {η, 0, −η, 0} from θ0 ∈ ηℤ has late mean |f'| = η/2
    exactly; a longer cycle a higher mean; neither gets an exact-2-cycle row (θ0/η ≢ ½)."""
    lr, d = 0.01, 16
    for K in (100, 1000):
        four = np.where(np.arange(K) % 2 == 0, lr, 0.0)                 # |θ| = η, 0, η, 0, ...
        write_run(tmp_path, f"lat{K}", d=d, K=K, metrics={"grad_l1": d * four, "grad_l2": math.sqrt(d) * four},
                  problem_cfg={"sigma": 0.0, "init": 0.01})
        gen = np.tile([0.0123, 0.0023, 0.0077, 0.0177, 0.0123, 0.0023, 0.0077, 0.0177], K)[:K]
        write_run(tmp_path, f"gen{K}", d=d, K=K, metrics={"grad_l1": d * gen, "grad_l2": math.sqrt(d) * gen},
                  problem_cfg={"sigma": 0.0, "init": 0.0123})
    rows = evaluate(tmp_path, negative_controls)[1]
    level = {r.scope.split("θ0/η=")[1]: r for r in by_claim(rows, "§8 control: constant η does not converge")}
    assert level["1"].holds == "yes" and level["1"].measured == pytest.approx(1.0)
    # mean of (1.23, 0.23, 0.77, 1.77)η over a window of whole periods = 1.0·η; times 2/η → 2·1.0 = 2.0
    assert level["1.23"].holds == "yes" and level["1.23"].measured == pytest.approx(2.0, rel=0.02)
    assert all(r.kind == "theory" for r in level.values())
    assert not by_claim(rows, "§8 control: exact 2-cycle")


A, B = 1.0, 9.0
TWO_POINT = {"init": 0.0, "noise": "two_point", "noise_a": A, "noise_b": B}


def _skewed_sweep(root, fixed, signsgd, annealed, seeds=range(5)):
    """Two-point runs from θ0 = 0: fixed(K) / signsgd(K) / annealed(K) give the late mean θ (all
    coordinates equal, so |f'| = |θ|), a small per-seed jitter on top."""
    rng = np.random.default_rng(7)
    d = 16
    for K in (100, 1000, 10000):
        for seed in seeds:
            for name, theta, opt, sched, betas in (
                    ("f", fixed(K), "lion", {**HORIZON, "beta1": 0.5}, (0.5, 0.9)),
                    ("s", signsgd(K), "signsgd", HORIZON, (0.0, 0.0)),
                    ("a", annealed(K), "lion", HORIZON, (1 - 1 / math.sqrt(K), 0.9))):
                th = theta * (1 + rng.normal(0, 0.005))
                write_run(root, f"{name}{K}_{seed}", optimizer=opt, d=d, K=K, seed=seed, schedule=sched, betas=betas,
                          lr=K ** -0.75, problem_cfg=TWO_POINT,
                          metrics={"grad_l1": d * abs(th), "grad_l2": math.sqrt(d) * abs(th), "grad_mean": th})


def test_skewed_noise_fixed_points_floor_and_annealed_contrast(tmp_path):
    # THEORY §8's transcription: β1 = 0.5 at −0.49…−0.54, SignSGD at −1, annealed 0.365·(K/100)^−0.26
    _skewed_sweep(tmp_path, lambda K: -0.5 - 0.044 * (K == 100), lambda K: -1.0,
                  lambda K: -0.365 * (K / 100) ** -0.26)
    table, rows = evaluate(tmp_path, negative_controls)
    assert set(table["kind"]) == {"skewed_fixed_beta1", "skewed_signsgd", "skewed_annealed"}
    assert table.loc[table["kind"] == "skewed_fixed_beta1", "theta_star"].iloc[0] == pytest.approx(-0.5)
    assert table.loc[table["kind"] == "skewed_signsgd", "theta_star"].iloc[0] == pytest.approx(-1.0)
    (lion,) = by_claim(rows, "§8 control: skewed noise, Lion, β1 fixed settles")
    (sign,) = by_claim(rows, "§8 control: skewed noise, SignSGD settles")
    (flat,) = by_claim(rows, "§8 control: skewed noise, β1 fixed: late |f'|")
    (contrast,) = by_claim(rows, "§8 contrast: skewed noise, annealed β1")
    assert lion.holds == "yes" and lion.measured == pytest.approx(-0.5, abs=0.01) and lion.interval == "seed range (5 seeds)"
    assert sign.holds == "yes" and sign.measured == pytest.approx(-1.0, abs=0.01)
    assert flat.holds == "yes" and flat.kind == "theory"
    assert contrast.holds == "yes" and contrast.measured == pytest.approx(-0.26, abs=0.01)


def test_controls_skewed_rules_say_no_on_converging_fixed_runs_and_a_stalled_annealed_run(tmp_path):
    # fixed β1 converging like an annealed run; SignSGD at Lion's θ*; annealed stuck at 0.5
    _skewed_sweep(tmp_path, lambda K: -0.365 * (K / 100) ** -0.26, lambda K: -0.5, lambda K: -0.5)
    rows = evaluate(tmp_path, negative_controls)[1]
    (lion,) = by_claim(rows, "§8 control: skewed noise, Lion, β1 fixed settles")
    (sign,) = by_claim(rows, "§8 control: skewed noise, SignSGD settles")
    (flat,) = by_claim(rows, "§8 control: skewed noise, β1 fixed: late |f'|")
    (contrast,) = by_claim(rows, "§8 contrast: skewed noise, annealed β1")
    assert (lion.holds, sign.holds, flat.holds, contrast.holds) == ("no", "no", "no", "no")


def test_too_few_seeds_is_at_most_unclear(tmp_path):
    _skewed_sweep(tmp_path, lambda K: -0.5, lambda K: -1.0, lambda K: -0.365 * (K / 100) ** -0.26, seeds=range(2))
    rows = by_claim(evaluate(tmp_path, negative_controls)[1], "§8 control: skewed")
    assert rows and all(r.holds == "unclear" for r in rows)


def test_symmetric_noise_with_fixed_beta1_is_context(tmp_path):
    k_rng = np.random.default_rng(3)
    for K in (100, 1000, 10000):
        for seed in range(5):
            th = 0.4 * (K / 100) ** -0.39 * math.exp(k_rng.normal(0, 0.01))
            write_run(tmp_path, f"sym{K}_{seed}", d=16, K=K, seed=seed, schedule={**HORIZON, "beta1": 0.5},
                      betas=(0.5, 0.9), problem_cfg={"init": 0.0, "sigma": 12.0},
                      metrics={"grad_l1": 16 * th, "grad_l2": 4 * th, "grad_mean": 0.0})
    (row,) = evaluate(tmp_path, negative_controls)[1]
    assert row.claim == "§8 context: constant β1, symmetric noise converges anyway"
    assert row.kind == "context" and row.holds == "n.a." and row.measured == pytest.approx(-0.39, abs=0.01)


def test_control_a_stalled_annealed_run_says_no(tmp_path):
    for K in (100, 1000, 10000):
        write_run(tmp_path, f"h0_{K}", K=K, schedule=HORIZON, metrics={"grad_l1": 5.0, "grad_l2": 0.5},
                  problem_cfg={"sigma": 0.0})
    contrast = by_claim(evaluate(tmp_path, negative_controls)[1], "§8 contrast")
    assert len(contrast) == 2 and all(r.holds == "no" for r in contrast)
