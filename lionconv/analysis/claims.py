"""The claim registry: each claim turns the usable runs into verdict rows (THEORY §4, §5).

A claim is a function `claim(runs, load_metrics, **opts) -> list[VerdictRow]` registered under a
name with @register_claim(name). `runs` holds only usable runs (load_runs rows with usable=True);
`load_metrics(run_dir, columns=None)` returns a run's metrics table or None if unreadable; opts
carry n_boot and seed. A preset adds a claim by registering a function; nothing else changes.

Verdict rule for a fitted exponent (judge): "yes" if the point estimate satisfies the relation up
to the tolerance, "no" if the whole confidence interval violates it, "unclear" otherwise, "n.a."
where the theory makes no claim (SGD baseline, a family whose Δ, L, σ grow with d, ...).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from lionconv import theory
from lionconv.analysis.fit import FitResult, fit_power_law
from lionconv.analysis.load import LION_FAMILY
from lionconv.runio import NOT_FAMILY_KEYS

TOLERANCE = {"rate_K": 0.05, "rate_d": 0.05, "ratio": 0.05}
CONSTANT_SCHEDULES = {None, "", "none", "constant", "fixed"}
SCALED_FAMILIES = {"scaled_separable"}          # Δ, L, σ fixed in d by construction (THEORY §6)
CONTRAST_FAMILIES = {"naive_separable"}         # Δ, σ² ∝ d: the exponent in d changes
# top-level config keys that do not change the mathematics of a run (bookkeeping, paths, logging)
NOT_IDENTITY = NOT_FAMILY_KEYS
_BASE_IDENTITY = ["optimizer", "problem", "d", "K", "weight_decay", "schedule", "c1", "c2", "c3",
                  "nu", "gate", "momentum", "dtype"]


@dataclass
class VerdictRow:
    """One line of the verdict table."""
    claim: str
    scope: str
    theory: str
    measured: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    holds: str = "n.a."          # yes | no | unclear | n.a.
    evidence: str = ""
    n: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


CLAIMS: dict = {}


def register_claim(name: str):
    """Decorator: CLAIMS[name] = claim function."""
    def deco(fn):
        CLAIMS[name] = fn
        return fn
    return deco


def evaluate_claims(runs: pd.DataFrame, load_metrics, names=None, **opts) -> list[VerdictRow]:
    """Run the registered claims (all, or `names` in that order) on the usable runs."""
    unknown = [n for n in (names or []) if n not in CLAIMS]
    if unknown:
        raise ValueError(f"unknown claims {unknown}; registered: {sorted(CLAIMS)}")
    rows = []
    for name in names or list(CLAIMS):
        rows.extend(CLAIMS[name](runs, load_metrics, **opts))
    return rows


def judge(fit: FitResult, relation: str, target: float, tol: float) -> str:
    """'<=': yes if slope ≤ target+tol, no if ci_low > target+tol.  '==': yes if |slope−target| ≤ tol,
    no if the CI misses [target−tol, target+tol].  Otherwise unclear."""
    if relation == "<=":
        if fit.slope <= target + tol:
            return "yes"
        return "no" if fit.ci_low > target + tol else "unclear"
    if relation == "==":
        if abs(fit.slope - target) <= tol:
            return "yes"
        return "no" if (fit.ci_high < target - tol or fit.ci_low > target + tol) else "unclear"
    raise ValueError(f"relation={relation!r}; allowed: '<=', '=='")


# ---------------------------------------------------------------------------- grouping


def is_constant_schedule(name) -> bool:
    """True for a constant-η/β run (no schedule, or one named constant/none/fixed)."""
    return name in CONSTANT_SCHEDULES or (isinstance(name, float) and math.isnan(name))


def comparable_groups(runs: pd.DataFrame, vary: str):
    """Yield (scope, runs) for sets of runs that differ only in `vary` ("K" or "d") and the seed.

    Identity = optimizer, problem, d, K, weight_decay, schedule (name, c1..c3), nu, gate, momentum,
    dtype, every config key except NOT_IDENTITY (seed, steps, log.*, device, paths, names, ...;
    so lr_scale and every optimizer/problem/schedule option count), and lr/betas only when the
    schedule is constant (under a horizon schedule they are functions of K and d). Config keys that
    are a function of `vary` over the whole table (e.g. the width in a model-size sweep) are left
    out.
    """
    if runs.empty:
        return
    runs = runs.reset_index(drop=True)
    df = runs.copy()
    df["_hp"] = [f"{a}|{b}|{c}" if is_constant_schedule(k) else "" for a, b, c, k in
                 zip(df["lr"], df["beta1"], df["beta2"], df["schedule"])]
    skip = {"cfg.problem.name", "cfg.problem.d", "cfg.optimizer.name", "cfg.optimizer.lr", "cfg.optimizer.betas"}
    cfg_cols = [c for c in df.columns if c.startswith("cfg.") and c not in skip
                and c.split(".")[1] not in NOT_IDENTITY]
    keys = df[_BASE_IDENTITY + cfg_cols + ["_hp"]].astype(str)
    by_vary = keys.groupby(df[vary].astype(str))
    derived = {c for c in cfg_cols if keys[c].nunique() > 1 and by_vary[c].nunique().max() == 1}
    identity = [c for c in _BASE_IDENTITY + cfg_cols + ["_hp"] if c != vary and c not in derived]
    fixed = "K" if vary == "d" else "d"
    # the scope names the columns that tell this group apart from others of the same optimizer and problem
    varying = {k: [c for c in identity if c not in ("optimizer", "problem", "_hp", fixed) and sub[c].nunique() > 1]
               for k, sub in keys.groupby(["optimizer", "problem"])}
    for _, idx in keys.groupby(identity, sort=True, dropna=False).groups.items():
        g = runs.loc[idx]
        first = g.iloc[0]
        parts = [str(first["optimizer"]), str(first["problem"]), f"{fixed}={_num(first[fixed])}"]
        parts += [f"{c.split('.')[-1]}={_num(first[c])}"
                  for c in varying[(keys.at[idx[0], "optimizer"], keys.at[idx[0], "problem"])]]
        yield " · ".join(dict.fromkeys(parts)), g


def _num(v) -> str:
    """Short printable number (ints without .0, 3 significant digits otherwise)."""
    if isinstance(v, (int, np.integer)) or (isinstance(v, float) and math.isfinite(v) and v == int(v) and abs(v) < 1e15):
        return str(int(v))
    return f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v)


def _set(values) -> str:
    try:
        ordered = sorted(set(values))
    except TypeError:          # None next to numbers
        ordered = sorted(set(values), key=str)
    return "{" + ", ".join(_num(v) for v in ordered) + "}"


def measure_column(weight_decay: float) -> tuple[str, str]:
    """The measure the theorem bounds: G_λ (avg_kkt_residual) if λ > 0, else ‖∇f‖₁ (avg_grad_l1)."""
    return ("avg G_λ", "avg_kkt_residual") if weight_decay > 0 else ("avg ‖∇f‖₁", "avg_grad_l1")


# ---------------------------------------------------------------------------- bound check


def bound_checks(runs: pd.DataFrame) -> pd.DataFrame:
    """Per Lion-family run with known Δ, L, σ: THEORY §4 bound_template with the run's own K, d, lr,
    betas, λ and ‖e0‖₂ = ‖∇f(x0)‖₂ (m0 = 0), the measured average, slack = bound/measured, under.

    The bound is on an expectation; checking each run separately is the stricter reading.
    Not applicable (under = NA, note says why): step 0 not logged, infeasible start ‖x0‖∞ > 1/λ.
    """
    cols = ["run", "optimizer", "problem", "d", "K", "seed", "weight_decay", "x0_linf", "measure", "measured",
            "bound", "slack", "under", "constants_kind", "note"]
    out = []
    known = runs[runs["optimizer"].isin(LION_FAMILY) & runs[["Delta", "L", "sigma"]].notna().all(axis=1)] if len(runs) else runs
    for r in known.itertuples(index=False):
        label, col = measure_column(r.weight_decay)
        measured = getattr(r, col)
        e0 = getattr(r, "e0_norm", math.nan)
        x0 = getattr(r, "x0_linf", math.nan)
        row = dict(run=r.run, optimizer=r.optimizer, problem=r.problem, d=r.d, K=r.K, seed=r.seed,
                   weight_decay=r.weight_decay, x0_linf=x0, measure=label, measured=measured, bound=math.nan,
                   slack=math.nan, under=pd.NA, constants_kind=r.constants_kind, note="")
        if not math.isfinite(e0):
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


def _bound_summary(checks: pd.DataFrame) -> tuple[str, bool | None]:
    """('5/6 runs under the bound (min slack 2.1×)', all_under or None if nothing applicable)."""
    done = checks[checks["under"].notna()]
    if done.empty:
        return "", None
    n_under = int(done["under"].astype(bool).sum())
    return (f"bound: {n_under}/{len(done)} runs under (min slack {done['slack'].min():.3g}×)",
            n_under == len(done))


# ---------------------------------------------------------------------------- claims


def _fit_or_none(x, y, groups, n_boot, seed):
    ok = np.isfinite(np.asarray(y, dtype=float)) & (np.asarray(y, dtype=float) > 0)
    if len(np.unique(np.asarray(x, dtype=float)[ok])) < 2:
        return None
    return fit_power_law(x, y, groups=groups, n_boot=n_boot, seed=seed)


def _row(claim, scope, theory_text, fit, holds, evidence) -> VerdictRow:
    return VerdictRow(claim, scope, theory_text, fit.slope, fit.ci_low, fit.ci_high, holds, evidence, fit.n)


def _evidence(g, vary, fit, figure) -> str:
    logged = "; averages over logged steps only" if (g["avg_kind"].fillna("exact") != "exact").any() else ""
    return (f"{len(g)} runs, {vary} ∈ {_set(g[vary])}, seeds {_set(g['seed'])}; CI {fit.method}; "
            f"figures/{figure}.png{logged}")


@register_claim("rate_in_K")
def claim_rate_in_K(runs, load_metrics, n_boot=2000, seed=0, **_):
    """Exponent a of (1/K)Σ G_λ(x_k) ∝ K^a under the horizon schedule; theory a ≤ −1/4, and every
    run with known constants under its bound. λ > 0: ‖∇f‖₁ is reported too, with no claim."""
    from lionconv.analysis.plots import figure_stem
    checks = bound_checks(runs)
    rows = []
    for scope, g in comparable_groups(runs, "K"):
        lam, opt = float(g["weight_decay"].iloc[0]), g["optimizer"].iloc[0]
        figure = figure_stem("rate_K", g.iloc[0])
        measures = [measure_column(lam)] + ([("avg ‖∇f‖₁", "avg_grad_l1")] if lam > 0 else [])
        for i, (label, col) in enumerate(measures):
            fit = _fit_or_none(g["K"], g[col], g["seed"], n_boot, seed)
            if fit is None:
                continue
            evidence = _evidence(g, "K", fit, figure)
            if opt not in LION_FAMILY:
                text, holds = "baseline: no Lion claim", "n.a."
            elif is_constant_schedule(g["schedule"].iloc[0]):
                text, holds = "constant η, β: no K^-1/4 claim (THEORY §8)", "n.a."
            elif _fixed_beta1(g):
                text, holds = "control: fixed β1 keeps the floor 2√d(1−β1)σ (THEORY §8)", "n.a."
            elif i > 0:
                text, holds = "none (λ > 0: only G_λ is claimed)", "n.a."
            else:
                text, holds = "≤ −0.25 (O(K^-1/4))", judge(fit, "<=", -0.25, TOLERANCE["rate_K"])
                summary, all_under = _bound_summary(checks[checks["run"].isin(g["run"])])
                if summary:
                    evidence += "; " + summary
                    if all_under is False:
                        holds = "no"
            rows.append(_row(f"rate in K: {label}", scope, text, fit, holds, evidence))
    return rows


def _fixed_beta1(g: pd.DataFrame) -> bool:
    """The horizon schedule with β1 held fixed (schedule.beta1 set): THEORY §8's noise-floor control."""
    col = g.get("cfg.schedule.beta1")
    return col is not None and col.notna().any()


