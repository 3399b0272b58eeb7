"""l1_l2_ratio: r = ‖v‖₁/(√d‖v‖₂) stays ≥ r_floor across widths; control: a sparse gradient (r ∝ d^{-1/2}) says no."""
import math

import numpy as np
import pandas as pd
import pytest

from lionconv.analysis.load import load_tensor_metrics, safe_loader
from lionconv.analysis import load_runs
from lionconv.claims import l1_l2_ratio
from synthetic import by_claim, evaluate, write_rate_run

DS = (100, 1000, 10000)


def _sweep(root, problem, r_of_d, seeds=range(5), log_grid="linear"):
    """Runs whose full-gradient r (and ℓ1/ℓ2 = r·√d) is r_of_d(d)·(1 + 0.01·seed)."""
    for d in DS:
        for seed in seeds:
            r = r_of_d(d) * (1 + 0.01 * seed)
            run = write_rate_run(root, f"{problem}_d{d}_s{seed}", problem=problem, d=d, K=400, seed=seed,
                                 ratio=r, log_grid=log_grid)
            m = pd.read_parquet(run / "metrics.parquet")
            m["l1_l2"], m["mb_l1_l2"], m["mb_ratio_r"] = r * math.sqrt(d), r * math.sqrt(d), r
            m.to_parquet(run / "metrics.parquet", index=False)


def test_dense_network_gradients_stay_above_the_floor_with_hand_computed_numbers(tmp_path):
    _sweep(tmp_path, "digits_mlp", lambda d: 0.8 - 0.05 * math.log10(d / 100))   # 0.80, 0.75, 0.70
    rows = evaluate(tmp_path, l1_l2_ratio)[1]
    (floor,) = by_claim(rows, "r = ‖·‖₁/(√d‖·‖₂) stays ≥ c across widths: full ∇f")
    assert floor.kind == "theory" and floor.holds == "yes" and floor.interval == "seed-bootstrap (5 seeds)"
    assert floor.measured == pytest.approx(0.70 * 1.02)        # min over d of the seed mean (1 + 0.01·2)
    (trend,) = by_claim(rows, "trend of r in d: full ∇f")
    assert trend.kind == "context" and trend.holds == "n.a."
    slope = np.polyfit(np.log(DS), np.log([0.8, 0.75, 0.7]), 1)[0]
    assert trend.measured == pytest.approx(slope, rel=1e-3)
    assert {r.kind for r in by_claim(rows, "r = ‖·‖₁/(√d‖·‖₂) stays ≥ c across widths: minibatch")} == {"context"}
    assert not by_claim(rows, "‖·‖₁/‖·‖₂ ∝ d^s")            # the slope-1/2 rows are sanity, on separable only


def test_control_a_sparse_gradient_says_no(tmp_path):
    _sweep(tmp_path, "digits_mlp", lambda d: math.sqrt(9.0 / d))   # s = 9 nonzero coordinates: r = √(s/d)
    (floor,) = by_claim(evaluate(tmp_path, l1_l2_ratio)[1], "r = ‖·‖₁/(√d‖·‖₂) stays ≥ c across widths: full ∇f")
    assert floor.holds == "no" and floor.ci_high < 0.5


def test_geometric_grid_or_three_seeds_cannot_decide_and_separable_is_sanity(tmp_path):
    dense = lambda d: 0.8  # noqa: E731
    _sweep(tmp_path / "geo", "digits_mlp", dense, log_grid="geometric")
    (floor,) = by_claim(evaluate(tmp_path / "geo", l1_l2_ratio)[1], "r = ‖·‖₁/(√d‖·‖₂) stays ≥ c across widths: full")
    assert floor.holds == "unclear" and "not linear" in floor.evidence
    _sweep(tmp_path / "few", "digits_mlp", dense, seeds=range(3))
    (floor,) = by_claim(evaluate(tmp_path / "few", l1_l2_ratio)[1], "r = ‖·‖₁/(√d‖·‖₂) stays ≥ c across widths: full")
    assert floor.holds == "unclear" and floor.interval == "seed-bootstrap (3 seeds)"
    _sweep(tmp_path / "sep", "scaled_separable", dense)
    rows = evaluate(tmp_path / "sep", l1_l2_ratio)[1]
    slope_rows = by_claim(rows, "‖·‖₁/‖·‖₂ ∝ d^s")
    assert slope_rows and {r.kind for r in rows} >= {"sanity"} and "theory" not in {r.kind for r in rows}
    assert all(r.holds == "yes" for r in slope_rows if "time-averaged" in r.claim)


def test_per_tensor_rows_and_an_unreadable_tensor_table_is_reported_not_raised(tmp_path):
    write_rate_run(tmp_path, "ok", problem="digits_mlp", d=100)
    write_rate_run(tmp_path, "ok2", problem="digits_mlp", d=400)
    bad = write_rate_run(tmp_path, "badtensors", problem="digits_mlp", d=1600)
    (bad / "tensor_metrics.parquet").write_bytes(b"garbage")
    table, _ = evaluate(tmp_path, l1_l2_ratio)
    tensors = table[table["tensor"] != ""]
    assert set(tensors["tensor"]) == {"w", "b"} and set(tensors["run"]) == {"ok", "ok2"}
    runs, problems = load_runs(tmp_path)
    safe_loader(load_tensor_metrics, problems, tmp_path)(bad)
    assert [p.run for p in problems] == ["badtensors"] and "tensor_metrics.parquet" in problems[0].reason
