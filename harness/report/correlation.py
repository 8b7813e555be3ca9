"""Rank correlation between a sharpness probe and a generalisation gap, within one method.

Pooling the runs of several methods treats each method's cluster of runs as independent
points: three methods that differ in both sharpness and gap give a large τ that says only that
the methods differ. So τ is computed within a method, across its runs; the partial τ removes
what both share with clean accuracy (a better model may be both flatter and less brittle); a
bootstrap over runs gives an interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from harness.report.stats import LEVEL, SEED

MIN_N = 3  # fewer runs have no ranking to correlate
CI_MIN_N = 6  # fewer runs: most bootstrap resamples repeat one or two runs and tie
N_RESAMPLES = 1999
_CELLS = 2_000_000  # sign-matrix entries per bootstrap chunk (bounds memory for many runs)


@dataclass(frozen=True)
class Correlation:
    tau: float
    p: float
    n: int
    low: float = math.nan
    high: float = math.nan
    partial: float = math.nan  # τ controlling for a third variable (clean mIoU)
    partial_low: float = math.nan
    partial_high: float = math.nan

    def text(self, adjusted: float = math.nan) -> str:
        """`+0.40 [-0.20, +0.80] (p=0.1, Holm 0.6, n=8)`; `adjusted`: the corrected p."""
        if not math.isfinite(self.tau):
            return f"– (n={self.n})"
        ci = f" [{self.low:+.2f}, {self.high:+.2f}]" if math.isfinite(self.low) else ""
        holm = f", Holm {adjusted:.2g}" if math.isfinite(adjusted) else ""
        return f"{self.tau:+.2f}{ci} (p={self.p:.2g}{holm}, n={self.n})"

    def partial_text(self) -> str:
        if not math.isfinite(self.partial):
            return "–"
        ci = (f" [{self.partial_low:+.2f}, {self.partial_high:+.2f}]"
              if math.isfinite(self.partial_low) else "")
        return f"{self.partial:+.2f}{ci}"


def _arrays(*columns: Iterable[float]) -> list[np.ndarray]:
    arrays = [np.asarray(list(c), float) for c in columns]
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    return [a[keep] for a in arrays]


def kendall(x: Iterable[float], y: Iterable[float]) -> Correlation:
    """Kendall's τ-b and its two-sided p-value over the pairs where both are finite."""
    xs, ys = _arrays(x, y)
    n = len(xs)
    if n < MIN_N or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return Correlation(math.nan, math.nan, n)  # no ranking to correlate
    result = stats.kendalltau(xs, ys)
    return Correlation(float(result.statistic), float(result.pvalue), n)


def tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's τ-b of each row pair of `x`, `y` (shape (..., n)); NaN where one row is
    constant. Σ sign(xi − xj)·sign(yi − yj) over pairs, over the untied pair counts."""
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    den = np.sqrt((sx ** 2).sum(axis=(-2, -1)) * (sy ** 2).sum(axis=(-2, -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sx * sy).sum(axis=(-2, -1)) / den, np.nan)


def partial_tau(xy: np.ndarray, xz: np.ndarray, yz: np.ndarray) -> np.ndarray:
    """Kendall's partial τ of x and y given z: (τxy − τxz·τyz) / √((1 − τxz²)(1 − τyz²))."""
    with np.errstate(invalid="ignore", divide="ignore"):
        den = np.sqrt((1 - xz ** 2) * (1 - yz ** 2))
        return np.where(den > 0, (xy - xz * yz) / den, np.nan)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the resampled statistic, or none when more than a tenth of the
    resamples were degenerate (all tied): the rest are no longer a bootstrap of the data."""
    ok = values[np.isfinite(values)]
    if len(ok) < 0.9 * len(values):
        return math.nan, math.nan
    low, high = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def within_method(x: Iterable[float], y: Iterable[float], control: Iterable[float],
                  level: float = LEVEL, n_resamples: int = N_RESAMPLES,
                  seed: int = SEED) -> Correlation:
    """τ-b of `x` and `y` with its p-value, the partial τ given `control`, and percentile
    bootstrap intervals of both from resampling runs (from `CI_MIN_N` runs)."""
    xs, ys, zs = _arrays(x, y, control)
    base = kendall(xs, ys)
    if not math.isfinite(base.tau):
        return base
    partial = float(partial_tau(base.tau, tau_b(xs, zs), tau_b(ys, zs)))
    if base.n < CI_MIN_N:
        return Correlation(base.tau, base.p, base.n, partial=partial)
    draws = np.random.default_rng(seed).integers(0, base.n, size=(n_resamples, base.n))
    taus, partials = [], []
    step = max(1, _CELLS // base.n ** 2)  # resamples per chunk: n² sign pairs each
    for start in range(0, n_resamples, step):
        chunk = draws[start:start + step]
        bx, by, bz = xs[chunk], ys[chunk], zs[chunk]
        taus.append(tau_b(bx, by))
        partials.append(partial_tau(taus[-1], tau_b(bx, bz), tau_b(by, bz)))
    low, high = _interval(np.concatenate(taus), level)
    p_low, p_high = _interval(np.concatenate(partials), level)
    return Correlation(base.tau, base.p, base.n, low, high, partial, p_low, p_high)
