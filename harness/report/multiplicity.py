"""Many comparisons in one table: Holm–Bonferroni, and whether any cell could be marked.

A heatmap of 17 corruptions × methods tests dozens of correlated hypotheses; at α = 0.05 each,
several cells are "significant" by chance alone. Holm controls the family-wise error over the
cells of one table or figure (its family) without assuming independence, and is uniformly
more powerful than plain Bonferroni.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from harness.report.stats import ALPHA, sign_flip_min_p

HOLM = "Holm–Bonferroni"


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm-adjusted p-values, in the input order; NaN (no test) stays NaN and is not counted
    in the family. The i-th smallest of m p-values is multiplied by m − i + 1, then made
    non-decreasing along that order (an adjusted p never undercuts a smaller raw one's)."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(p.shape, math.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    if m == 0:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def smallest_adjusted(min_ps: Sequence[float]) -> float:
    """The smallest Holm-adjusted p any cell of a family could reach, given each cell's
    smallest possible raw p: Holm multiplies the smallest raw p by the family size m and
    every adjusted p is at least that first one."""
    finite = [p for p in min_ps if math.isfinite(p)]
    return min(1.0, len(finite) * min(finite)) if finite else math.nan


def can_mark(min_ps: Sequence[float], alpha: float = ALPHA) -> bool:
    return smallest_adjusted(min_ps) < alpha


def no_mark_sentence(ns: Sequence[int], what: str = "cell") -> str:
    """Why no cell of a family of sign-flip tests over `ns` seeds (one n per cell) can be
    marked, in words with the numbers."""
    n = max(ns)
    m = len(ns)
    best = sign_flip_min_p(n)
    family = (f"; {HOLM} over the {m} {what}s multiplies the smallest p by {m}, to at least "
              f"{min(1.0, m * best):.3g}" if m > 1 else "")
    return (f"No {what} can be marked significant: with {n} paired seed{'s' if n != 1 else ''} "
            f"the smallest two-sided sign-flip p is 2/2^{n} = {best:.3g}{family}, not below "
            f"{ALPHA}. Reaching it takes at least "
            f"{seeds_needed(m)} seeds{f' for {m} {what}s' if m > 1 else ''}.")


def seeds_needed(m: int, alpha: float = ALPHA) -> int:
    """Fewest seeds whose smallest sign-flip p survives Holm over m tests: m · 2/2ⁿ < α."""
    n = 1
    while m * sign_flip_min_p(n) >= alpha:
        n += 1
    return n
