"""Power-law fits with confidence intervals that respect how the runs were repeated.

A rate claim y ∝ x^a is checked by OLS of log y on log x. Runs with the same seed share
randomness (initial point, data order, noise stream), so the unit of resampling is the seed, not
the single run: the CI is a percentile bootstrap over whole seeds (a cluster bootstrap).
A plain percentile interval over G seeds undercovers badly when G is small (≈76 % instead of 95 %
at G = 4 in our simulations: the bootstrap variance is (G−1)/G of the cluster variance and its
tails are normal, not t_{G−1}), so both half-widths are stretched around the estimate by
κ = √(G/(G−1))·t_{G−1}/z; that restores ≈95 % coverage from G = 4 up (tests/test_analysis.py).
With fewer than MIN_BOOT_GROUPS seeds that bootstrap has too few distinct resamples to mean
anything (2 seeds give 3), so the CI falls back to the OLS t-interval (exact for i.i.d. Gaussian
noise in log y; it ignores within-seed correlation, and says so in `method`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_BOOT_GROUPS = 4


@dataclass(frozen=True)
class FitResult:
    """log y = intercept + slope·log x; [ci_low, ci_high] is the `ci` interval of the slope."""
    slope: float
    intercept: float
    ci_low: float
    ci_high: float
    n: int
    r2: float
    method: str = "ols-t"      # "seed-bootstrap" | "ols-t"
    n_groups: int = 0

    def predict(self, x):
        """Fitted y = exp(intercept)·x^slope."""
        return np.exp(self.intercept) * np.power(np.asarray(x, dtype=float), self.slope)


def _ols(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float, float, float]:
    """(slope, intercept, r2, standard error of the slope) of ly on lx."""
    xm, ym = lx.mean(), ly.mean()
    sxx = np.sum((lx - xm) ** 2)
    slope = np.sum((lx - xm) * (ly - ym)) / sxx
    intercept = ym - slope * xm
    resid = ly - intercept - slope * lx
    sst = np.sum((ly - ym) ** 2)
    r2 = 1.0 - np.sum(resid**2) / sst if sst > 0 else 1.0
    dof = len(lx) - 2
    se = np.sqrt(np.sum(resid**2) / dof / sxx) if dof > 0 else np.inf
    return float(slope), float(intercept), float(r2), float(se)


def fit_power_law(x, y, groups=None, n_boot=2000, seed=0, ci=0.95) -> FitResult:
    """Fit y = C·x^a by OLS of log y on log x, with a `ci` interval for a.

    groups: one label per point (the run's seed). With ≥ MIN_BOOT_GROUPS distinct labels and
    n_boot > 0 the interval is the percentile bootstrap that resamples whole groups with
    replacement and refits (half-widths stretched by the small-G factor κ, see the module
    docstring); otherwise it is the OLS t-interval slope ± t_{n−2}·se.
    Points with non-finite or non-positive x or y are dropped. Raises ValueError if fewer than
    2 distinct x values remain.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    labels = np.zeros(len(x), dtype=int) if groups is None else np.asarray(groups)
    if not (len(x) == len(y) == len(labels)):
        raise ValueError(f"x, y and groups must have the same length, got {len(x)}, {len(y)}, {len(labels)}")
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    lx, ly, labels = np.log(x[keep]), np.log(y[keep]), labels[keep]
    if len(np.unique(lx)) < 2:
        raise ValueError(f"fit_power_law needs at least 2 distinct positive x values, got {np.unique(x[keep])}")
    slope, intercept, r2, se = _ols(lx, ly)
    _, group_idx = np.unique(labels, return_inverse=True)
    n_groups = int(group_idx.max()) + 1 if groups is not None else 0
    alpha = (1.0 - ci) / 2.0
    if groups is not None and n_groups >= MIN_BOOT_GROUPS and n_boot > 0:
        slopes = _group_bootstrap_slopes(lx, ly, group_idx, n_groups, n_boot, seed)
        lo, hi = np.quantile(slopes, [alpha, 1.0 - alpha])
        kappa = np.sqrt(n_groups / (n_groups - 1)) * stats.t.ppf(1 - alpha, n_groups - 1) / stats.norm.ppf(1 - alpha)
        lo, hi = slope - kappa * (slope - lo), slope + kappa * (hi - slope)
        method = "seed-bootstrap"
    else:
        half = stats.t.ppf(1.0 - alpha, len(lx) - 2) * se if len(lx) > 2 else np.inf
        lo, hi = slope - half, slope + half
        method = "ols-t"
    return FitResult(slope, intercept, float(lo), float(hi), int(len(lx)), r2, method, n_groups)


def _group_bootstrap_slopes(lx, ly, group_idx, n_groups, n_boot, seed) -> np.ndarray:
    """Slopes of weighted OLS where each resample weights a row by how often its group was drawn.

    Drawing groups with replacement is the same as giving every row of group g the weight
    count_g ~ Multinomial(G, 1/G); this vectorises all n_boot refits into a few array operations.
    """
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    w = counts[:, group_idx].astype(float)                       # (n_boot, n_points)
    wsum = w.sum(axis=1, keepdims=True)
    xm = (w * lx).sum(axis=1, keepdims=True) / wsum
    ym = (w * ly).sum(axis=1, keepdims=True) / wsum
    sxx = (w * (lx - xm) ** 2).sum(axis=1)
    sxy = (w * (lx - xm) * (ly - ym)).sum(axis=1)
    ok = sxx > 1e-12 * max(1.0, float(np.ptp(lx)) ** 2)          # resample still spans ≥ 2 x values
    return sxy[ok] / sxx[ok]


def running_average_slope(steps, running_avg, k_min_fraction=0.1) -> float:
    """Slope of log(running average) against log k along the tail k ≥ k_min_fraction·k_max of one run.

    k = step + 1 is the number of terms in the average (steps start at 0). The points of one run are
    serially correlated, so only the slope is returned, no interval.
    """
    if not 0.0 <= k_min_fraction < 1.0:
        raise ValueError(f"k_min_fraction={k_min_fraction!r} must be in [0, 1)")
    k = np.asarray(steps, dtype=float) + 1.0
    avg = np.asarray(running_avg, dtype=float)
    tail = k >= k_min_fraction * np.nanmax(k)
    return fit_power_law(k[tail], avg[tail], n_boot=0).slope


def seed_bootstrap(statistic, n_seeds: int, n_boot=2000, seed=0, ci=0.95) -> tuple[float, float, float]:
    """(estimate, lo, hi): `statistic(idx)` on all seeds (idx = 0..n_seeds−1), and its percentile
    bootstrap over seeds drawn with replacement, both half-widths stretched by the small-G factor κ of
    the module docstring (as fit_power_law). statistic(idx) gets an int array of seed positions (with
    repeats) and returns a float; NaN bounds with fewer than 2 seeds or n_boot = 0."""
    estimate = float(statistic(np.arange(n_seeds)))
    if n_seeds < 2 or n_boot <= 0:
        return estimate, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(rng.integers(0, n_seeds, n_seeds)) for _ in range(n_boot)], dtype=float)
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.nanquantile(draws, [alpha, 1.0 - alpha])
    kappa = np.sqrt(n_seeds / (n_seeds - 1)) * stats.t.ppf(1 - alpha, n_seeds - 1) / stats.norm.ppf(1 - alpha)
    return estimate, float(estimate - kappa * (estimate - lo)), float(estimate + kappa * (hi - estimate))


