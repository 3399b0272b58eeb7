"""clion_gates: structural gate checks (sanity) and §2's remark (theory); controls say no."""
from lionconv.claims import clion_gates
from synthetic import by_claim, evaluate, write_run


def _gate_run(root, gate, nu, fraction, tau=1e-6, seed=0):
    sign = float(tau >= nu) if gate == "global" else fraction
    return write_run(root, f"{gate}_{nu:g}_s{seed}", optimizer="clion", problem="digits_mlp", d=1000, K=20, seed=seed,
                     optimizer_cfg={"nu": nu, "gate": gate}, problem_cfg={"n_train": None, "drop_index": None},
                     metrics={"tau": tau, "sign_fraction": sign, "loss": 1.0},
                     final={"loss": 1.0}, summary={"mean_sign_fraction": fraction, "min_tau": tau})


def test_gate_fractions_built_to_violate_ordering_give_no(tmp_path):
    good = {"global": (1.0, 0.7, 0.0), "tensor": (1.0, 0.8, 0.1), "coordinate": (1.0, 0.9, 0.5)}
    for gate, fr in good.items():
        for nu, f in zip((1e-9, 1e-7, 1e-5), fr):
            _gate_run(tmp_path / "good", gate, nu, f)
    table, rows = evaluate(tmp_path / "good", clion_gates)
    mono = by_claim(rows, "§2 CLion gate: sign-branch fraction non-increasing")
    assert all(r.holds == "yes" and r.kind == "sanity" for r in mono)
    (order,) = by_claim(rows, "§2 CLion gates ordered")
    assert order.holds == "yes"
    (ident,) = by_claim(rows, "§2 global gate")
    assert ident.holds == "yes" and ident.measured == 1.0
    remark = {r.scope.split("ν=")[-1]: (r.kind, r.holds) for r in by_claim(rows, "§2 remark")}
    assert remark == {"1e-09": ("context", "n.a."), "1e-07": ("context", "n.a."),
                      "1e-05": ("theory", "unclear")}           # τ = 1e-6 everywhere; 1 seed cannot decide
    assert set(table["figure"]) == {"clion_gates-problemdigits_mlp-K20-lr0.01"}

    bad = {"global": (1.0, 0.9, 0.0), "tensor": (1.0, 0.5, 0.3), "coordinate": (1.0, 0.6, 0.2)}
    for gate, fr in bad.items():
        for nu, f in zip((1e-9, 1e-7, 1e-5), fr):
            _gate_run(tmp_path / "bad", gate, nu, f)
    rows = evaluate(tmp_path / "bad", clion_gates)[1]
    (order,) = by_claim(rows, "§2 CLion gates ordered")
    assert order.holds == "no" and abs(order.measured + 0.4) < 1e-9     # tensor − global at ν = 1e-7
    rising = {r.scope.split("gate=")[-1]: r for r in by_claim(rows, "§2 CLion gate: sign-branch fraction")}
    assert rising["global"].holds == "yes" and rising["coordinate"].holds == "yes"


def test_remark_with_five_seeds_and_its_control(tmp_path):
    for seed in range(5):
        for nu, f in ((1e-9, 1.0), (1e-5, 0.01)):
            _gate_run(tmp_path / "ok", "global", nu, f, seed=seed)
        for nu, f in ((1e-9, 1.0), (1e-5, 0.5)):          # control: the gate passes half the time above τ
            _gate_run(tmp_path / "bad", "global", nu, f, seed=seed)
    ok = [r for r in by_claim(evaluate(tmp_path / "ok", clion_gates)[1], "§2 remark") if r.kind == "theory"]
    bad = [r for r in by_claim(evaluate(tmp_path / "bad", clion_gates)[1], "§2 remark") if r.kind == "theory"]
    assert [r.holds for r in ok] == ["yes"] and ok[0].interval == "seed range (5 seeds)"
    assert [r.holds for r in bad] == ["no"]
