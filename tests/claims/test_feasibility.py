"""feasibility (sanity): from outside the box, the fastest sign path reaches it at k_min; a jump out says no."""
import math

import numpy as np
import pytest

from lionconv.claims import feasibility
from synthetic import evaluate, write_run


def test_feasibility_follows_the_fast_path_and_a_violation_is_caught(tmp_path):
    lam, lr, x0, K = 5.0, 0.01, 0.3, 60
    q = 1 - lr * lam
    x = [x0]
    for _ in range(K - 1):
        x.append(max(q * x[-1] - lr, 0.1))          # inward at full speed, then parked inside the box
    x = np.array(x)
    for name, xs in (("fast", x), ("bad", x * np.where(np.arange(K) == 3, 1.5, 1.0))):
        write_run(tmp_path, name, problem="scaled_separable" if name == "fast" else "other", d=10, K=K, lr=lr,
                  weight_decay=lam, metrics={"x_linf": xs, "feasibility": np.maximum(0, lam * xs - 1),
                                              "grad_l1": 1.0, "grad_l2": 1.0})
    table, rows = evaluate(tmp_path, feasibility)
    table = table.set_index("run")
    k_min = math.log((lam * x0 + 1) / 2) / -math.log(q)
    assert table.loc["fast", "k_min"] == pytest.approx(k_min)
    assert table.loc["fast", "k_reach"] == math.ceil(k_min)
    rows = {(r.claim.split(": ")[1].split()[0], r.scope.split(" · ")[1]): r for r in rows}
    assert rows[("violation", "scaled_separable")].holds == "yes"
    assert rows[("violation", "scaled_separable")].measured == pytest.approx(math.ceil(k_min) / k_min)
    assert rows[("geometric", "scaled_separable")].holds == "yes"
    assert rows[("violation", "other")].holds == "no"
    assert {r.kind for r in rows.values()} == {"sanity"}
