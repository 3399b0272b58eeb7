"""The claims: one module per claim, discovered here (THEORY §10).

    from lionconv.claims import CLAIMS, presets, claims_for
    CLAIMS["rate_in_K"]          # the module lionconv/claims/rate_in_K.py
    presets()                    # {"rate_in_K": ["bound", "rate_in_K", ...], ...}
    claims_for("kkt_constrained")  # the claim modules that analyse that preset's runs

How to add a claim
------------------
1. Write `lionconv/claims/<name>.py`. Its docstring is the rule in words (the report prints it, then
   the thresholds). It defines:

       NAME = "<name>"                      # = the module name
       THEORY = "§4"                        # the THEORY section it checks
       PRESETS = ("<preset>", ...)          # conf/experiment/<preset>.yaml (+ paper/<preset>.yaml) it runs on
       THRESHOLDS = {"tol": Threshold(0.03, "one-line reason from the design, never from the result")}

       def table(data: RunData) -> pd.DataFrame
           # built once from data.runs (usable runs of its presets only), data.metrics(run_dir, cols),
           # data.tensor_metrics(run_dir, cols); a column "figure" names each row's figure:
           # figure_stem(NAME, **group_keys) (lionconv.analysis.plots), so figures never collide.
       def verdicts(table, n_boot=2000, seed=0) -> list[VerdictRow]
           # VerdictRow(claim, kind, scope, theory, measured, ci_low, ci_high, interval, holds, evidence, n);
           # kind: "theory" (a paper's claim) | "sanity" (exact algebra, closed forms) | "context" (no claim);
           # holds from lionconv.analysis.verdict: judge_fit(fit, le(x)), judge_exact(v, ge(x)), judge(...)
           # ("yes" only if the whole interval is inside; < 5 seeds and not exact -> at most "unclear").
       def figures(table, data, out_dir) -> list[Path]
           # one PNG (+ PDF) per distinct table["figure"], via lionconv.analysis.plots.save.

   Use only the core (lionconv.analysis.*) and lionconv.theory; never import another claim.
2. Add its preset(s) `conf/experiment/<preset>.yaml` with `preset: <preset>` (and the paper variant),
   unless it runs on existing presets.
3. Add `tests/claims/test_<name>.py`: hand-computed numbers, and for a theory row a control — data
   that violates the claim — asserting "no".
Nothing else changes: scripts/reproduce.py and scripts/analyze.py discover it.
"""
from __future__ import annotations

import importlib
import pkgutil

REQUIRED = ("NAME", "THEORY", "PRESETS", "THRESHOLDS", "table", "verdicts", "figures")


def _discover() -> dict:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        missing = [a for a in REQUIRED if not hasattr(module, a)]
        if missing or module.NAME != info.name:
            raise ImportError(f"claim module {info.name} lacks {missing or 'NAME == its module name'}")
        found[info.name] = module
    return found


CLAIMS: dict = _discover()


def presets() -> dict:
    """{preset: [claim names]} over every claim's PRESETS, presets in first-seen order of the claims."""
    out: dict = {}
    for name, module in CLAIMS.items():
        for preset in module.PRESETS:
            out.setdefault(preset, []).append(name)
    return out


def claims_for(preset: str) -> list:
    """The claim modules whose PRESETS include `preset` (a paper variant 'paper/x' or 'paper_x' counts as x)."""
    base = preset.removeprefix("paper/").removeprefix("paper_")
    table = presets()
    if base not in table:
        raise ValueError(f"preset {preset!r} has no claims; presets with claims: {', '.join(sorted(table))}")
    return [CLAIMS[n] for n in table[base]]
