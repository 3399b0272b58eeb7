"""active_constraint (§3): the face share at the end (theory, control: iterates that stay inside say no)
and ‖∇f‖₁ → √d·|φ'(ρ − μ)| (context), on hand-made runs; the interior-box G_λ rows of rate_in_K are sanity."""
import math

import numpy as np
import pytest

from lionconv.claims import active_constraint, rate_in_K
from synthetic import by_claim, evaluate, write_rate_run, write_run

D = 100
LAM = math.sqrt(D)            # ρ = √d/λ = 1 < μ = 2
FACE_L1 = math.sqrt(D) * abs(-1.0 + 0.5 * 2.0 * math.sin(2.0 * -1.0))    # √d·|φ'(ρ − μ)|, φ'(u) = u + αω sin ωu


def _runs(root, face_end, seeds=range(5), shift=2.0):
    for K in (100, 300, 1000):
        for seed in seeds:
            face = np.linspace(0.0, face_end, K)
            write_run(root, f"r{K}_{seed}_{shift}", problem="scaled_separable", d=D, K=K, seed=seed, weight_decay=LAM,
                      problem_cfg={"shift": shift, "alpha": 0.5, "omega": 2.0},
                      metrics={"face_fraction": face, "grad_l1": FACE_L1 * (1 + 1 / np.arange(1, K + 1)),
                               "kkt_residual": np.arange(1, K + 1) ** -0.25})


def test_face_reached_is_yes_and_grad_l1_tends_to_the_face_value(tmp_path):
    _runs(tmp_path, 0.99)
    _runs(tmp_path, 0.0, shift=0.5)                 # μ < ρ: the minimiser is inside, not this claim's
    table, rows = evaluate(tmp_path, active_constraint)
    assert set(table["mu"]) == {2.0} and table["face_l1"].iloc[0] == pytest.approx(19.0929742, rel=1e-6)
    (face,) = by_claim(rows, "§3 active constraint: the iterates reach the face")
    (l1,) = by_claim(rows, "§3 active constraint: ‖∇f‖₁")
    assert face.kind == "theory" and face.holds == "yes" and face.measured == pytest.approx(0.99)
    assert face.interval == "seed range (5 seeds)"
    assert l1.kind == "context" and l1.measured == pytest.approx(1.001, abs=1e-6)     # 1 + 1/K at K = 1000


def test_control_iterates_that_stay_inside_the_box_say_no(tmp_path):
    _runs(tmp_path, 0.3)
    (face,) = by_claim(evaluate(tmp_path, active_constraint)[1], "§3 active constraint: the iterates reach")
    assert face.holds == "no"


def test_rate_rows_are_sanity_with_an_interior_minimiser_and_theory_with_an_active_face(tmp_path):
    for K in (100, 300, 1000):
        for seed in range(5):
            write_rate_run(tmp_path / "in", f"r{K}_{seed}", K=K, seed=seed, weight_decay=5.0, avg=K ** -0.25)
            write_rate_run(tmp_path / "act", f"r{K}_{seed}", K=K, seed=seed, weight_decay=LAM, avg=K ** -0.25,
                           problem_cfg={"shift": 2.0})
    (inner,) = [r for r in evaluate(tmp_path / "in", rate_in_K)[1] if r.claim == "rate in K: avg G_λ"]
    (active,) = [r for r in evaluate(tmp_path / "act", rate_in_K)[1] if r.claim == "rate in K: avg G_λ"]
    assert inner.kind == "sanity" and active.kind == "theory"
