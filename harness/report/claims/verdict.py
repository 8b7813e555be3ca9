"""The rule that turns a measured estimate into a verdict on a stated range.

A statement claims a range for a quantity: "+20–30 % training compute" is a ratio in
[1.20, 1.30]; "more robust" is a difference in (0, ∞); "no extra latency" is a ratio within a
stated tolerance of 1. The estimate's 95 % interval decides:

- inside the claimed range: **supported** (the data rule out values outside it);
- disjoint from it: **contradicted**;
- overlapping its edge: **inconclusive** (the data allow both);
- no interval (fewer than 3 runs, or no values): **inconclusive**, and the rule says why.

A statement made of several parts is supported only when every part is, contradicted when
any part is, and inconclusive otherwise. Statements that cannot be measured on the machine
or preset at hand are **not tested here**, with the preset that tests them.
"""

from __future__ import annotations

import math

from harness.report.stats import Estimate

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
NOT_TESTED = "not tested here"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_TESTED)


def range_text(low: float, high: float) -> str:
    if math.isinf(high) and not math.isinf(low):
        return f"> {low:g}"
    if math.isinf(low) and not math.isinf(high):
        return f"< {high:g}"
    return f"[{low:g}, {high:g}]"


def judge(est: Estimate, low: float, high: float) -> tuple[str, str]:
    """(verdict, the rule as applied) for estimate `est` against the claimed [low, high]."""
    claimed = range_text(low, high)
    if est.n == 0 or not math.isfinite(est.mean):
        return INCONCLUSIVE, "no measured value"
    if not est.has_ci:
        return INCONCLUSIVE, (f"no 95 % interval ({est.note or f'n = {est.n}'}); "
                              f"claimed {claimed}")
    if low <= est.low and est.high <= high:
        return SUPPORTED, f"95 % CI [{est.low:.3g}, {est.high:.3g}] inside claimed {claimed}"
    if est.high < low or est.low > high:
        return CONTRADICTED, (f"95 % CI [{est.low:.3g}, {est.high:.3g}] outside claimed "
                              f"{claimed}")
    return INCONCLUSIVE, (f"95 % CI [{est.low:.3g}, {est.high:.3g}] overlaps the edge of "
                          f"claimed {claimed}")


def combine(verdicts: list[str]) -> str:
    """One verdict for a statement of several parts."""
    tested = [v for v in verdicts if v != NOT_TESTED]
    if not tested:
        return NOT_TESTED
    if CONTRADICTED in tested:
        return CONTRADICTED
    if len(tested) == len(verdicts) and all(v == SUPPORTED for v in tested):
        return SUPPORTED
    return INCONCLUSIVE
