"""How large a difference a comparison could have found: the minimum detectable difference.

A comparison that finds nothing is only informative next to the smallest difference it would
have found most of the time. For a two-sided test at level α with power 1 − β, that is the
true difference δ at which a t statistic with standard error `se` and `df` degrees of freedom
exceeds its critical value with probability 1 − β (noncentral t with noncentrality δ / se).
"""

from __future__ import annotations

import math

from scipy import optimize, stats

from harness.report.stats import ALPHA, sign_flip_min_p

POWER = 0.80


def _power(noncentrality: float, df: float, alpha: float) -> float:
    critical = stats.t.ppf(1 - alpha / 2, df)
    dist = stats.nct(df, noncentrality)
    power = float(dist.sf(critical) + dist.cdf(-critical))
    # scipy's noncentral t returns NaN far in its tail, where the power is 1 to double precision
    return 1.0 if math.isnan(power) and noncentrality > 2 * critical else power


def detectable(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest |δ| detected with probability `power` by a two-sided test at `alpha`
    whose estimate has standard error `se` (NaN when unknown, 0 when `se` is 0)."""
    if not (math.isfinite(se) and math.isfinite(df)) or df < 1:
        return math.nan
    if se == 0:
        return 0.0
    high = 1.0
    while _power(high, df, alpha) < power:
        high *= 2
    ncp = optimize.brentq(lambda nc: _power(nc, df, alpha) - power, 0.0, high)
    return float(ncp * se)


def seed_mdd(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable mean difference over n paired seeds whose differences have SD `sd`
    (the paired t approximation of the sign-flip test); inf when n seeds cannot give any
    sign-flip p below `alpha` at all, whatever the difference."""
    if n < 2:
        return math.nan
    if sign_flip_min_p(n) >= alpha:
        return math.inf
    return detectable(sd / math.sqrt(n), n - 1, alpha, power)


def mask_mdd(se: float, images: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable mean per-mask difference, from the cluster-robust standard error of
    the mean difference over `images` test images (the independent units)."""
    return detectable(se, images - 1, alpha, power) if images >= 2 else math.nan
