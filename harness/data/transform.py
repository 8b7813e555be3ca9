"""The Segment Anything input transform, applied to every real data source.

The longest side is scaled to ``size`` (the other to ``int(side · scale + 0.5)``, as
``segment_anything.utils.transforms.ResizeLongestSide`` does), then the image is padded with
zeros at the bottom and right to ``size × size``. Images are resized bilinearly with Pillow
(antialiased when shrinking, like SA's ``resize(to_pil_image(...))``); masks and label maps by
nearest neighbour (output pixel centre → the input pixel it falls in, i.e. source index
``floor((i + 0.5) · in / out)``), so a mask is resized exactly like its image and an
integer-scale shrink of a shape with aligned edges is exact. Images and masks are also
upscaled when smaller than ``size``.
"""

from __future__ import annotations

import numpy as np


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    scale = size / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size, size, *array.shape[2:]), dtype=array.dtype)
    out[:array.shape[0], :array.shape[1]] = array
    return out


def transform_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) → uint8 (size, size, 3): longest side to `size`, zero pad."""
    h, w = image.shape[:2]
    nh, nw = resized_shape(h, w, size)
    if (nh, nw) != (h, w):
        from PIL import Image

        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    return _pad(image, size)


def transform_nearest(array: np.ndarray, size: int) -> np.ndarray:
    """(H, W, ...) labels or masks → (size, size, ...): nearest resize, zero pad."""
    h, w = array.shape[:2]
    nh, nw = resized_shape(h, w, size)
    if (nh, nw) != (h, w):
        array = array[_nearest_index(h, nh)][:, _nearest_index(w, nw)]
    return _pad(array, size)
