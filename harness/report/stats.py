"""The report's statistics: mean ± bootstrap CI over seeds, paired differences, rank correlation.

Every resampling uses a fixed seed, so the same recorded runs always give the same report.
Small samples are the rule here (a study has a handful of final seeds, an ensemble one run):
instead of letting scipy warn and return NaN, the degenerate cases are decided up front —
n = 0 → no estimate, n = 1 → a value without an interval, a constant sample → a zero-width
interval (every resample has the same mean).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 9999
SEED = 0
WILCOXON_MIN_N = 6
"""Below 6 pairs the exact two-sided Wilcoxon p-value cannot go under 0.05 (2/2⁵ = 0.0625)."""
ALPHA = 0.05


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95 % bootstrap interval; `low`/`high` are NaN when n < 2."""
    mean: float
    low: float
    high: float
    n: int

    @property
    def has_ci(self) -> bool:
        return self.n >= 2 and math.isfinite(self.low) and math.isfinite(self.high)

    def text(self, spec: str = ".3f", ci: bool = True) -> str:
        """`0.812 [0.801, 0.822]` (`spec` formats each number, "sig3": three significant
        digits, never exponents); `0.812 (n=1, no CI)` for one run; `–` for none."""
        if self.n == 0 or not math.isfinite(self.mean):
            return "–"
        fmt = sig3 if spec == "sig3" else (lambda v: format(v, spec))
        value = fmt(self.mean)
        if not ci:
            return value
        if not self.has_ci:
            return f"{value} (n=1, no CI)" if self.n == 1 else value
        return f"{value} [{fmt(self.low)}, {fmt(self.high)}]"


def sig3(value: float) -> str:
    """Three significant digits in plain notation: 1043 → "1043", 0.0819 → "0.0819"."""
    if not math.isfinite(value) or value == 0:
        return f"{value:g}"
    return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


def _finite(values: Iterable[float]) -> np.ndarray:
    x = np.asarray(list(values), dtype=float)
    return x[np.isfinite(x)]


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE,
            n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Estimate:
    """Mean and percentile-bootstrap CI of the finite `values` (NaNs are runs without it).

    Percentile rather than BCa: BCa's jackknife acceleration is unstable for 2–5 values and
    returns NaN on many of them; the percentile interval always exists and is what we state.
    """
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1)
    if np.ptp(x) == 0:
        return Estimate(mean, mean, mean, n)
    result = stats.bootstrap((x,), np.mean, n_resamples=n_resamples, method="percentile",
                             confidence_level=confidence, rng=np.random.default_rng(seed))
    ci = result.confidence_interval
    return Estimate(mean, float(ci.low), float(ci.high), n)


@dataclass(frozen=True)
class PairedTest:
    """a − b over the seeds both have: mean with paired-bootstrap CI, Wilcoxon p (n ≥ 6)."""
    diff: Estimate
    wilcoxon_p: float

    @property
    def bootstrap_significant(self) -> bool:
        return self.diff.has_ci and (self.diff.low > 0 or self.diff.high < 0)

    @property
    def wilcoxon_significant(self) -> bool:
        return math.isfinite(self.wilcoxon_p) and self.wilcoxon_p < ALPHA

    @property
    def marks(self) -> str:
        """`*` the CI of Δ excludes 0; `†` Wilcoxon signed-rank p < 0.05 (only when n ≥ 6)."""
        return ("*" if self.bootstrap_significant else "") + (
            "†" if self.wilcoxon_significant else "")


def paired(a: Mapping, b: Mapping, seed: int = SEED) -> PairedTest:
    """Compare two methods seed by seed: `a` and `b` map a seed to that run's value.

    Resampling the per-seed differences is the paired bootstrap (scipy's `paired=True`
    resamples the same pair indices, which for a difference of means is the same thing).
    """
    keys = [k for k in a if k in b and math.isfinite(a[k]) and math.isfinite(b[k])]
    d = np.array([a[k] - b[k] for k in keys], dtype=float)
    p = math.nan
    if len(d) >= WILCOXON_MIN_N:
        # all-zero differences: no evidence of any change (scipy would raise or warn)
        p = 1.0 if not np.any(d) else float(stats.wilcoxon(d).pvalue)
    return PairedTest(mean_ci(d, seed=seed), p)


@dataclass(frozen=True)
class Correlation:
    tau: float
    p: float
    n: int

    def text(self) -> str:
        if not math.isfinite(self.tau):
            return f"– (n={self.n})"
        return f"{self.tau:+.2f} (p={self.p:.2g}, n={self.n})"


def kendall(x: Iterable[float], y: Iterable[float]) -> Correlation:
    """Kendall's τ-b and its two-sided p-value over the pairs where both are finite."""
    xs, ys = np.asarray(list(x), float), np.asarray(list(y), float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    n = len(xs)
    if n < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return Correlation(math.nan, math.nan, n)  # no ranking to correlate
    result = stats.kendalltau(xs, ys)
    return Correlation(float(result.statistic), float(result.pvalue), n)