def d_family(g: pd.DataFrame) -> str:
    """'fixed' if Δ, L, σ do not grow with d (known family, or known constants within a factor 1.5),
    'contrast' (naive family), 'varying' (known constants that change with d), 'unknown'."""
    name = str(g["problem"].iloc[0])
    if name in SCALED_FAMILIES:
        return "fixed"
    if name in CONTRAST_FAMILIES or name.startswith("naive"):
        return "contrast"
    consts = g[["Delta", "L", "sigma"]]
    if consts.isna().any().any() or (consts <= 0).any().any():
        return "unknown"
    return "fixed" if (consts.max() / consts.min()).max() <= 1.5 else "varying"


@register_claim("rate_in_d")
def claim_rate_in_d(runs, load_metrics, n_boot=2000, seed=0, **_):
    """Exponent b of the averaged measure ∝ d^b at fixed K; theory b ≤ 1/2 where Δ, L, σ are fixed
    in d (THEORY §6); the naive family is reported as the contrast, with no verdict."""
    from lionconv.analysis.plots import figure_stem
    rows = []
    for scope, g in comparable_groups(runs, "d"):
        label, col = measure_column(float(g["weight_decay"].iloc[0]))
        fit = _fit_or_none(g["d"], g[col], g["seed"], n_boot, seed)
        if fit is None:
            continue
        family = d_family(g)
        if g["optimizer"].iloc[0] not in LION_FAMILY:
            text, holds = "baseline: no Lion claim", "n.a."
        elif is_constant_schedule(g["schedule"].iloc[0]):
            text, holds = "constant η, β: no √d claim (the schedule sets η ∝ 1/√d)", "n.a."
        elif family == "fixed":
            text, holds = "≤ 0.5 (O(√d))", judge(fit, "<=", 0.5, TOLERANCE["rate_d"])
        elif family == "contrast":
            text, holds = "contrast: Δ, σ² ∝ d, no √d claim", "n.a."
        else:
            text, holds = f"≤ 0.5 only if Δ, L, σ fixed in d ({family} here)", "n.a."
        evidence = _evidence(g, "d", fit, figure_stem("rate_d", g.iloc[0]))
        rows.append(_row(f"rate in d: {label}", scope, text, fit, holds, evidence))
    return rows


