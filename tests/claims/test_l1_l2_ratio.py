"""l1_l2_ratio: ‖v‖₁/‖v‖₂ ∝ d^{1/2}; control: a sparse gradient (ratio constant in d) says no."""
import math

import numpy as np
import pandas as pd
import pytest

from lionconv.analysis.load import load_tensor_metrics, safe_loader
from lionconv.analysis import load_runs
from lionconv.claims import l1_l2_ratio
from synthetic import evaluate, write_rate_run


def _sweep(root, problem, ratio_of_d, seeds=range(5)):
    rng = np.random.default_rng(3)
    for d in (100, 1000, 10000):
        for seed in seeds:
            run = write_rate_run(root, f"{problem}_d{d}_s{seed}", problem=problem, d=d, K=400, seed=seed)
            m = pd.read_parquet(run / "metrics.parquet")
            m["l1_l2"] = ratio_of_d(d) * math.exp(rng.normal(0, 0.02))
            m["mb_l1_l2"] = m["l1_l2"]
            m.to_parquet(run / "metrics.parquet", index=False)


def test_dense_gradients_on_a_network_say_yes_and_separable_is_sanity(tmp_path):
    _sweep(tmp_path / "net", "digits_mlp", lambda d: 0.8 * math.sqrt(d))
    rows = evaluate(tmp_path / "net", l1_l2_ratio)[1]
    time_avg = [r for r in rows if "time-averaged" in r.claim]
    assert len(time_avg) == 2 and all(r.kind == "theory" and r.holds == "yes" for r in time_avg)
    assert time_avg[0].measured == pytest.approx(0.5, abs=0.02)
    _sweep(tmp_path / "sep", "scaled_separable", lambda d: 0.8 * math.sqrt(d))
    assert {r.kind for r in evaluate(tmp_path / "sep", l1_l2_ratio)[1]} == {"sanity"}


def test_control_a_sparse_gradient_says_no(tmp_path):
    _sweep(tmp_path, "digits_mlp", lambda d: 3.0)           # s nonzero coordinates: ratio ≤ √s, flat in d
    rows = [r for r in evaluate(tmp_path, l1_l2_ratio)[1] if "time-averaged" in r.claim]
    assert rows and all(r.holds == "no" for r in rows)


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
