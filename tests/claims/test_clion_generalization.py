"""clion_generalization: the N-slope of the mean gap for Lion, SignSGD and CLion (control: a gap ∝ N^-1/2
says no), "n.a." for a run that did not train, the matched-loss comparison (control: a larger CLion gap
says no), and the core pieces (fit of the mean, reading a trajectory at a train loss) by hand."""
import numpy as np
import pytest

from lionconv.analysis.fit import fit_mean_power_law, stratified_mean_ci
from lionconv.claims import clion_generalization
from lionconv.claims.clion_generalization import at_train_loss
from synthetic import by_claim, evaluate, write_run

NS = (40, 120, 400, 1280)
TRAINED = {"initial_loss": 2.0, "final_loss": 0.1, "distance_from_start": 1.0}


def _sweep(root, exponent, opts=("lion", "signsgd", "clion"), seeds=range(5), untrained=None):
    for opt in opts:
        for n in NS:
            for seed in seeds:
                gap = 5.0 * n**exponent * (1.0 + 0.05 * seed)
                final = 2.0 if (opt, n, seed) == untrained else 0.1
                write_run(root, f"{opt}_{n}_{seed}", optimizer=opt, problem="digits_mlp", d=10, K=50, seed=seed,
                          problem_cfg={"n_train": n, "replace_index": None},
                          final={"loss": final, "test_loss": final + gap, "train_acc": 1.0, "test_acc": 1.0 - gap},
                          metrics={"tau": 1e-3},
                          summary={"min_tau": 1e-4, "training": {**TRAINED, "final_loss": final}})


def _slopes(rows):
    return {(r.scope.split(" · ")[0], "0-1" in r.claim): r for r in by_claim(rows, "§7 generalization: E[gap]")}


def test_a_gap_like_one_over_n_gives_slope_minus_one_for_every_optimizer(tmp_path):
    _sweep(tmp_path, -1.0)
    table, rows = evaluate(tmp_path, clion_generalization)
    slopes = _slopes(rows)
    assert len(slopes) == 6
    for r in slopes.values():
        # mean over seeds at each N = 5·N^-1·mean(1 + 0.05·seed): exactly slope −1
        assert r.kind == "theory" and r.holds == "yes" and r.measured == pytest.approx(-1.0, abs=1e-9)
        assert r.ci_low <= -1.0 <= r.ci_high and r.interval == "seed-bootstrap (5 seeds)"
    (term,) = [r for r in by_claim(rows, "§7 Lion's bound term") if r.scope.startswith("lion")]
    assert term.kind == "context" and term.measured == pytest.approx(-np.log10(1280) - 50 * np.log10(1e-4))
    assert set(table["figure"]) == {"clion_generalization-problemdigits_mlp"}


def test_control_a_gap_like_one_over_root_n_says_no(tmp_path):
    _sweep(tmp_path, -0.5)
    for r in _slopes(evaluate(tmp_path, clion_generalization)[1]).values():
        assert r.holds == "no" and r.measured == pytest.approx(-0.5, abs=1e-9)


def test_a_run_that_did_not_train_makes_its_rows_not_applicable(tmp_path):
    _sweep(tmp_path, -1.0, opts=("lion", "clion"), untrained=("clion", 400, 2))   # final loss = initial
    slopes = _slopes(evaluate(tmp_path, clion_generalization)[1])
    assert slopes[("clion", False)].holds == "n.a." and "1 of 20 runs did not train" in slopes[("clion", False)].evidence
    assert slopes[("lion", False)].holds == "yes"


def _trajectories(root, clion_gap_rate, seeds=range(5)):
    """Lion: train loss 2 − 0.04·t, gap 0.01·t; CLion: train loss 2 − 0.03·t (0.53 at t = 49), gap
    rate·t. At train loss 0.53 Lion is at t = 36.75 (between logged 36 and 37), gap 0.3675."""
    t = np.arange(50.0)
    for seed in seeds:
        for opt, slope, rate in (("lion", 0.04, 0.01), ("clion", 0.03, clion_gap_rate)):
            loss = 2.0 - slope * t
            write_run(root, f"{opt}_{seed}", optimizer=opt, problem="digits_mlp", d=10, K=50, seed=seed,
                      problem_cfg={"n_train": 100, "replace_index": None},
                      metrics={"loss": loss, "test_loss": loss + rate * t, "train_acc": 1.0, "test_acc": 1.0},
                      final={"loss": loss[-1], "test_loss": loss[-1] + rate * 49, "train_acc": 1.0, "test_acc": 1.0},
                      summary={"training": {"initial_loss": 2.0, "final_loss": float(loss[-1]),
                                            "distance_from_start": 1.0}})


def test_matched_loss_pairs_give_the_hand_computed_difference(tmp_path):
    _trajectories(tmp_path, 0.006)                       # CLion's gap at the end: 0.294
    table, rows = evaluate(tmp_path, clion_generalization)
    c = table[table["base_optimizer"] == "clion"].iloc[0]
    assert c["matched_loss"] == pytest.approx(0.53) and c["lion_matched_step"] == pytest.approx(36.75)
    assert c["lion_matched_gap"] == pytest.approx(0.3675) and c["matched_gap"] == pytest.approx(0.294)
    (ce,) = by_claim(rows, "§7 CLion generalizes better than Lion at matched train loss (cross-entropy")
    assert ce.kind == "theory" and ce.measured == pytest.approx(0.294 - 0.3675) and ce.holds == "yes"


def test_control_a_larger_clion_gap_at_matched_loss_says_no(tmp_path):
    _trajectories(tmp_path, 0.009)                       # 0.441 > 0.3675
    (ce,) = by_claim(evaluate(tmp_path, clion_generalization)[1], "§7 CLion generalizes better than Lion at matched")[:1]
    assert ce.holds == "no" and ce.measured == pytest.approx(0.441 - 0.3675)


def test_at_train_loss_interpolates_between_logged_steps():
    traj = (np.array([0.0, 10.0, 20.0]), np.array([2.0, 1.0, 0.5]), np.array([0.0, 0.2, 0.6]), np.array([0.0, 0.1, 0.3]))
    assert at_train_loss(traj, 0.75) == pytest.approx((15.0, 0.4, 0.2))     # halfway between 1.0 and 0.5
    assert at_train_loss(traj, 3.0) == pytest.approx((0.0, 0.0, 0.0))
    assert np.isnan(at_train_loss(traj, 0.1)[1])                           # never reached


def test_fit_of_the_mean_keeps_values_at_or_below_zero():
    # means: N=10: 2.0, N=100: (0.5 − 0.1)/2 = 0.2 → slope log(0.1)/log(10) = −1
    fit = fit_mean_power_law([10, 10, 100, 100], [1.0, 3.0, 0.5, -0.1], n_boot=0)
    assert fit.slope == pytest.approx(-1.0) and fit.n == 4
    assert fit_mean_power_law([10, 10, 100, 100], [1.0, 3.0, 0.1, -0.1], n_boot=0) is None   # mean 0: no log
    mean, lo, hi, G = stratified_mean_ci([1.0, 1.0, 3.0, 3.0], ["a", "a", "b", "b"], n_boot=100)
    assert (mean, lo, hi, G) == (2.0, 2.0, 2.0, 2)     # under 4 per stratum: no bootstrap, mean only