RATIO_MEASURES = [("full ∇f, time-averaged", "mean_l1_l2"),
                  ("minibatch g, time-averaged", "mean_mb_l1_l2"),
                  ("full ∇f, final iterate", "final_l1_l2")]


@register_claim("l1_l2_ratio")
def claim_l1_l2_ratio(runs, load_metrics, n_boot=2000, seed=0, **_):
    """Exponent of ‖v‖₁/‖v‖₂ ∝ d^s across model sizes; THEORY §5: s = 1/2 (dense gradients)."""
    from lionconv.analysis.plots import figure_stem
    rows = []
    runs = with_final_ratio(runs)
    for scope, g in comparable_groups(runs, "d"):
        for label, col in RATIO_MEASURES:
            if col not in g or g[col].notna().sum() < 2:
                continue
            fit = _fit_or_none(g["d"], g[col], g["seed"], n_boot, seed)
            if fit is None:
                continue
            holds = judge(fit, "==", 0.5, TOLERANCE["ratio"])
            evidence = _evidence(g, "d", fit, figure_stem("ratio", g.iloc[0]))
            rows.append(_row(f"‖·‖₁/‖·‖₂ ∝ d^s: {label}", scope, "= 0.5 (Θ(√d))", fit, holds, evidence))
    return rows


