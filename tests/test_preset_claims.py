"""lionconv.analysis.preset_claims on small synthetic run folders whose answers are known."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from lionconv import runio, theory
from lionconv.analysis import CLAIMS, evaluate_claims, load_runs
from lionconv.analysis.load import load_metrics
from lionconv.analysis.preset_claims import (feasibility_table, side_tables, stability_final, stability_table)
from lionconv.analysis.report import write_report

PRESET_CLAIMS = ["feasibility", "density", "constants_in_d", "negative_controls", "clion_gates", "lion_vs_sgd",
                 "generalization"]


def write_run(root, name, *, optimizer="lion", problem="quadratic", d=100, K=100, seed=0, lr=0.01,
              betas=(0.9, 0.99), weight_decay=0.0, schedule=None, problem_cfg=None, optimizer_cfg=None,
              metrics=None, final=None, constants=None, summary=None, snapshots=None, lr_scale=1.0,
              dtype="float64"):
    """One run folder in the RUN LAYOUT: config.yaml, summary.json, metrics.parquet (+ snapshots.npz).

    metrics: columns for every step 0..K−1 (a scalar or an array each); missing columns are NaN."""
    run = Path(root) / name
    run.mkdir(parents=True)
    cfg = {"seed": seed, "steps": K, "device": "cpu", "dtype": dtype, "lr_scale": lr_scale,
           "optimizer": {"name": optimizer, "lr": lr, "betas": list(betas), "weight_decay": weight_decay,
                         **(optimizer_cfg or {})},
           "problem": {"name": problem, "d": d, **(problem_cfg or {})},
           "schedule": schedule or {"name": "constant"}, "log": {"every": 1}, "sweep_name": "t"}
    cfg["run_id"] = run_id = runio.run_identity(cfg)  # as the trainer records it
    OmegaConf.save(OmegaConf.create(cfg), run / "config.yaml")
    steps = np.arange(K)
    m = pd.DataFrame({"step": steps})
    for col, v in (metrics or {}).items():
        m[col] = np.broadcast_to(np.asarray(v, dtype=float), steps.shape)
    for col in ("grad_l1", "grad_l2", "ratio_r", "mb_ratio_r", "l1_l2", "mb_l1_l2", "x_linf", "feasibility",
                "kkt_residual", "tau", "sign_fraction", "loss"):
        if col not in m:
            m[col] = np.nan
    m.to_parquet(run / "metrics.parquet", index=False)
    avg = float(np.nanmean(m["grad_l1"])) if m["grad_l1"].notna().any() else 1.0
    s = {"status": "finished", "diverged_step": None, "run_id": run_id, "optimizer": optimizer, "problem": problem,
         "d": d, "K": K, "seed": seed, "lr": lr, "beta1": betas[0], "beta2": betas[1], "weight_decay": weight_decay,
         "averages": {"grad_l1": avg, "kkt_residual": avg, "kind": "exact", "n": K}, "final": final or {},
         "constants": {"Delta": 1.0, "L": 1.0, "sigma": 0.0, "f_low": 0.0, "kind": "closed_form", **(constants or {})},
         "min_tau": None, "mean_sign_fraction": None, "wall_time_s": 1.0, "provenance": {}, **(summary or {})}
    (run / "summary.json").write_text(json.dumps(s))
    if snapshots is not None:
        np.savez(run / "snapshots.npz", step=snapshots[0], x=snapshots[1])
    return run


def rows_of(root, names):
    runs, _ = load_runs(root)
    return evaluate_claims(runs[runs["usable"]].reset_index(drop=True), load_metrics, names=names, n_boot=200)


def by_claim(rows, prefix):
    return [r for r in rows if r.claim.startswith(prefix)]


# ---------------------------------------------------------------------------- §8


def _cycle_metrics(K, d, lr, transient=10):
    """|f'_i| = η/2 on every coordinate after a short transient: the exact 2-cycle."""
    per = np.where(np.arange(K) < transient, 1.0, lr / 2)
    return {"grad_l1": d * per, "grad_l2": math.sqrt(d) * per, "ratio_r": 1.0}


