"""lion_vs_baselines: selection on validation, seed bootstrap of the selected configs, edges and protocol."""
import numpy as np
import pytest

from lionconv.analysis.fit import seed_bootstrap
from lionconv.claims import lion_vs_baselines as claim
from synthetic import by_claim, evaluate, write_run

SCALES = (1 / 3, 1.0, 3.0)
SEEDS = range(5)


def _grid(root, per_opt, schedule="cosine", val_fraction=0.2, seeds=SEEDS):
    """per_opt: {optimizer: (best lr_scale, train loss at it, test acc at it)}; the other scales get a
    higher val loss, and (a trap for a selection on train loss) a LOWER train loss."""
    for opt, (best, loss, acc) in per_opt.items():
        for scale in SCALES:
            for seed in seeds:
                at_best = scale == best
                final = {"loss": (loss if at_best else loss / 10) * (1 + 0.01 * seed),
                         "test_acc": (acc if at_best else acc - 0.05) + 0.001 * seed,
                         "val_loss": (0.1 if at_best else 0.5) + 0.001 * seed, "val_acc": 0.9}
                if not val_fraction:
                    final.pop("val_loss"), final.pop("val_acc")
                write_run(root, f"{opt}_{scale:.3f}_{seed}", optimizer=opt, problem="digits_mlp", d=10, K=300,
                          seed=seed, lr=0.01 * scale, lr_scale=scale, final=final,
                          problem_cfg={"val_fraction": val_fraction},
                          extra_cfg={"lr_schedule": {"name": schedule, "warmup_steps": 0, "final_fraction": 0.0}})


GOOD = {"lion": (1.0, 0.01, 0.97), "sgd": (1.0, 0.05, 0.92), "sgd_momentum": (1.0, 0.04, 0.93),
        "adamw": (1.0, 0.03, 0.94)}


def test_lion_better_at_the_selected_configs_says_yes_with_hand_computed_numbers(tmp_path):
    _grid(tmp_path, GOOD)
    table, rows = evaluate(tmp_path, claim)
    sel = table[table["selected"]]
    assert set(sel["lr_scale"]) == {1.0} and not sel["edge"].any()   # chosen on val loss, not train loss
    assert len(rows) == 6 and all(r.kind == "theory" and r.holds == "yes" for r in rows)
    (loss,) = by_claim(rows, "paper: Lion reaches lower train loss than sgd_momentum")
    assert loss.measured == pytest.approx(0.01 / 0.04)               # per-seed factors cancel in the ratio
    assert loss.interval == "seed-bootstrap (5 seeds)" and loss.ci_high < 1
    (acc,) = by_claim(rows, "paper: Lion has higher test accuracy than adamw")
    assert acc.measured == pytest.approx(0.97 - 0.94) and acc.ci_low > 0
    assert "selected on val_loss" in acc.evidence and "cosine" in acc.evidence


def test_control_baselines_better_says_no(tmp_path):
    bad = {"lion": (1.0, 0.09, 0.90), "sgd": (1.0, 0.05, 0.95), "sgd_momentum": (1.0, 0.04, 0.96),
           "adamw": (1.0, 0.03, 0.97)}
    _grid(tmp_path, bad)
    rows = evaluate(tmp_path, claim)[1]
    assert len(rows) == 6 and [r.holds for r in rows] == ["no"] * 6


def test_a_selection_on_the_grid_edge_is_unclear_never_decided(tmp_path):
    _grid(tmp_path, {**GOOD, "sgd": (3.0, 0.05, 0.92)})
    table, rows = evaluate(tmp_path, claim)
    assert table[table["selected"] & (table["optimizer"] == "sgd")]["edge"].all()
    edge = by_claim(rows, "paper: Lion reaches lower train loss than sgd") + by_claim(rows, "paper: Lion has higher test accuracy than sgd")
    edge = [r for r in edge if r.scope.startswith("lion vs sgd ·")]
    assert len(edge) == 2 and all(r.holds == "unclear" and "edge" in r.evidence for r in edge)
    assert {r.holds for r in rows if r not in edge} == {"yes"}


def test_protocol_constant_schedule_no_validation_or_few_seeds_is_unclear(tmp_path):
    _grid(tmp_path / "const", GOOD, schedule="constant")
    rows = evaluate(tmp_path / "const", claim)[1]
    assert rows and all(r.holds == "unclear" and "lr_schedule=constant" in r.evidence for r in rows)
    _grid(tmp_path / "noval", GOOD, val_fraction=0.0)
    rows = evaluate(tmp_path / "noval", claim)[1]
    assert len(rows) == 6 and all(r.holds == "unclear" and "no selected config" in r.evidence for r in rows)
    _grid(tmp_path / "few", GOOD, seeds=range(3))
    rows = evaluate(tmp_path / "few", claim)[1]
    assert all(r.holds == "unclear" and r.interval == "seed-bootstrap (3 seeds)" for r in rows)


def test_seed_bootstrap_is_the_statistic_with_a_stretched_percentile_interval():
    v = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    est, lo, hi = seed_bootstrap(lambda i: v[i].mean(), 5, n_boot=4000, seed=1)
    assert est == 3.0 and lo < 3.0 < hi
    # percentile bootstrap of a 5-point mean: sd ≈ √(2/5)·√((5−1)/5)... the κ stretch widens it past ±1.96·se_boot
    se_boot = v.std() / np.sqrt(5)
    assert hi - lo > 2 * 1.96 * se_boot
    assert seed_bootstrap(lambda i: 7.0, 5)[1:] == (7.0, 7.0)
    assert np.isnan(seed_bootstrap(lambda i: v[i].mean(), 1)[1])


def test_the_preset_gives_each_optimizer_its_own_lr_centre_end_to_end(tmp_path):
    """The real command line: the preset's lookup centre × lr_scale is the run's lr, with a cosine
    schedule and val_loss/val_acc in the summary; an optimizer the preset lists no centre for is one line."""
    import json

    from conftest import run_cli

    run_cli("experiment=lion_vs_baselines", "optimizer=adamw", "lr_scale=3", "steps=4", "log.every=2",
            f"out_dir={tmp_path}", "progress=off")
    (summary,) = [json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")]
    assert summary["lr"] == pytest.approx(3e-3 * 3) and summary["lr_schedule"]["name"] == "cosine"
    assert {"val_loss", "val_acc", "test_acc"} <= set(summary["final"])
    proc = run_cli("experiment=lion_vs_baselines", "optimizer=clion", "steps=4", f"out_dir={tmp_path}",
                   "progress=off", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert "lookup has no value for 'digits_mlp_clion'" in proc.stderr + proc.stdout


def test_lookup_keeps_the_parsed_type_so_steps_can_differ_per_problem():
    """mnist1d trains for 2000 steps, digits for 300: `steps` comes from the same lookup as lr."""
    from lionconv.config import lookup

    assert lookup("mnist1d", "digits_mlp", 300, "mnist1d", 2000) == 2000
    assert isinstance(lookup("mnist1d", "mnist1d", 2000), int)
    assert isinstance(lookup("a", "a", 1e-3), float) and lookup("a", "a", "3") == 3.0
    with pytest.raises(ValueError, match="no value for 'b'"):
        lookup("b", "a", 1)
