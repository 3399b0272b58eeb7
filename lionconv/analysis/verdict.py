"""What a verdict is (THEORY §10): a row with a kind, an interval that is named, and a CI-gated judge.

    judge(lo, hi, accept=(-inf, -0.22), interval="seed-bootstrap (5 seeds)")  -> "yes" | "no" | "unclear"

"yes" needs the whole interval [lo, hi] inside the accepted region, "no" the whole interval outside
it, anything else is "unclear". An interval that is not a seed bootstrap over ≥ MIN_SEEDS seeds and
not exact (a deterministic rule) can say at most "unclear".
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

KINDS = ("theory", "sanity", "context")
MIN_SEEDS = 5                       # THEORY §10: a seed bootstrap needs ≥ 5 seeds to decide
EXACT = "exact (deterministic rule)"
NONE = "none"
VERDICT_COLUMNS = ["claim", "kind", "scope", "theory", "measured", "ci_low", "ci_high", "interval", "holds",
                   "evidence", "n"]


@dataclass(frozen=True)
class Threshold:
    """A number a rule compares against, written once, with the design reason it has that value."""
    value: float
    reason: str

    def __float__(self) -> float:
        return float(self.value)


@dataclass
class VerdictRow:
    """One line of the verdict table. kind: theory | sanity | context (THEORY §10)."""
    claim: str
    kind: str
    scope: str
    theory: str
    measured: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    interval: str = NONE
    holds: str = "n.a."          # yes | no | unclear | n.a.
    evidence: str = ""
    n: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}; allowed: {', '.join(KINDS)}")
        if self.kind == "context":
            self.holds = "n.a."

    def as_dict(self) -> dict:
        return asdict(self)


def fit_interval(fit) -> str:
    """The name of a FitResult's interval: 'seed-bootstrap (5 seeds)' or 'ols-t (2 seeds)'."""
    seeds = fit.n_groups or 1
    return f"{fit.method} ({seeds} seed{'s' if seeds != 1 else ''})"


def decisive(interval: str) -> bool:
    """Whether an interval may back a yes/no: exact, or a seed bootstrap or a seed range ("seed range
    (n seeds)": the min–max over n seeds, a distribution-free interval for the median with coverage
    1 − 2^(1−n), 94 % at n = 5) over ≥ MIN_SEEDS seeds."""
    if interval == EXACT:
        return True
    if not interval.startswith(("seed-bootstrap", "seed range")):
        return False
    try:
        return int(interval.split("(")[1].split()[0]) >= MIN_SEEDS
    except (IndexError, ValueError):
        return False


def judge(lo: float, hi: float, accept: tuple[float, float], interval: str) -> str:
    """yes if [lo, hi] ⊂ accept, no if [lo, hi] ∩ accept = ∅, else unclear; capped at unclear when the
    interval is not decisive (see decisive). accept = (low, high), either end may be ±inf."""
    a, b = accept
    if math.isnan(lo) or math.isnan(hi):
        return "unclear"
    if a <= lo and hi <= b:
        verdict = "yes"
    elif hi < a or lo > b:
        verdict = "no"
    else:
        verdict = "unclear"
    return verdict if decisive(interval) else "unclear"


def judge_fit(fit, accept: tuple[float, float]) -> str:
    """judge on a FitResult's slope interval."""
    return judge(fit.ci_low, fit.ci_high, accept, fit_interval(fit))


def judge_exact(value: float, accept: tuple[float, float]) -> str:
    """A deterministic rule: the value itself is the interval."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unclear"
    return judge(value, value, accept, EXACT)


def le(x: float) -> tuple[float, float]:
    """Accepted region (−inf, x]."""
    return (-math.inf, float(x))


def ge(x: float) -> tuple[float, float]:
    """Accepted region [x, +inf)."""
    return (float(x), math.inf)


def within(target: float, tol: float) -> tuple[float, float]:
    """Accepted region [target − tol, target + tol]."""
    return (float(target) - float(tol), float(target) + float(tol))
