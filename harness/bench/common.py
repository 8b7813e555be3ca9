"""What every `harness bench` command shares: the spread summary of repeated measurements.

Thread setting and device sync come from :mod:`harness.model.device`.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.model import build_model, set_trainable


def summary(samples: list[float]) -> dict[str, float]:
    """Median, quartiles and range of repeated measurements (ratios or seconds)."""
    q25, median, q75 = np.percentile(samples, [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75),
            "min": float(min(samples)), "max": float(max(samples))}


def decoder_model(preset: str, seed: int) -> torch.nn.Module:
    """`preset` with its weights, seeded, training the mask decoder only."""
    torch.manual_seed(seed)
    model = build_model(preset)
    set_trainable(model, "decoder")
    return model
