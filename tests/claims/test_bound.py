"""bound: every Lion/CLion run under its own THEORY §4 bound (exact rule); its control: constants
recorded too small, on synthetic runs and on a real sweep through the command line."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO, run_cli
from lionconv import theory
from lionconv.claims import bound
from synthetic import evaluate, write_rate_run

CONSTS = {"Delta": 2.0, "L": 3.0, "sigma": 0.5}


def test_under_and_over_the_bound(tmp_path):
    K, d = 400, 100
    b1, b2, lr = theory.horizon_schedule(K, d, 1, 1, 1)
    value = theory.bound_template(K, d, 2.0, 3.0, 0.5, lr, b1, b2, 0.0, 2.0)   # e0 = grad_l2 at step 0 = 2
    write_rate_run(tmp_path, "under", K=K, d=d, avg=value / 4, constants=CONSTS)
    write_rate_run(tmp_path, "over", K=K, d=d, avg=value * 2, constants=CONSTS, problem="other")   # the control
    write_rate_run(tmp_path, "sign", optimizer="signsgd", K=K, d=d, avg=value / 4, constants=CONSTS)
    write_rate_run(tmp_path, "nobound", K=K, d=d, avg=1.0, seed=1)                           # constants unknown
    rows = {r.scope: r for r in evaluate(tmp_path, bound)[1]}
    under, over = rows["lion · scaled_separable"], rows["lion · other"]
    assert under.holds == "yes" and under.kind == "theory" and under.measured == pytest.approx(4.0)
    assert under.interval == "exact (deterministic rule)"
    assert over.holds == "no" and over.measured == pytest.approx(0.5)
    sign = rows["signsgd · scaled_separable"]           # β = 0: the floor 4√d·σ cannot fail: vacuous, no verdict
    assert sign.kind == "context" and sign.holds == "n.a." and "vacuous" in sign.theory
    assert bound.judge_bound([1.2, 0.99]) == "no" and bound.judge_bound([1.0, 3.0]) == "yes"


def test_control_through_the_command_line_understated_constants_say_no(tmp_path):
    """A real rate_in_K sweep whose recorded Δ, L, σ are divided by 10 (σ, Δ, L set too small): the
    measured averages exceed the bound so computed, and the rule must say no."""
    run_cli("-m", "experiment=rate_in_K", "optimizer=lion", "problem.d=100", "steps=100,300", "seed=0",
            f"out_dir={tmp_path}", "progress=off")
    for path in (tmp_path / "rate_in_K").rglob("summary.json"):
        s = json.loads(path.read_text())
        s["constants"].update({k: s["constants"][k] / 10 for k in ("Delta", "L", "sigma")})
        path.write_text(json.dumps(s))
    out = tmp_path / "analysis"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "analyze.py"), str(tmp_path / "rate_in_K"),
                           "--out", str(out), "--claims", "bound", "--no-figures"], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (row,) = pd.read_csv(out / "verdicts.csv").to_dict("records")
    assert row["kind"] == "theory" and row["holds"] == "no" and row["measured"] < 1


def test_a_clion_run_that_took_the_identity_branch_is_not_checked(tmp_path):
    """THEORY §4's bound is derived for sign steps: an active CLion gate makes the row n.a., even over the bound."""
    K, d = 400, 100
    for name, fraction in (("active", 0.5), ("sign", 1.0)):
        run = write_rate_run(tmp_path, name, optimizer="clion", K=K, d=d, avg=1e6, constants=CONSTS,
                             problem=f"p_{name}")
        s = json.loads((run / "summary.json").read_text())
        s["mean_sign_fraction"] = fraction
        (run / "summary.json").write_text(json.dumps(s))
    rows = {r.scope: r for r in evaluate(tmp_path, bound)[1]}
    active, sign = rows["clion · p_active"], rows["clion · p_sign"]
    assert active.kind == "context" and active.holds == "n.a." and "identity branch" in active.evidence
    assert sign.kind == "theory" and sign.holds == "no"          # all sign steps: the bound applies, and fails
