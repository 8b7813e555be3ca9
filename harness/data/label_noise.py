"""Annotation noise on the training split: boundaries drawn too wide or too tight, objects
left unlabelled.

Real masks are traced by people: edges wander by a few pixels and small objects are missed.
A claim that an optimizer "amplifies annotation noise" is tested by training on a noisy copy
of the training masks and scoring on clean test masks. Each instance's boundary moves by a
radius drawn uniformly from −`boundary`…`boundary` pixels (dilation outward, erosion inward;
an erosion that would empty the mask keeps it), and each instance is dropped with probability
`drop`. Box prompts follow the noisy masks, as they would follow a noisy annotation.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from harness.data.dataset import SegDataset


def _moved(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius == 0:
        return mask
    square = np.ones((2 * abs(radius) + 1,) * 2, bool)  # a Chebyshev ball: exact on a grid
    if radius > 0:
        return ndimage.binary_dilation(mask, square)
    eroded = ndimage.binary_erosion(mask, square)
    return eroded if eroded.any() else mask


def with_label_noise(data: SegDataset, boundary: int, drop: float, seed: int) -> SegDataset:
    """`data` with noisy masks (drawn once from `seed`); `data` itself when both are 0."""
    if boundary == 0 and drop == 0:
        return data
    rng = np.random.default_rng(seed)
    radii = rng.integers(-boundary, boundary + 1, size=len(data.masks))
    keep = rng.random(len(data.masks)) >= drop
    masks = np.stack([_moved(m, int(r)) for m, r in zip(data.masks, radii)]) \
        if len(data.masks) else data.masks
    return SegDataset(data.images, masks[keep], data.owner[keep],
                      f"{data.name}-noisy-b{boundary}-d{drop:g}")
