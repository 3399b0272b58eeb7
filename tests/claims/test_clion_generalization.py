"""clion_generalization: CLion's gap ∝ 1/N (theory), Lion's bound term (context); control: a gap
∝ N^-1/2 says no."""
import pytest

from lionconv import theory
from lionconv.claims import clion_generalization
from synthetic import by_claim, evaluate, write_run


def _sweep(root, exponent, seeds=range(5)):
    for opt in ("clion", "lion"):
        for n in (100, 200, 400, 800):
            for seed in seeds:
                gap = 5.0 * n**exponent * (1.0 + 0.05 * seed)
                write_run(root, f"{opt}_{n}_{seed}", optimizer=opt, problem="digits_mlp", d=10, K=50, seed=seed,
                          problem_cfg={"n_train": n, "drop_index": None},
                          final={"loss": 0.1, "test_loss": 0.1 + gap, "train_acc": 1.0, "test_acc": 1.0 - gap},
                          metrics={"tau": 1e-3}, summary={"min_tau": 1e-4})


def test_generalization_gap_following_one_over_n_gives_slope_minus_one(tmp_path):
    _sweep(tmp_path, -1.0)
    write_run(tmp_path, "clion_neg", optimizer="clion", problem="digits_mlp", d=10, K=50, seed=9,
              problem_cfg={"n_train": 800, "drop_index": None}, final={"loss": 0.2, "test_loss": 0.19})
    table, rows = evaluate(tmp_path, clion_generalization)
    gap = {r.scope.split(" · ")[0]: r for r in by_claim(rows, "§7 generalization gap ∝ N^s (test − train loss)")}
    c = gap["clion"]
    assert c.kind == "theory" and c.holds == "yes" and c.measured == pytest.approx(-1.0, abs=1e-9)
    assert c.ci_low <= -1.0 + 1e-9 and c.ci_high >= -1.0 - 1e-9 and c.interval == "seed-bootstrap (5 seeds)"
    assert "1 runs with gap ≤ 0 left out" in c.evidence
    assert gap["lion"].kind == "context" and gap["lion"].holds == "n.a."
    (term,) = by_claim(rows, "§7 Lion's bound term")
    assert term.kind == "context" and term.measured == pytest.approx(theory.lion_generalization_log10_term(800, 50, 1e-4))
    assert set(table["figure"]) == {"clion_generalization-problemdigits_mlp"}


def test_control_a_gap_like_one_over_root_n_says_no(tmp_path):
    _sweep(tmp_path, -0.5)
    (c,) = [r for r in by_claim(evaluate(tmp_path, clion_generalization)[1], "§7 generalization gap ∝ N^s (test")
            if r.kind == "theory"]
    assert c.holds == "no" and c.measured == pytest.approx(-0.5, abs=1e-9)