def fit_mean_power_law(x, y, n_boot=2000, seed=0, ci=0.95) -> FitResult | None:
    """Fit E[y | x] = C·x^a: OLS of log(mean of y at each x) on log x (THEORY §7: the gap of the
    MEAN, never logs of single runs, so values ≤ 0 are kept in the means).

    For claims where each run at each x is an independent draw (a training subset drawn from the run
    seed: the draws at different x share nothing), the interval is a percentile bootstrap that
    resamples the runs within each x independently and refits, stretched by fit_power_law's small-G
    factor κ with G = the fewest runs at any x. A resample whose mean is ≤ 0 at some x has no log:
    if more than (1 − ci)/2 of the resamples are such, the interval is (−inf, inf) (undecidable).
    None when fewer than 2 distinct x have a positive mean."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[ok], y[ok]
    xs = np.unique(x)
    means = np.array([y[x == v].mean() for v in xs])
    if (means > 0).sum() < 2 or (means <= 0).any():
        return None
    lx, ly = np.log(xs), np.log(means)
    slope, intercept, r2, se = _ols(lx, ly)
    counts = np.array([(x == v).sum() for v in xs])
    G = int(counts.min())
    alpha = (1.0 - ci) / 2.0
    if G < MIN_BOOT_GROUPS or n_boot <= 0:
        half = stats.t.ppf(1.0 - alpha, len(lx) - 2) * se if len(lx) > 2 else np.inf
        return FitResult(slope, intercept, slope - half, slope + half, int(len(x)), r2, "ols-t", G)
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(xs)))
    for j, v in enumerate(xs):                       # one vectorised resample per x (a few x values)
        vals = y[x == v]
        boot[:, j] = vals[rng.integers(0, len(vals), size=(n_boot, len(vals)))].mean(axis=1)
    valid = (boot > 0).all(axis=1)
    if (~valid).mean() > alpha:
        return FitResult(slope, intercept, -np.inf, np.inf, int(len(x)), r2, "seed-bootstrap", G)
    lb = np.log(boot[valid])
    xm = lx.mean()
    slopes = ((lx - xm) * (lb - lb.mean(axis=1, keepdims=True))).sum(axis=1) / ((lx - xm) ** 2).sum()
    lo, hi = np.quantile(slopes, [alpha, 1.0 - alpha])
    kappa = np.sqrt(G / (G - 1)) * stats.t.ppf(1 - alpha, G - 1) / stats.norm.ppf(1 - alpha)
    lo, hi = slope - kappa * (slope - lo), slope + kappa * (hi - slope)
    return FitResult(slope, intercept, float(lo), float(hi), int(len(x)), r2, "seed-bootstrap", G)


def stratified_mean_ci(values, strata, n_boot=2000, seed=0, ci=0.95) -> tuple[float, float, float, int]:
    """(mean, lo, hi, G) of the mean of `values` with a percentile bootstrap that resamples within each
    stratum (e.g. the seeds at each N, independent draws of the training set), stretched by the
    small-G factor κ of fit_power_law with G = the fewest values in a stratum. NaNs are dropped."""
    v, s = np.asarray(values, dtype=float), np.asarray(strata)
    ok = np.isfinite(v)
    v, s = v[ok], s[ok]
    if len(v) == 0:
        return np.nan, np.nan, np.nan, 0
    mean = float(v.mean())
    labels = np.unique(s)
    G = int(min((s == lab).sum() for lab in labels))
    if G < MIN_BOOT_GROUPS or n_boot <= 0:
        return mean, mean, mean, G
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for lab in labels:
        vals = v[s == lab]
        total += vals[rng.integers(0, len(vals), size=(n_boot, len(vals)))].sum(axis=1)
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(total / len(v), [alpha, 1.0 - alpha])
    kappa = np.sqrt(G / (G - 1)) * stats.t.ppf(1 - alpha, G - 1) / stats.norm.ppf(1 - alpha)
    return mean, float(mean - kappa * (mean - lo)), float(mean + kappa * (hi - mean)), G
