"""Image and label-map files → arrays; a file that cannot be used is a one-line HarnessError
naming it.

Images become uint8 RGB (H, W, 3): 8-bit images are taken as they are; grayscale is repeated
into three channels; an alpha channel is dropped; palette and other PIL modes are converted
to RGB; **16-bit, 32-bit and float images are min–max scaled per image** (over all channels
together, so a colour image keeps its balance) to 0..255 — microscopy and medical images
rarely span their type's range, so a fixed division would leave them black. A constant image
becomes all zeros.

Masks are instance label maps (H, W): 0 is background and every other value one instance;
8-, 16- or 32-bit integers (PNG modes L, P, I;16, I, or any integer TIFF). A colour mask is
rejected (a label map is one channel).

PNG and JPEG go through Pillow, TIFF through tifffile (first page). EXIF orientation is not
applied: pixels are taken as stored, which is how COCO and SA-1B masks are drawn. Nothing is imported
until a file is read, so importing the harness stays quick.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.errors import HarnessError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # PIL modes kept numeric
_LABEL_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _decode(path: Path, what: str, pil_array) -> np.ndarray:
    """The pixels of `path` (TIFF: tifffile's array; else `pil_array(opened image)`)."""
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            return np.asarray(tifffile.imread(path, key=0))
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            return pil_array(im)
    except (HarnessError, MemoryError):
        raise
    except Exception as exc:  # a damaged file makes the decoders raise nearly anything
        raise HarnessError(f"cannot read {what} {path}: {one_line(exc)}") from None


def to_rgb_uint8(array: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """uint8 RGB (H, W, 3) from gray, gray+alpha, RGB or RGBA pixels of any numeric type."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] in (1, 2):  # gray, gray + alpha
        a = a[..., 0]
    elif a.ndim == 3 and a.shape[-1] == 4:  # RGBA
        a = a[..., :3]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)) or min(a.shape[:2]) < 1:
        raise HarnessError(f"image {path} has shape {tuple(np.shape(array))}; expected "
                           "(H, W) gray or (H, W, 3|4) colour")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        if a.dtype.kind not in "uif":
            raise HarnessError(f"image {path} has pixel type {a.dtype}; expected numbers")
        f = a.astype(np.float64)
        finite = np.isfinite(f)
        lo, hi = (f[finite].min(), f[finite].max()) if finite.any() else (0.0, 0.0)
        scaled = (f - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(f)
        a = np.round(np.clip(np.where(finite, scaled, 0.0), 0, 255)).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a)


def read_image(path: Path) -> np.ndarray:
    """The image at `path` as uint8 RGB (H, W, 3) (see the module docstring for how)."""
    def pil_array(im):
        return np.array(im) if im.mode in _WIDE_MODES else np.array(im.convert("RGB"))

    return to_rgb_uint8(_decode(Path(path), "image", pil_array), path)


def read_label_map(path: Path) -> np.ndarray:
    """The instance label map at `path`: an integer (H, W) array (0 = background)."""
    path = Path(path)

    def pil_array(im):
        if im.mode not in _LABEL_MODES:
            raise HarnessError(f"mask {path} is a {im.mode} image; a mask must be a "
                               "single-channel instance label map (0 = background)")
        return np.array(im)

    labels = _decode(path, "mask", pil_array)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2:
        raise HarnessError(f"mask {path} has shape {labels.shape}; a mask must be a "
                           "single-channel instance label map (H, W)")
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if labels.dtype.kind == "f":
        if not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
            raise HarnessError(f"mask {path} holds non-integer values; a mask must be an "
                               "instance label map")
        return labels.astype(np.int64)
    if labels.dtype.kind not in "ui":
        raise HarnessError(f"mask {path} has pixel type {labels.dtype}; expected integers")
    return labels
