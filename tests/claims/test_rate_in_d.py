"""rate_in_d: exponent in d ≤ 1/2 where Δ, L, σ are fixed in d; sanity on the scaled separable family,
context on the naive one; control: a d-exponent of 1 (the naive family's growth) on a family with
fixed constants says no."""
import math

import numpy as np
import pytest

from lionconv.claims import rate_in_d
from synthetic import evaluate, write_rate_run


def _sweep(root, problem, exponent, constants, seeds=range(5)):
    rng = np.random.default_rng(2)
    for d in (100, 1000, 10000):
        for seed in seeds:
            write_rate_run(root, f"{problem}_d{d}_s{seed}", problem=problem, d=d, K=400, seed=seed,
                           avg=(d / 100) ** exponent * math.exp(rng.normal(0, 0.02)), constants=constants)


def test_scaled_family_is_sanity_and_naive_is_context(tmp_path):
    _sweep(tmp_path, "scaled_separable", 0.5, {"Delta": 2.0, "L": 3.0, "sigma": 1.0})
    _sweep(tmp_path, "naive_separable", 1.0, None)
    rows = {r.scope.split(" · ")[1]: r for r in evaluate(tmp_path, rate_in_d)[1]}
    assert rows["scaled_separable"].kind == "sanity" and rows["scaled_separable"].holds == "yes"
    assert rows["scaled_separable"].measured == pytest.approx(0.5, abs=0.02)
    assert rows["naive_separable"].kind == "context" and rows["naive_separable"].holds == "n.a."


@pytest.mark.parametrize("problem", ["rotated_separable", "teacher_student"])
def test_control_a_linear_growth_in_d_with_fixed_constants_says_no(tmp_path, problem):
    fixed = {"Delta": 2.0, "L": 3.0, "sigma": 1.0}
    _sweep(tmp_path / "ok", problem, 0.45, fixed)
    (ok,) = evaluate(tmp_path / "ok", rate_in_d)[1]
    assert ok.kind == "theory" and ok.holds == "yes"
    _sweep(tmp_path / "bad", problem, 1.0, fixed)
    (bad,) = evaluate(tmp_path / "bad", rate_in_d)[1]
    assert bad.kind == "theory" and bad.holds == "no" and bad.measured == pytest.approx(1.0, abs=0.02)