def test_two_cycle_control_holds_and_a_converging_run_does_not(tmp_path):
    for K in (100, 1000):
        write_run(tmp_path, f"cycle{K}", d=100, K=K, metrics=_cycle_metrics(K, 100, 0.01),
                  problem_cfg={"sigma": 0.0, "init": 1.005})
        k = np.arange(K) + 1.0
        write_run(tmp_path, f"conv{K}", d=50, K=K, metrics={"grad_l1": 50 / k, "grad_l2": math.sqrt(50) / k},
                  problem_cfg={"sigma": 0.0, "init": 1.005})
    rows = rows_of(tmp_path, ["negative_controls"])
    cyc = {r.scope.split(" · ")[2]: r for r in by_claim(rows, "§8 control: exact 2-cycle")}
    level = {r.scope.split(" · ")[2]: r for r in by_claim(rows, "§8 control: constant η does not converge")}
    assert cyc["d=100"].holds == "yes" and cyc["d=100"].measured == pytest.approx(0.0, abs=1e-12)
    assert level["d=100"].holds == "yes" and level["d=100"].measured == pytest.approx(1.0)
    assert cyc["d=50"].holds == "no"
    assert level["d=50"].holds == "no" and level["d=50"].measured < 0.9


def test_contrast_and_fixed_beta1_rows(tmp_path):
    horizon = {"name": "horizon", "c1": 1.0, "c2": 1.0, "c3": 1.0}
    for K in (100, 1000, 10000):
        k = np.arange(K) + 1.0
        conv = {"grad_l1": 100 * k**-1.0, "grad_l2": 10 * k**-1.0}
        write_run(tmp_path, f"h0_{K}", K=K, schedule=horizon, metrics=conv, problem_cfg={"sigma": 0.0})
        write_run(tmp_path, f"h1_{K}", K=K, schedule=horizon, metrics=conv, problem_cfg={"sigma": 1.0},
                  constants={"sigma": 1.0})
        flat = {"grad_l1": 100 * np.maximum(k**-1.0, 0.05), "grad_l2": 10 * np.maximum(k**-1.0, 0.05)}
        write_run(tmp_path, f"f1_{K}", K=K, schedule={**horizon, "beta1": 0.9}, metrics=flat,
                  problem_cfg={"sigma": 1.0}, constants={"sigma": 1.0})
    rows = rows_of(tmp_path, ["negative_controls"])
    contrast = by_claim(rows, "§8 contrast")
    assert len(contrast) == 2 and all(r.holds == "yes" for r in contrast)
    (floor,) = by_claim(rows, "§8 control: constant β1 leaves a floor")
    assert floor.holds == "yes" and floor.measured == pytest.approx(0.0, abs=1e-9)
    (flatter,) = by_claim(rows, "§8 control: constant β1 flattens")
    assert flatter.holds == "yes" and flatter.measured > 0.05


# ---------------------------------------------------------------------------- §2 gates


def _gate_run(root, gate, nu, fraction, tau=1e-6):
    sign = float(tau >= nu) if gate == "global" else fraction
    return write_run(root, f"{gate}_{nu:g}", optimizer="clion", problem="digits_mlp", d=1000, K=20,
                     optimizer_cfg={"nu": nu, "gate": gate}, problem_cfg={"n_train": None, "drop_index": None}, metrics={"tau": tau, "sign_fraction": sign, "loss": 1.0},
                     final={"loss": 1.0}, summary={"mean_sign_fraction": fraction, "min_tau": tau})


