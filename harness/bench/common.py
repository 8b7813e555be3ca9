"""What every `harness bench` command shares: the spread summary of repeated measurements.

Thread setting and device sync come from :mod:`harness.model.device`.
"""

from __future__ import annotations

import numpy as np


def summary(samples: list[float]) -> dict[str, float]:
    """Median, quartiles and range of repeated measurements (ratios or seconds)."""
    q25, median, q75 = np.percentile(samples, [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75),
            "min": float(min(samples)), "max": float(max(samples))}
