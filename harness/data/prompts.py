"""Prompts from masks: boxes (optionally jittered, SAM-paper style, or loosened) and single
points."""

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


def loosen_boxes(boxes: np.ndarray, rng: np.random.Generator, margin: float, noise: float,
                 image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Loose boxes: each side of each box pushed *out* by `margin` × the box side plus noise.

    A side moves out by ``max(0, (margin + noise · z) · side)`` with z ~ N(0, 1) drawn per
    side, where ``side`` is the box's width (for x0, x1) or height (y0, y1) in pixels,
    ``x1 - x0 + 1`` as in :func:`jitter_boxes`. The push is never negative, so a loose box
    still contains the tight one (and the object); boxes are then clipped to the image when
    `image_size` (H, W) is given. Unlike jitter (noise around the tight box), a loose box
    tells the segmenter less about the object's extent, which is what makes the image matter
    for blob-like objects.

    ``margin == noise == 0`` returns the boxes unchanged; `rng` is drawn from only when
    ``noise > 0`` (four normals per box).
    """
    if margin < 0 or noise < 0:
        raise ValueError(f"margin and noise must be ≥ 0, got margin={margin!r}, noise={noise!r}")
    boxes = np.asarray(boxes, dtype=np.float32)
    if margin == 0 and noise == 0:
        return boxes.copy()
    side = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1) + 1
    side = np.concatenate([side, side], axis=1).astype(np.float64)
    z = rng.standard_normal(boxes.shape) if noise > 0 else np.zeros(boxes.shape)
    push = np.maximum(0.0, (margin + noise * z) * side)
    out = boxes + (push * np.array([-1, -1, 1, 1])).astype(np.float32)
    if image_size is not None:
        h, w = image_size
        out = np.clip(out, 0, np.array([w - 1, h - 1, w - 1, h - 1], dtype=np.float32))
    return out.astype(np.float32)


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
