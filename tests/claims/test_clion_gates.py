"""clion_gates: ν placed among τ_k over all steps (context), the global gate's definition fraction =
1 − F_τ(ν) and the gate ordering (sanity, controls say no), the paper-form global gate (context)."""
import numpy as np
import pandas as pd

from lionconv.claims import clion_gates
from synthetic import by_claim, evaluate, write_run

TAU = np.array([1e-8, 2e-8, 3e-8, 4e-8])           # τ_k at the 4 steps of every synthetic run


def _gate_run(root, gate, fraction, *, q=None, nu=1e-6, per_step=None, loss=0.5):
    cfg = {"gate": gate, "nu_quantile": q, "nu": None if q is not None else nu}
    run = write_run(root, f"{gate}_{q}_{nu:g}", optimizer="clion", problem="digits_mlp", d=1000, K=4,
                    optimizer_cfg=cfg, problem_cfg={"n_train": None},
                    metrics={"loss": loss}, final={"loss": loss},
                    summary={"mean_sign_fraction": fraction, "nu": nu, "min_tau": 1e-8,
                             "training": {"initial_loss": 2.0, "final_loss": loss, "distance_from_start": 1.0}})
    steps = per_step if per_step is not None else np.full(4, fraction)
    pd.DataFrame({"step": np.arange(4), "tau": TAU, "sign_fraction": steps}).to_parquet(run / "tau_steps.parquet")
    return run


def test_global_gate_fraction_is_one_minus_f_tau_and_its_control(tmp_path):
    # ν = 2.5e-8: F_τ(ν) = 2/4 (steps with τ_k < ν); the global gate passes at the other 2 steps
    _gate_run(tmp_path / "ok", "global", 0.5, q=0.5, nu=2.5e-8, per_step=np.array([0.0, 0.0, 1.0, 1.0]))
    _gate_run(tmp_path / "ok", "global", 0.0, q=0.9, nu=5e-8, per_step=np.zeros(4), loss=1.9)
    table, rows = evaluate(tmp_path / "ok", clion_gates)
    assert table.set_index("q").loc[0.5, "F_tau"] == 0.5 and table.set_index("q").loc[0.9, "F_tau"] == 1.0
    assert table.set_index("q")["trained"].to_dict() == {0.5: True, 0.9: False}     # 1.9 ≥ 0.5·2.0
    (d,) = by_claim(rows, "§2 global gate: sign branch")
    assert d.kind == "sanity" and d.holds == "yes" and d.measured == 0.0
    (mono,) = by_claim(rows, "§2 CLion gate: sign-branch fraction non-increasing")
    assert mono.holds == "yes" and mono.measured == -0.5
    (ctx,) = by_claim(rows, "§2 gate remark")
    assert ctx.kind == "context" and "F_τ(ν) 0.5" in ctx.evidence and "trained 0/1" in ctx.evidence
    # control: a global gate that passes at a step with τ_k < ν violates the definition
    _gate_run(tmp_path / "bad", "global", 0.75, q=0.5, nu=2.5e-8, per_step=np.array([1.0, 0.0, 1.0, 1.0]))
    (bad,) = by_claim(evaluate(tmp_path / "bad", clion_gates)[1], "§2 global gate: sign branch")
    assert bad.holds == "no" and bad.measured == 0.25


def test_ordering_at_one_explicit_nu_and_its_control(tmp_path):
    for gate, f in (("global", 0.0), ("tensor", 0.2), ("coordinate", 0.6)):
        _gate_run(tmp_path / "ok", gate, f)
    rows = evaluate(tmp_path / "ok", clion_gates)[1]
    (order,) = by_claim(rows, "§2 CLion gates ordered")
    assert order.holds == "yes" and abs(order.measured - 0.2) < 1e-12          # tensor − global
    (paper,) = by_claim(rows, "§2 paper-form global gate")
    assert paper.kind == "context" and paper.measured == 0.0 and "F_τ(ν) 1" in paper.evidence
    for gate, f in (("global", 0.0), ("tensor", 0.5), ("coordinate", 0.3)):      # control: tensor > coordinate
        _gate_run(tmp_path / "bad", gate, f)
    (order,) = by_claim(evaluate(tmp_path / "bad", clion_gates)[1], "§2 CLion gates ordered")
    assert order.holds == "no" and abs(order.measured + 0.2) < 1e-12