@register_claim("bound")
def claim_bound(runs, load_metrics, **_):
    """Every Lion-family run with known Δ, L, σ stays under THEORY §4's bound_template."""
    checks = bound_checks(runs)
    rows = []
    for (opt, problem, lam), g in checks.groupby(["optimizer", "problem", "weight_decay"], sort=True):
        scope = f"{opt} · {problem}" + (f" · λ={_num(lam)}" if lam > 0 else "")
        summary, all_under = _bound_summary(g)
        label = measure_column(lam)[0]
        if all_under is None:
            notes = "; ".join(sorted(set(g["note"])))
            rows.append(VerdictRow(f"under the bound: {label}", scope, "measured ≤ bound", math.nan,
                                   holds="n.a.", evidence=f"{len(g)} runs, none checkable: {notes}", n=0))
            continue
        done = g[g["under"].notna()]
        kinds = ", ".join(sorted({str(k) for k in done["constants_kind"]}))
        rows.append(VerdictRow(
            f"under the bound: {label}", scope, "slack = bound/measured ≥ 1", float(done["slack"].min()),
            holds="yes" if all_under else "no",
            evidence=f"{summary}; constants {kinds}; bounds.csv", n=len(done)))
    return rows


@register_claim("box_invariance")
def claim_box_invariance(runs, load_metrics, **_):
    """THEORY §3 exact algebra for sign updates (Lion, SignSGD, λ > 0, constant η within the run):
    ‖x_k‖∞ ≤ box_envelope(‖x_0‖∞, η, λ, k) at every logged step. CLion is excluded: its h(c) = c
    branch can move a coordinate by more than η. A violation is an implementation bug."""
    rows = []
    cand = runs[runs["optimizer"].isin(("lion", "signsgd")) & (runs["weight_decay"] > 0)
                & (runs["lr"] * runs["weight_decay"] <= 1)] if len(runs) else runs
    for (opt, problem, lam), g in cand.groupby(["optimizer", "problem", "weight_decay"], sort=True):
        worst, checked = 0.0, 0
        for r in g.itertuples(index=False):
            m = load_metrics(r.run_dir, ["step", "x_linf"])
            if m is None or not np.isfinite(r.x0_linf):
                continue
            m = m[(m["step"] > 0) & m["x_linf"].notna()]       # k = 0 is x0 itself: ratio 1 by definition
            if m.empty:
                continue
            env = theory.box_envelope(r.x0_linf, r.lr, lam, m["step"].to_numpy(dtype=float))
            worst = max(worst, float(np.nanmax(m["x_linf"].to_numpy() / np.maximum(env, 1e-300))))
            checked += 1
        if checked:
            rows.append(VerdictRow("‖x_k‖∞ under the §3 box envelope", f"{opt} · {problem} · λ={_num(lam)}",
                                   "max_k ‖x_k‖∞/envelope ≤ 1", worst, holds="yes" if worst <= 1 + 1e-5 else "no",
                                   evidence=f"{checked} runs, every logged step; figures/{_kkt_figure(g)}.png",
                                   n=checked))
    return rows


