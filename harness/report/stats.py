"""The report's estimators and tests, honest at the sample sizes studies have.

- `mean_ci`: a mean with its Student-t interval over the real n. A percentile bootstrap over
  2–5 seeds covers far below its stated level (49 % at n = 2, 75 % at n = 3), so it is not
  used over seeds; below 3 values there is no interval at all, and the estimate says so.
- `paired` / `sign_flip_p`: the exact paired sign-flip permutation test over seeds. With n
  seeds the smallest two-sided p is 2/2ⁿ (`sign_flip_min_p`), so nothing below 6 seeds can
  reach p < 0.05 — callers say so in words instead of marking.
- `welch_ci`: a difference between independent groups of runs (two arms of a sweep).
- `slope_ci`: a least-squares slope along a sweep (every run one point).
- `cluster_bootstrap`: the second level, per mask over the test images: masks of one image
  share its difficulty, so images (clusters) are resampled, not masks.

Resampling uses a fixed seed, so the same recorded runs always give the same report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
ALPHA = 0.05
SEED = 0
N_RESAMPLES = 9999
MIN_CI_N = 3
"""Fewer values give no interval: at n = 2 a t interval is ±12.7 standard errors and leans
entirely on normality, which two values cannot check."""
MIN_IMAGES = 20
"""Fewer test images give no per-image interval: a percentile bootstrap over k clusters is
about as wide as a z interval shrunk by √((k−1)/k), which covers ≈ 90 % at k = 10."""
EXACT_MAX_N = 20  # sign patterns are enumerated up to 2^20 (in chunks), sampled beyond
_CHUNK_BITS = 16
_DRAWS = 2_000_000  # image indices drawn per bootstrap chunk


@dataclass(frozen=True)
class Estimate:
    """A mean with its `level` interval; `low`/`high` are NaN when there is none, and `note`
    says why (e.g. "n = 2: no interval below 3 values")."""
    mean: float
    low: float
    high: float
    n: int
    note: str = ""

    @property
    def has_ci(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def text(self, spec: str = ".3f", ci: bool = True) -> str:
        """`0.812 [0.801, 0.822]` (`spec` formats each number, "sig3": three significant
        digits, never exponents); `0.812 (n=2, no CI)` below 3 values; `–` for none."""
        if self.n == 0 or not math.isfinite(self.mean):
            return "–"
        fmt = sig3 if spec == "sig3" else (lambda v: format(v, spec))
        value = fmt(self.mean)
        if not ci:
            return value
        if not self.has_ci:
            return f"{value} (n={self.n}, no CI)"
        return f"{value} [{fmt(self.low)}, {fmt(self.high)}]"


def sig3(value: float) -> str:
    """Three significant digits in plain notation: 1043 → "1043", 0.0819 → "0.0819"."""
    if not math.isfinite(value) or value == 0:
        return f"{value:g}"
    return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


def _finite(values: Iterable[float]) -> np.ndarray:
    x = np.asarray(list(values), dtype=float)
    return x[np.isfinite(x)]


def mean_ci(values: Iterable[float], level: float = LEVEL) -> Estimate:
    """Mean and Student-t interval of the finite `values` (NaN: a run without the metric).

    Exact for normal data at every n ≥ 3; a constant sample gets a zero-width interval.
    """
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "no values")
    mean = float(x.mean())
    if n < MIN_CI_N:
        return Estimate(mean, math.nan, math.nan, n,
                        f"n = {n}: no interval below {MIN_CI_N} values")
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Estimate(mean, mean - half, mean + half, n)


def welch_ci(a: Iterable[float], b: Iterable[float], level: float = LEVEL) -> Estimate:
    """mean(a) − mean(b) for two independent groups of runs (different arms of a sweep, not
    paired by seed) with the Welch–Satterthwaite t interval; none unless each group has
    `MIN_CI_N` finite values."""
    x, y = _finite(a), _finite(b)
    n = min(len(x), len(y))
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "no values in one group")
    diff = float(x.mean() - y.mean())
    if n < MIN_CI_N:
        return Estimate(diff, math.nan, math.nan, n,
                        f"n = {len(x)} and {len(y)}: no interval below {MIN_CI_N} per group")
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se2 = va + vb
    if se2 == 0:
        return Estimate(diff, diff, diff, n)
    df = se2 ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1))
    half = float(stats.t.ppf((1 + level) / 2, df) * math.sqrt(se2))
    return Estimate(diff, diff - half, diff + half, n)


def slope_ci(x: Iterable[float], y: Iterable[float], level: float = LEVEL) -> Estimate:
    """Least-squares slope of `y` on `x` with its t interval (n − 2 degrees of freedom): how
    a per-run quantity changes along a sweep (e.g. ASAM's gain per doubling of model size),
    every run one point. Needs two distinct x and `MIN_CI_N` points for an interval."""
    pts = np.array([(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)],
                   dtype=float).reshape(-1, 2)
    n = len(pts)
    dx, dy = (pts - pts.mean(axis=0)).T if n else (np.zeros(0), np.zeros(0))
    sxx = float((dx ** 2).sum())
    if n < 2 or sxx == 0:
        return Estimate(math.nan, math.nan, math.nan, n, "fewer than two distinct x")
    slope = float((dx * dy).sum() / sxx)
    if n < MIN_CI_N:
        return Estimate(slope, math.nan, math.nan, n, f"n = {n}: no interval below {MIN_CI_N}")
    sse = float(((dy - slope * dx) ** 2).sum())
    half = float(stats.t.ppf((1 + level) / 2, n - 2) * math.sqrt(sse / (n - 2) / sxx))
    return Estimate(slope, slope - half, slope + half, n)


# --------------------------------------------------------------------------- seed level


def sign_flip_min_p(n: int) -> float:
    """The smallest two-sided p the exact sign-flip test can give with n pairs: only the
    observed sign pattern and its mirror image are as extreme, 2/2ⁿ (1 for n = 0)."""
    return min(1.0, 2.0 / 2 ** n) if n > 0 else 1.0


def _sign_patterns(n: int, start: int, stop: int) -> np.ndarray:
    """Rows start..stop−1 of the ±1 matrix whose row i has the bits of i as signs."""
    rows = np.arange(start, stop, dtype=np.int64)[:, None]
    return ((rows >> np.arange(n)) & 1) * 2.0 - 1.0


def sign_flip_p(differences: Iterable[float], seed: int = SEED) -> float:
    """Two-sided p of the paired sign-flip permutation test of mean difference 0.

    Under the null each pair's difference is as likely negative as positive, so every one
    of the 2ⁿ sign patterns is equally likely; p is the share of patterns whose |sum| is at
    least the observed one. Exact (enumerated) up to `EXACT_MAX_N` pairs, then estimated
    from `N_RESAMPLES` random patterns (counting the observed one, so p > 0).
    """
    d = _finite(differences)
    n = len(d)
    if n == 0:
        return math.nan
    if not np.any(d):
        return 1.0  # no pair moved: no evidence of any change
    observed = abs(d.sum())
    # the same terms summed in another order may differ in the last bits: count those as ties
    tolerance = 1e-9 * np.abs(d).sum()
    if n > EXACT_MAX_N:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(N_RESAMPLES, n))
        hits = np.count_nonzero(np.abs(signs @ d) >= observed - tolerance)
        return (hits + 1) / (N_RESAMPLES + 1)
    total, hits, step = 2 ** n, 0, 2 ** _CHUNK_BITS
    for start in range(0, total, step):
        signs = _sign_patterns(n, start, min(total, start + step))
        hits += np.count_nonzero(np.abs(signs @ d) >= observed - tolerance)
    return hits / total


@dataclass(frozen=True)
class PairedTest:
    """a − b over the seeds both have: mean difference with its t interval, the exact
    sign-flip p, and the smallest p that n pairs allow."""
    diff: Estimate
    p: float

    @property
    def min_p(self) -> float:
        return sign_flip_min_p(self.diff.n)


def paired(a: Mapping, b: Mapping) -> PairedTest:
    """Compare two methods seed by seed: `a` and `b` map a seed to that run's value."""
    keys = [k for k in a if k in b and math.isfinite(a[k]) and math.isfinite(b[k])]
    d = np.array([a[k] - b[k] for k in keys], dtype=float)
    return PairedTest(mean_ci(d), sign_flip_p(d))


# --------------------------------------------------------------------------- mask level


@dataclass(frozen=True)
class ClusterTest:
    """The mean per-mask difference with a percentile bootstrap over images."""
    diff: Estimate
    p: float  # two-sided bootstrap p: twice the smaller tail of resampled means beyond 0
    masks: int
    images: int
    sd: float  # SD of the per-mask differences
    se: float  # its standard error with masks of one image correlated (cluster-robust)


def cluster_se(values: np.ndarray, clusters: np.ndarray) -> float:
    """Cluster-robust standard error of the mean of `values` (a ratio estimator over images:
    Σ_i (S_i − m_i·x̄)² / M², with a k/(k − 1) small-sample factor)."""
    _, inverse = np.unique(clusters, return_inverse=True)
    k = inverse.max() + 1
    if k < 2:
        return math.nan
    resid = np.bincount(inverse, weights=values - values.mean(), minlength=k)
    return float(math.sqrt(k / (k - 1) * (resid ** 2).sum()) / len(values))


def cluster_bootstrap(values: Iterable[float], clusters: Iterable, level: float = LEVEL,
                      n_resamples: int = N_RESAMPLES, seed: int = SEED) -> ClusterTest:
    """Mean of per-mask `values` (e.g. IoU differences of two runs on the same masks) with a
    percentile interval from resampling whole `clusters` (the image of each mask).

    Each resample draws k images with replacement and takes the mean over all their masks
    (images hold different numbers of masks, so it is Σ sums / Σ counts, not a mean of image
    means). Below `MIN_IMAGES` images only the mean is given.
    """
    x = np.asarray(list(values), dtype=float)
    groups = np.asarray(list(clusters))
    keep = np.isfinite(x)
    x, groups = x[keep], groups[keep]
    m = len(x)
    _, inverse = np.unique(groups, return_inverse=True)
    k = int(inverse.max()) + 1 if m else 0
    sd = float(x.std(ddof=1)) if m > 1 else math.nan
    se = cluster_se(x, groups) if m else math.nan
    if m == 0:
        return ClusterTest(Estimate(math.nan, math.nan, math.nan, 0, "no masks"), math.nan,
                           0, 0, sd, se)
    mean = float(x.mean())
    if k < MIN_IMAGES:
        note = f"{k} test images: no per-image interval below {MIN_IMAGES}"
        return ClusterTest(Estimate(mean, math.nan, math.nan, m, note), math.nan, m, k, sd, se)
    sums = np.bincount(inverse, weights=x, minlength=k)
    counts = np.bincount(inverse, minlength=k).astype(float)
    rng = np.random.default_rng(seed)
    step = max(1, _DRAWS // k)  # resamples per chunk: bounds memory for large test sets
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, step):
        draws = rng.integers(0, k, size=(min(step, n_resamples - start), k))
        means[start:start + len(draws)] = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    tail = min(np.count_nonzero(means <= 0), np.count_nonzero(means >= 0))
    p = min(1.0, 2 * (tail + 1) / (n_resamples + 1))
    return ClusterTest(Estimate(mean, float(low), float(high), m), p, m, k, sd, se)