def test_gate_fractions_built_to_violate_ordering_give_no(tmp_path):
    good = {"global": (1.0, 0.7, 0.0), "tensor": (1.0, 0.8, 0.1), "coordinate": (1.0, 0.9, 0.5)}
    for gate, fr in good.items():
        for nu, f in zip((1e-9, 1e-7, 1e-5), fr):
            _gate_run(tmp_path / "good", gate, nu, f)
    rows = rows_of(tmp_path / "good", ["clion_gates"])
    assert all(r.holds == "yes" for r in by_claim(rows, "§2 CLion gate: sign-branch fraction non-increasing"))
    (order,) = by_claim(rows, "§2 CLion gates ordered")
    assert order.holds == "yes"
    (ident,) = by_claim(rows, "§2 global gate")
    assert ident.holds == "yes" and ident.measured == 1.0
    remark = {r.scope.split("ν=")[-1]: r.holds for r in by_claim(rows, "§2 remark")}
    assert remark == {"1e-09": "n.a.", "1e-07": "n.a.", "1e-05": "yes"}      # τ = 1e-6 everywhere

    bad = {"global": (1.0, 0.9, 0.0), "tensor": (1.0, 0.5, 0.3), "coordinate": (1.0, 0.6, 0.2)}
    for gate, fr in bad.items():
        for nu, f in zip((1e-9, 1e-7, 1e-5), fr):
            _gate_run(tmp_path / "bad", gate, nu, f)
    rows = rows_of(tmp_path / "bad", ["clion_gates"])
    (order,) = by_claim(rows, "§2 CLion gates ordered")
    assert order.holds == "no" and order.measured == pytest.approx(-0.4)    # tensor − global at ν = 1e-7
    rising = {r.scope.split("gate=")[-1]: r for r in by_claim(rows, "§2 CLion gate: sign-branch fraction")}
    assert rising["global"].holds == "yes" and rising["coordinate"].holds == "yes"


# ---------------------------------------------------------------------------- §7


def test_stability_pairs_give_the_computed_distances(tmp_path):
    steps = np.array([0, 1, 3, 7])
    base = np.arange(12, dtype=float).reshape(4, 3)
    for opt, speed in (("clion", 1.0), ("lion", 4.0)):
        for seed in (0, 1):
            common = dict(optimizer=opt, problem="digits_mlp", d=3, K=8, seed=seed,
                          final={"loss": 0.1, "test_loss": 0.2})
            write_run(tmp_path, f"{opt}_{seed}_full", problem_cfg={"n_train": 100, "drop_index": None},
                      snapshots=(steps, base), **common)
            shifted = base + speed * steps[:, None] * np.array([3.0, 4.0, 0.0]) / 5.0     # ‖shift‖ = speed·step
            write_run(tmp_path, f"{opt}_{seed}_drop", problem_cfg={"n_train": 100, "drop_index": 0},
                      snapshots=(steps[1:], shifted[1:]), **common)   # the common steps are 1, 3, 7
    runs, _ = load_runs(tmp_path)
    table = stability_table(runs)
    lion = table[(table["optimizer"] == "lion") & (table["seed"] == 0)].sort_values("step")
    assert lion["step"].tolist() == [1, 3, 7]
    assert lion["distance"].to_numpy() == pytest.approx([4.0, 12.0, 28.0])
    final = stability_final(table)
    assert final.set_index(["optimizer", "seed"]).loc[("clion", 1), "distance"] == pytest.approx(7.0)
    rows = evaluate_claims(runs, load_metrics, names=["generalization"], n_boot=0)
    (stab,) = by_claim(rows, "§7 stability: CLion")
    assert stab.holds == "yes" and stab.measured == pytest.approx(0.25)


def test_generalization_gap_following_one_over_n_gives_slope_minus_one(tmp_path):
    for opt in ("clion", "lion"):
        for n in (100, 200, 400, 800):
            for seed in range(4):
                gap = 5.0 / n * (1.0 + 0.05 * seed)
                write_run(tmp_path, f"{opt}_{n}_{seed}", optimizer=opt, problem="digits_mlp", d=10, K=50, seed=seed,
                          problem_cfg={"n_train": n, "drop_index": None},
                          final={"loss": 0.1, "test_loss": 0.1 + gap, "train_acc": 1.0, "test_acc": 1.0 - gap},
                          metrics={"tau": 1e-3}, summary={"min_tau": 1e-4})
    write_run(tmp_path, "clion_neg", optimizer="clion", problem="digits_mlp", d=10, K=50, seed=9,
              problem_cfg={"n_train": 800, "drop_index": None}, final={"loss": 0.2, "test_loss": 0.19})
    rows = rows_of(tmp_path, ["generalization"])
    gap = {r.scope.split(" · ")[0]: r for r in by_claim(rows, "§7 generalization gap ∝ N^s (test − train loss)")}
    c = gap["clion"]
    assert c.holds == "yes" and c.measured == pytest.approx(-1.0, abs=1e-9) and c.ci_low <= -1.0 <= c.ci_high
    assert "1 runs with gap ≤ 0 left out" in c.evidence
    assert gap["lion"].holds == "n.a." and gap["lion"].measured == pytest.approx(-1.0, abs=1e-9)
    (term,) = by_claim(rows, "§7 Lion's bound term")
    assert term.measured == pytest.approx(theory.lion_generalization_log10_term(800, 50, 1e-4))