def _kkt_figure(g) -> str:
    from lionconv.analysis.plots import figure_stem
    return figure_stem("kkt", g.iloc[0])


def with_final_ratio(runs: pd.DataFrame) -> pd.DataFrame:
    """Add final_l1_l2 = final grad_l1 / final grad_l2 when the summary's final block has both."""
    if "final_l1_l2" in runs or not {"final_grad_l1", "final_grad_l2"} <= set(runs.columns):
        return runs
    return runs.assign(final_l1_l2=runs["final_grad_l1"] / runs["final_grad_l2"])


def ratio_table(runs: pd.DataFrame) -> pd.DataFrame:
    """r = ‖∇f‖₁/(√d‖∇f‖₂) per (problem, d, optimizer), averaged over logged steps and seeds,
    next to THEORY §5's reference values (full gradient and minibatch)."""
    if runs.empty or "mean_ratio_r" not in runs:
        return pd.DataFrame()
    t = (runs.groupby(["problem", "d", "optimizer"], sort=True)
         .agg(runs=("run", "size"), r_full=("mean_ratio_r", "mean"), r_minibatch=("mean_mb_ratio_r", "mean"),
              l1_l2_full=("mean_l1_l2", "mean"))
         .reset_index())
    t["sqrt_d"] = np.sqrt(t["d"])
    return t


def tensor_ratio_table(runs: pd.DataFrame, load_tensor_metrics) -> pd.DataFrame:
    """Per-tensor r and ‖·‖₁/‖·‖₂, averaged over logged steps and runs, per (problem, d, optimizer, tensor)."""
    parts = []
    for i, r in enumerate(runs.itertuples(index=False)):
        tm = load_tensor_metrics(r.run_dir, ["tensor", "numel", "ratio_r", "l1_l2"])
        if tm is not None and not tm.empty:
            parts.append(tm.assign(_run=i))
    if not parts:
        return pd.DataFrame()
    keys = runs[["problem", "d", "optimizer"]].reset_index(drop=True)
    t = pd.concat(parts, ignore_index=True)
    t = t.join(keys, on="_run")
    return (t.groupby(["problem", "d", "optimizer", "tensor"], sort=True)
            .agg(numel=("numel", "first"), r=("ratio_r", "mean"), l1_l2=("l1_l2", "mean"), runs=("_run", "nunique"))
            .reset_index())
