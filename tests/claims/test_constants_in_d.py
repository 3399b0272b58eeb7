"""constants_in_d (sanity): Δ, L, σ fixed across d on the scaled family, ∝ d and √d on the naive one."""
import math

import pytest

from lionconv.claims import constants_in_d
from synthetic import by_claim, evaluate, write_run


def test_constants_fixed_and_growing_in_d(tmp_path):
    for d in (100, 1000, 10000):
        for seed in (0, 1):
            write_run(tmp_path, f"s{d}_{seed}", problem="scaled_separable", d=d, seed=seed,
                      constants={"Delta": 2.0 + 0.1 * seed, "L": 3.0, "sigma": 1.0})
            write_run(tmp_path, f"n{d}_{seed}", problem="naive_separable", d=d, seed=seed,
                      constants={"Delta": 2.0 * d * (1 + 0.01 * seed), "L": 3.0, "sigma": math.sqrt(d)})
    rows = evaluate(tmp_path, constants_in_d)[1]
    (fixed,) = by_claim(rows, "§6 Δ, L, σ fixed")
    assert fixed.holds == "yes" and fixed.kind == "sanity" and fixed.measured == pytest.approx(2.1 / 2.0)
    contrast = {r.claim: r for r in by_claim(rows, "§6 contrast")}
    assert contrast["§6 contrast family: Delta ∝ d^1"].measured == pytest.approx(1.0, abs=1e-3)
    assert contrast["§6 contrast family: sigma ∝ d^0.5"].measured == pytest.approx(0.5, abs=1e-9)
    assert all(r.holds == "yes" for r in contrast.values())


def test_growing_constants_on_the_scaled_family_say_no(tmp_path):
    for d in (100, 10000):
        write_run(tmp_path, f"s{d}", problem="scaled_separable", d=d, constants={"Delta": 2.0 * d ** 0.25, "sigma": 1.0})
    (row,) = evaluate(tmp_path, constants_in_d)[1]
    assert row.holds == "no" and row.measured == pytest.approx(10 ** 0.5)
