"""Prompts from masks: boxes (optionally jittered, SAM-paper style) and single points."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight xyxy boxes (K, 4) float32 of boolean masks (K, H, W), in pixel coordinates."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    for k in range(len(masks)):
        ys, xs = np.flatnonzero(rows[k]), np.flatnonzero(cols[k])
        if len(ys):
            boxes[k] = (xs[0], ys[0], xs[-1], ys[-1])
    return boxes


def jitter_boxes(boxes: np.ndarray, rng: np.random.Generator, noise: float = 0.1,
                 max_pixels: float = 20.0, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Move each box coordinate by N(0, (noise · side)²), capped at `max_pixels` (SAM §A).

    `noise` is the std as a fraction of the box's width (x) or height (y); 0 returns the boxes.
    """
    if noise <= 0:
        return boxes.copy()
    side = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1) + 1
    std = np.concatenate([side, side], axis=1) * noise
    delta = np.clip(rng.standard_normal(boxes.shape) * std, -max_pixels, max_pixels)
    out = boxes + delta.astype(np.float32)
    x0, x1 = np.minimum(out[:, 0], out[:, 2]), np.maximum(out[:, 0], out[:, 2])
    y0, y1 = np.minimum(out[:, 1], out[:, 3]), np.maximum(out[:, 1], out[:, 3])
    out = np.stack([x0, y0, x1, y1], axis=1)
    if image_size is not None:
        h, w = image_size
        out = np.clip(out, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)
    return out


def interior_points(masks: np.ndarray) -> np.ndarray:
    """One positive point (K, 2) xy per mask: the pixel farthest from the mask's border.

    Deterministic and always inside the mask — the most informative single click.
    """
    points = np.zeros((len(masks), 2), dtype=np.float32)
    for k, mask in enumerate(masks):
        dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        y, x = np.unravel_index(np.argmax(dist), dist.shape)
        points[k] = (x, y)
    return points
