"""lion_vs_sgd: best of each lr grid, compared seed range against seed range (≥ 5 seeds to decide)."""
import pytest

from lionconv.claims import lion_vs_sgd
from synthetic import by_claim, evaluate, write_run


def _grid(root, losses, accs):
    for opt, grid in losses.items():
        for scale, values in grid.items():
            for seed, loss in enumerate(values):
                write_run(root, f"{opt}_{scale}_{seed}", optimizer=opt, problem="digits_mlp", d=10, K=20,
                          seed=seed, lr_scale=scale, final={"loss": loss, "test_acc": accs[opt][seed]})


def test_best_of_grid_with_two_seeds_is_at_most_unclear(tmp_path):
    _grid(tmp_path, {"lion": {1: (0.10, 0.12), 3: (0.01, 0.02)}, "sgd": {1: (0.5, 0.6), 3: (0.05, 0.07)}},
          {"lion": (0.95, 0.97), "sgd": (0.96, 0.98)})
    rows = evaluate(tmp_path, lion_vs_sgd)[1]
    (loss,) = by_claim(rows, "paper: lion reaches lower training loss")
    (acc,) = by_claim(rows, "paper: lion reaches higher test accuracy")
    assert loss.holds == "unclear" and loss.interval == "seed range (2 seeds each)"
    assert loss.measured == pytest.approx(0.015 / 0.06)
    assert "lr_scale=3" in loss.evidence and "(edge of the grid)" in loss.evidence
    assert acc.holds == "unclear" and acc.measured == pytest.approx(-0.01)


def test_five_seeds_decide_and_the_control_says_no(tmp_path):
    lion, sgd = (0.01, 0.011, 0.012, 0.013, 0.014), (0.05, 0.06, 0.07, 0.08, 0.09)
    acc_hi, acc_lo = (0.97,) * 5, (0.90,) * 5
    _grid(tmp_path / "ok", {"lion": {1: lion, 3: sgd}, "sgd": {1: sgd, 3: sgd}}, {"lion": acc_hi, "sgd": acc_lo})
    rows = evaluate(tmp_path / "ok", lion_vs_sgd)[1]
    assert [r.holds for r in rows] == ["yes", "yes"]
    _grid(tmp_path / "bad", {"lion": {1: sgd, 3: sgd}, "sgd": {1: lion, 3: sgd}}, {"lion": acc_lo, "sgd": acc_hi})
    rows = evaluate(tmp_path / "bad", lion_vs_sgd)[1]
    assert [r.holds for r in rows] == ["no", "no"] and {r.kind for r in rows} == {"theory"}
