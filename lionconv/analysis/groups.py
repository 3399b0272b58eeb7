"""Grouping runs into comparable sets, and the small table helpers every claim uses.

    for scope, g in comparable_groups(runs, "K"): ...      # runs that differ only in K and the seed
    for g in identity_groups(runs, free={"cfg.lr_scale"}): ...
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lionconv.analysis.fit import fit_power_law
from lionconv.runio import NOT_FAMILY_KEYS

CONSTANT_SCHEDULES = {None, "", "none", "constant", "fixed"}
SCALED_FAMILIES = {"scaled_separable"}          # Δ, L, σ fixed in d by construction (THEORY §6)
CONTRAST_FAMILIES = {"naive_separable"}         # Δ, σ² ∝ d: the exponent in d changes
# top-level config keys that do not change the mathematics of a run, or that vary within one
# family (replicates, horizons, logging, placement): one list, in runio
NOT_IDENTITY = NOT_FAMILY_KEYS
_BASE_IDENTITY = ["optimizer", "problem", "d", "K", "weight_decay", "schedule", "c1", "c2", "c3",
                  "nu", "gate", "momentum", "dtype"]



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
        parts = [str(first["optimizer"]), str(first["problem"]), f"{fixed}={num(first[fixed])}"]
        parts += [f"{c.split('.')[-1]}={num(first[c])}"
                  for c in varying[(keys.at[idx[0], "optimizer"], keys.at[idx[0], "problem"])]]
        yield " · ".join(dict.fromkeys(parts)), g


def num(v) -> str:
    """Short printable number (ints without .0, 3 significant digits otherwise)."""
    if isinstance(v, (int, np.integer)) or (isinstance(v, float) and math.isfinite(v) and v == int(v) and abs(v) < 1e15):
        return str(int(v))
    return f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v)


def set_text(values) -> str:
    try:
        ordered = sorted(set(values))
    except TypeError:          # None next to numbers
        ordered = sorted(set(values), key=str)
    return "{" + ", ".join(num(v) for v in ordered) + "}"


def measure_column(weight_decay: float) -> tuple[str, str]:
    """The measure the theorem bounds: G_λ (avg_kkt_residual) if λ > 0, else ‖∇f‖₁ (avg_grad_l1)."""
    return ("avg G_λ", "avg_kkt_residual") if weight_decay > 0 else ("avg ‖∇f‖₁", "avg_grad_l1")




def column(runs: pd.DataFrame, name: str, default=math.nan) -> pd.Series:
    """runs[name], or a column of `default` when the runs have no such column."""
    return runs[name] if name in runs else pd.Series(default, index=runs.index, dtype=object if default is None else float)


def finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def g3(v) -> str:
    """3 significant digits (plain ints without .0)."""
    return num(float(v)) if finite(v) else "—"


def _is_free(col: str, free) -> bool:
    return any(col == f or col.startswith(f + ".") for f in free)


def _identity_columns(runs: pd.DataFrame, free) -> list:
    cols = ["problem", "optimizer", "K", "weight_decay"] + sorted(
        c for c in runs.columns if c.startswith("cfg.") and c.split(".")[1] not in NOT_IDENTITY)
    return [c for c in cols if c in runs and not _is_free(c, free)]


def identity_groups(runs: pd.DataFrame, free):
    """Sets of runs that agree on everything that changes the mathematics except the `free` columns:
    problem, optimizer, K, λ and every cfg.* key not in NOT_IDENTITY (runio.NOT_FAMILY_KEYS); `free` names columns or
    column prefixes ("cfg.optimizer" frees every optimizer option). Yields DataFrames."""
    if runs.empty:
        return
    cols = _identity_columns(runs, free)
    keys = runs[cols].astype(str)
    for _, idx in keys.groupby(cols, sort=True, dropna=False).groups.items():
        yield runs.loc[idx]


def scoped_groups(runs: pd.DataFrame, free) -> list:
    """identity_groups with a scope suffix naming the keys that tell apart groups of the same
    optimizer and problem (e.g. "sigma=1"); [(suffix, group)]."""
    groups = list(identity_groups(runs, free))
    if not groups:
        return []
    cols = [c for c in _identity_columns(runs, free) if c not in ("optimizer", "problem")]
    firsts = pd.DataFrame([g.iloc[0][["optimizer", "problem"] + cols] for g in groups]).astype(str)
    out = []
    for i, g in enumerate(groups):
        same = firsts[(firsts["optimizer"] == firsts.at[firsts.index[i], "optimizer"])
                      & (firsts["problem"] == firsts.at[firsts.index[i], "problem"])]
        parts = {}
        for c in cols:           # one entry per short name: weight_decay and cfg.optimizer.weight_decay agree
            short = "λ" if c.split(".")[-1] == "weight_decay" else c.split(".")[-1]
            if same[c].nunique() > 1 and short not in parts:
                parts[short] = f"{short}={num(g.iloc[0][c])}"
        out.append((" · ".join(parts.values()), g))
    return out



def fit_xy(x, y, groups, n_boot, seed):
    """fit_power_law on the finite positive points, or None with fewer than 2 distinct x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if len(np.unique(x[ok])) < 2:
        return None
    return fit_power_law(x[ok], y[ok], groups=np.asarray(groups)[ok], n_boot=n_boot, seed=seed)


def fit_text(fit) -> str:
    return f"{fit.slope:.3f} [{fit.ci_low:.3g}, {fit.ci_high:.3g}]" if fit is not None else "—"



def median_tau(load_metrics, run_dir) -> float:
    m = load_metrics(run_dir, ["tau"])
    if m is None:
        return math.nan
    t = m["tau"].to_numpy(dtype=float)
    t = t[np.isfinite(t) & (t > 0)]
    return float(np.median(t)) if len(t) else math.nan



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



def fixed_beta1(g: pd.DataFrame) -> bool:
    """The horizon schedule with β1 held fixed (schedule.beta1 set): THEORY §8's noise-floor control."""
    c = g.get("cfg.schedule.beta1")
    return c is not None and c.notna().any()


def drop_index(runs: pd.DataFrame) -> pd.Series:
    """The replaced training example (problem.replace_index, or its older name drop_index); NaN on a full set."""
    return column(runs, "cfg.problem.replace_index").combine_first(column(runs, "cfg.problem.drop_index"))


def clion_variant(runs: pd.DataFrame) -> pd.Series:
    """The optimizer's name, and for CLion its gate and ν when the runs hold more than one CLion setting
    ("clion[coordinate, ν=1e-09]"), so that settings are never pooled."""
    opts = runs["optimizer"].astype(str).tolist()
    settings = [f"{g}, ν={float(n):g}" for g, n in zip(column(runs, "gate", None), column(runs, "nu"))]
    several = len({s for o, s in zip(opts, settings) if o == "clion"}) > 1
    return pd.Series([f"clion[{s}]" if several and o == "clion" else o for o, s in zip(opts, settings)],
                     index=runs.index, dtype=object)
