"""stability: CLion's one-example divergence ≤ Lion's, from paired snapshots; control: larger says no."""
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
                          final={"loss": 0.1, "test_loss": 0.2})
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