# ---------------------------------------------------------------------------- §3, §6, Lion vs SGD


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
    runs, _ = load_runs(tmp_path)
    table = feasibility_table(runs, load_metrics).set_index("run")
    k_min = math.log((lam * x0 + 1) / 2) / -math.log(q)
    assert table.loc["fast", "k_min"] == pytest.approx(k_min)
    assert table.loc["fast", "k_reach"] == math.ceil(k_min)
    rows = {(r.claim.split(": ")[1].split()[0], r.scope.split(" · ")[1]): r
            for r in evaluate_claims(runs, load_metrics, names=["feasibility"])}
    assert rows[("violation", "scaled_separable")].holds == "yes"
    assert rows[("violation", "scaled_separable")].measured == pytest.approx(math.ceil(k_min) / k_min)
    assert rows[("geometric", "scaled_separable")].holds == "yes"
    assert rows[("violation", "other")].holds == "no"


def test_constants_fixed_and_growing_in_d(tmp_path):
    for d in (100, 1000, 10000):
        for seed in (0, 1):
            write_run(tmp_path, f"s{d}_{seed}", problem="scaled_separable", d=d, seed=seed,
                      constants={"Delta": 2.0 + 0.1 * seed, "L": 3.0, "sigma": 1.0})
            write_run(tmp_path, f"n{d}_{seed}", problem="naive_separable", d=d, seed=seed,
                      constants={"Delta": 2.0 * d * (1 + 0.01 * seed), "L": 3.0, "sigma": math.sqrt(d)})
    rows = rows_of(tmp_path, ["constants_in_d"])
    (fixed,) = by_claim(rows, "§6 Δ, L, σ fixed")
    assert fixed.holds == "yes" and fixed.measured == pytest.approx(2.1 / 2.0)
    contrast = {r.claim: r for r in by_claim(rows, "§6 contrast")}
    assert contrast["§6 contrast family: Delta ∝ d^1"].measured == pytest.approx(1.0, abs=1e-3)
    assert contrast["§6 contrast family: sigma ∝ d^0.5"].measured == pytest.approx(0.5, abs=1e-9)
    assert all(r.holds == "yes" for r in contrast.values())


def test_lion_vs_sgd_best_of_grid(tmp_path):
    losses = {"lion": {1: (0.10, 0.12), 3: (0.01, 0.02)}, "sgd": {1: (0.5, 0.6), 3: (0.05, 0.07)}}
    accs = {"lion": (0.95, 0.97), "sgd": (0.96, 0.98)}
    for opt, grid in losses.items():
        for scale, pair in grid.items():
            for seed, loss in enumerate(pair):
                write_run(tmp_path, f"{opt}_{scale}_{seed}", optimizer=opt, problem="digits_mlp", d=10, K=20,
                          seed=seed, lr_scale=scale, final={"loss": loss, "test_acc": accs[opt][seed]})
    rows = rows_of(tmp_path, ["lion_vs_sgd"])
    (loss,) = by_claim(rows, "paper: lion reaches lower training loss")
    (acc,) = by_claim(rows, "paper: lion reaches higher test accuracy")
    assert loss.holds == "yes" and loss.measured == pytest.approx(0.015 / 0.06)
    assert "lr_scale=3" in loss.evidence and "(edge of the grid)" in loss.evidence
    assert acc.holds == "unclear" and acc.measured == pytest.approx(-0.01)


# ---------------------------------------------------------------------------- robustness and report


