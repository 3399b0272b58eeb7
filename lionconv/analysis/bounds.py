"""THEORY §4's bound checked per run: the run's own K, d, η, β, λ, Δ, L, σ and ‖e0‖₂ (shared by the
rate claims and the bound claim)."""
from __future__ import annotations

import math

import pandas as pd

from lionconv import theory
from lionconv.analysis.groups import measure_column
from lionconv.analysis.load import LION_FAMILY


def bound_checks(runs: pd.DataFrame) -> pd.DataFrame:
    """Per Lion-family run with known Δ, L, σ: THEORY §4 bound_template with the run's own K, d, lr,
    betas, λ and ‖e0‖₂ = ‖∇f(x0)‖₂ (m0 = 0), the measured average, slack = bound/measured, under.

    The bound is on an expectation; checking each run separately is the stricter reading.
    Not applicable (under = NA, note says why): a CLion run that took the identity branch (mean
    sign-branch fraction < 1), step 0 not logged, infeasible start ‖x0‖∞ > 1/λ.
    """
    cols = ["run", "optimizer", "problem", "d", "K", "seed", "weight_decay", "x0_linf", "measure", "measured",
            "bound", "slack", "under", "constants_kind", "note", "sigma"]
    out = []
    known = runs[runs["optimizer"].isin(LION_FAMILY) & runs[["Delta", "L", "sigma"]].notna().all(axis=1)] if len(runs) else runs
    for r in known.itertuples(index=False):
        label, col = measure_column(r.weight_decay)
        measured = getattr(r, col)
        e0 = getattr(r, "e0_norm", math.nan)
        x0 = getattr(r, "x0_linf", math.nan)
        row = dict(run=r.run, optimizer=r.optimizer, problem=r.problem, d=r.d, K=r.K, seed=r.seed,
                   weight_decay=r.weight_decay, x0_linf=x0, measure=label, measured=measured, bound=math.nan,
                   slack=math.nan, under=pd.NA, constants_kind=r.constants_kind, note="", sigma=r.sigma)
        sign_fraction = getattr(r, "mean_sign_fraction", math.nan)
        if r.optimizer == "clion" and math.isfinite(sign_fraction) and sign_fraction < 1.0:
            # THEORY §4's derivation uses |h_j| = 1; the identity branch h_j = c_j breaks it
            row["note"] = (f"CLion took the identity branch (sign-branch fraction {sign_fraction:.3g} < 1): "
                           "the §4 bound is derived for sign steps only")
        elif not math.isfinite(e0):
            row["note"] = "step 0 not logged: ‖e0‖₂ unknown"
        elif r.weight_decay > 0 and math.isfinite(x0) and x0 > (1 + 1e-9) / r.weight_decay:
            row["note"] = "infeasible start: ‖x0‖∞ > 1/λ"
        else:
            try:
                bound = theory.bound_template(r.K, r.d, r.Delta, r.L, r.sigma, r.lr, r.beta1, r.beta2,
                                              r.weight_decay, e0)
                row.update(bound=bound, slack=bound / measured if measured > 0 else math.inf,
                           under=bool(measured <= bound))
            except ValueError as err:
                row["note"] = f"bound not computable: {err}"
        out.append(row)
    return pd.DataFrame(out, columns=cols)


def bound_summary(checks: pd.DataFrame) -> tuple[str, bool | None]:
    """('5/6 runs under the bound (min slack 2.1×)', all_under or None if nothing applicable)."""
    done = checks[checks["under"].notna()]
    if done.empty:
        return "", None
    n_under = int(done["under"].astype(bool).sum())
    return (f"bound: {n_under}/{len(done)} runs under (min slack {done['slack'].min():.3g}×)",
            n_under == len(done))

