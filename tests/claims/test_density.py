"""density: r = ‖∇f‖₁/(√d‖∇f‖₂) bounded away from 0 on rate runs; sanity on separable families,
theory elsewhere; control: a gradient that gets sparser with d (r ∝ d^-1/2) says no."""
import math

import numpy as np
import pandas as pd

from lionconv.claims import density
from synthetic import by_claim, evaluate, write_rate_run


def _sweep(root, problem, r_of_d, seeds=range(5)):
    rng = np.random.default_rng(4)
    for d in (100, 1000, 10000):
        for seed in seeds:
            run = write_rate_run(root, f"d{d}_s{seed}", problem=problem, d=d, seed=seed,
                                 constants={"Delta": 2.0, "L": 3.0, "sigma": 1.0})
            m = pd.read_parquet(run / "metrics.parquet")
            m["ratio_r"] = r_of_d(d) * math.exp(rng.normal(0, 0.02))
            m.to_parquet(run / "metrics.parquet", index=False)


def test_dense_gradients_say_yes_and_separable_rows_are_sanity(tmp_path):
    _sweep(tmp_path / "net", "teacher_student", lambda d: 0.8)
    rows = evaluate(tmp_path / "net", density)[1]
    (row,) = by_claim(rows, "§4 lower bound")
    assert row.kind == "theory" and row.holds == "yes"
    assert {r.kind for r in by_claim(rows, "§4 context")} == {"context"}
    _sweep(tmp_path / "sep", "scaled_separable", lambda d: 0.8)
    (sep,) = by_claim(evaluate(tmp_path / "sep", density)[1], "§4 lower bound")
    assert sep.kind == "sanity" and sep.holds == "yes"


def test_control_a_gradient_that_gets_sparser_with_d_says_no(tmp_path):
    _sweep(tmp_path, "teacher_student", lambda d: 4.0 / math.sqrt(d))    # a fixed number of nonzeros
    (row,) = by_claim(evaluate(tmp_path, density)[1], "§4 lower bound")
    assert row.holds == "no" and row.measured < 0.5