def test_missing_preset_data_gives_no_rows(tmp_path):
    for K in (100, 400):          # a rate-in-K-like sweep: none of the preset claims has its data
        write_run(tmp_path, f"r{K}", problem="scaled_separable", K=K, schedule={"name": "horizon", "c1": 1.0},
                  metrics={"grad_l1": 1.0, "grad_l2": 1.0, "ratio_r": 0.8}, constants={"sigma": 1.0})
    runs, _ = load_runs(tmp_path)
    rows = evaluate_claims(runs, load_metrics, names=PRESET_CLAIMS, n_boot=0)
    assert {r.claim.split(":")[0] for r in rows} == {"§4 lower bound", "§4 context"}
    empty = runs.iloc[0:0]
    for name in PRESET_CLAIMS:
        assert CLAIMS[name](empty, load_metrics) == []
    assert side_tables(empty, load_metrics) == {}


def test_report_has_rules_side_tables_and_figures(tmp_path):
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    for K in (100, 1000):
        write_run(runs_dir, f"cycle{K}", d=100, K=K, metrics=_cycle_metrics(K, 100, 0.01),
                  problem_cfg={"sigma": 0.0, "init": 1.005})
    report = write_report(runs_dir, out, argv=["test"], n_boot=0).read_text()
    assert "§8 negative controls" in report and "§8 control: exact 2-cycle" in report
    assert (out / "negative_controls.csv").exists()
    png = out / "figures" / "negative_controls-quadratic.png"
    assert png.exists() and png.with_suffix(".pdf").exists() and "(figures/negative_controls-quadratic.png)" in report


def test_clion_settings_are_never_pooled():
    from lionconv.analysis.preset_claims import _variant
    runs = pd.DataFrame({"optimizer": ["lion", "clion", "clion"], "gate": [None, "global", "coordinate"],
                         "nu": [math.nan, 1e-6, 1e-6]})
    assert _variant(runs).tolist() == ["lion", "clion[global, ν=1e-06]", "clion[coordinate, ν=1e-06]"]
    assert _variant(runs.iloc[:2]).tolist() == ["lion", "clion"]


def test_every_claim_and_figure_on_a_mixed_folder(tmp_path):
    """All presets' kinds of runs in one folder (and columns that exist but are all null): no crash,
    each preset's rows, tables and figures appear."""
    root = tmp_path / "runs"
    for gate, fr in {"global": (1.0, 0.0), "coordinate": (1.0, 0.5)}.items():
        for nu, f in zip((1e-9, 1e-5), fr):
            _gate_run(root, gate, nu, f)
    steps = np.array([0, 1, 3, 7])
    for opt in ("clion", "lion"):
        for n in (100, 200):
            for drop in (None, 0):
                write_run(root, f"g_{opt}_{n}_{drop}", optimizer=opt, problem="digits_mlp", d=3, K=8,
                          problem_cfg={"n_train": n, "drop_index": drop}, optimizer_cfg={"nu": 1e-6, "gate": "global"},
                          final={"loss": 0.1, "test_loss": 0.1 + 1 / n, "train_acc": 1.0, "test_acc": 0.9},
                          snapshots=(steps, np.outer(steps, [1.0, 2.0, 2.0]) * (1 if drop is None else 1.1)))
    for opt in ("lion", "sgd"):
        for scale in (1, 3):
            write_run(root, f"v_{opt}_{scale}", optimizer=opt, problem="digits_cnn", d=10, K=20, lr_scale=scale,
                      final={"loss": 0.1 * scale, "test_acc": 0.9})
    for K in (100, 1000):
        write_run(root, f"cycle{K}", d=100, K=K, metrics=_cycle_metrics(K, 100, 0.01),
                  problem_cfg={"sigma": 0.0, "init": 1.005})
    out = tmp_path / "out"
    report = write_report(root, out, argv=["test"], n_boot=0).read_text()
    verdicts = pd.read_csv(out / "verdicts.csv")
    for prefix in ("§2 CLion", "§7 generalization", "§7 stability", "paper: lion", "§8 control"):
        assert verdicts["claim"].str.startswith(prefix).any(), prefix
    for stem in ("clion_gates", "generalization", "stability", "lr_grid", "negative_controls"):
        assert (out / f"{stem}.csv").exists(), stem
    for fig in ("clion_gates-digits_mlp", "generalization-digits_mlp", "stability-digits_mlp",
                "lion_vs_sgd-digits_cnn", "lion_vs_sgd_curves-digits_cnn", "negative_controls-quadratic"):
        assert (out / "figures" / f"{fig}.png").exists() and f"(figures/{fig}.png)" in report, fig
