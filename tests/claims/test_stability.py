"""stability: CLion's one-example divergence ≤ Lion's, from paired snapshots; control: larger says no."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from lionconv.analysis.groups import clion_variant
from lionconv.claims import stability
from synthetic import by_claim, evaluate, write_run


def _pairs(root, speeds, seeds):
    steps = np.array([0, 1, 3, 7])
    base = np.arange(12, dtype=float).reshape(4, 3)
    for opt, speed in speeds.items():
        for seed in seeds:
            common = dict(optimizer=opt, problem="digits_mlp", d=3, K=8, seed=seed,
                          final={"loss": 0.1, "test_loss": 0.2},
                          summary={"training": {"initial_loss": 2.0, "final_loss": 0.1, "distance_from_start": 1.0}})
            write_run(root, f"{opt}_{seed}_full", problem_cfg={"n_train": 100, "drop_index": None},
                      snapshots=(steps, base), **common)
            shifted = base + speed * steps[:, None] * np.array([3.0, 4.0, 0.0]) / 5.0     # ‖shift‖ = speed·step
            write_run(root, f"{opt}_{seed}_drop", problem_cfg={"n_train": 100, "drop_index": 0},
                      snapshots=(steps[1:], shifted[1:]), **common)   # the common steps are 1, 3, 7


def test_stability_pairs_give_the_computed_distances(tmp_path):
    _pairs(tmp_path, {"clion": 1.0, "lion": 4.0}, (0, 1))
    table, rows = evaluate(tmp_path, stability, n_boot=0)
    lion = table[(table["optimizer"] == "lion") & (table["seed"] == 0)].sort_values("step")
    assert lion["step"].tolist() == [1, 3, 7]
    assert lion["distance"].to_numpy() == pytest.approx([4.0, 12.0, 28.0])
    final = stability.stability_final(table)
    assert final.set_index(["optimizer", "seed"]).loc[("clion", 1), "distance"] == pytest.approx(7.0)
    (stab,) = by_claim(rows, "§7 stability: CLion")
    assert stab.kind == "theory" and stab.measured == pytest.approx(0.25)
    assert stab.holds == "unclear" and stab.interval == "seed range (2 seeds)"     # 2 seeds cannot decide


def test_five_seeds_decide_and_the_control_says_no(tmp_path):
    _pairs(tmp_path / "ok", {"clion": 1.0, "lion": 4.0}, range(5))
    (ok,) = by_claim(evaluate(tmp_path / "ok", stability, n_boot=0)[1], "§7 stability: CLion")
    assert ok.holds == "yes"
    _pairs(tmp_path / "bad", {"clion": 4.0, "lion": 1.0}, range(5))
    (bad,) = by_claim(evaluate(tmp_path / "bad", stability, n_boot=0)[1], "§7 stability: CLion")
    assert bad.holds == "no" and bad.measured == pytest.approx(4.0)


def test_clion_settings_are_never_pooled():
    runs = pd.DataFrame({"optimizer": ["lion", "clion", "clion"], "gate": [None, "global", "coordinate"],
                         "nu": [math.nan, 1e-6, 1e-6]})
    assert clion_variant(runs).tolist() == ["lion", "clion[global, ν=1e-06]", "clion[coordinate, ν=1e-06]"]
    assert clion_variant(runs.iloc[:2]).tolist() == ["lion", "clion"]


def _n_sweep(root, exponents, seeds=range(5)):
    """Full-set/twin pairs at N ∈ {40, 400}: the final distance is 2·N^exponent·(1 + 0.1·seed)."""
    steps = np.array([0, 9])
    base = np.zeros((2, 2))
    for opt, a in exponents.items():
        for n in (40, 400):
            for seed in seeds:
                dist = 2.0 * n**a * (1.0 + 0.1 * seed)
                common = dict(optimizer=opt, problem="digits_mlp", d=2, K=10, seed=seed, final={"loss": 0.1},
                              summary={"training": {"initial_loss": 2.0, "final_loss": 0.1, "distance_from_start": 1.0},
                                       "min_tau": 1e-3})
                write_run(root, f"{opt}_{n}_{seed}", problem_cfg={"n_train": n, "replace_index": None},
                          snapshots=(steps, base + np.array([[0.0, 0.0], [1.0, 0.0]])), **common)
                write_run(root, f"{opt}_{n}_{seed}_twin", problem_cfg={"n_train": n, "replace_index": 0},
                          snapshots=(steps, base + np.array([[0.0, 0.0], [1.0, dist]])), **common)


def _div_slopes(rows):
    return {r.scope.split(" · ")[0]: r for r in by_claim(rows, "§7 stability: E‖x_T")}


def test_divergence_like_one_over_n_gives_slope_minus_one_and_the_control_says_no(tmp_path):
    _n_sweep(tmp_path / "ok", {"clion": -1.0, "lion": 0.0})
    s = _div_slopes(evaluate(tmp_path / "ok", stability)[1])
    # mean over seeds at each N ∝ N^a exactly: slope log(10^a)/log(10) = a
    assert s["clion"].kind == "theory" and s["clion"].measured == pytest.approx(-1.0) and s["clion"].holds == "yes"
    assert s["lion"].kind == "context" and s["lion"].measured == pytest.approx(0.0, abs=1e-9)
    _n_sweep(tmp_path / "bad", {"clion": -0.5, "lion": 0.0})
    bad = _div_slopes(evaluate(tmp_path / "bad", stability)[1])["clion"]
    assert bad.holds == "no" and bad.measured == pytest.approx(-0.5)


def test_a_full_set_run_that_did_not_train_makes_the_slope_not_applicable(tmp_path):
    _n_sweep(tmp_path, {"clion": -1.0, "lion": 0.0})
    s = json.loads((tmp_path / "clion_40_0" / "summary.json").read_text())
    s["training"]["final_loss"] = s["final"]["loss"] = 1.9             # > half the initial 2.0
    (tmp_path / "clion_40_0" / "summary.json").write_text(json.dumps(s))
    s = _div_slopes(evaluate(tmp_path, stability)[1])["clion"]
    assert s.holds == "n.a." and "1 of 10 full-set runs did not train" in s.evidence
