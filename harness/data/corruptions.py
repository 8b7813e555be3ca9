"""Corrupted evaluation sets: the ImageNet-C corruptions, deterministic and cached on disk.

The corruptions come from ``imagecorruptions`` (PyPI ``imagecorruptions-imaug``), the
reference implementation of Hendrycks & Dietterich's ImageNet-C: 15 *common* corruptions
in four families plus 4 *extra* ones (ImageNet-C's held-out validation corruptions), each
at severity 1 (mild) to 5 (harsh). See :data:`CORRUPTION_GROUPS`.

Images are ``uint8`` arrays, one image ``H×W×3``, a set ``N×H×W×3``; a corrupted image has
its input's shape and dtype.

Masks are not corrupted: the ground truth stays the same. That is exact for the photometric
corruptions and nearly so for the two that move pixels: ``glass_blur`` swaps pixels with
neighbours up to 1–4 px away (by severity), and ``elastic_transform`` displaces them by a
smooth field of a few pixels at most (its amplitude scales with the image side: about 1 px
at 64 px, up to ~3 px at 256 px, severity 5). A boundary metric may see that as a small
genuine error; it is part of the shift.

Determinism
-----------
The library draws from NumPy's *global* RNG, so before each image we seed it with
``corruption_seed(seed, corruption, severity, index)``, a CRC32 of those four values
(``hash()`` would differ between processes). Two corruptions ignore the global RNG unless
given a seed (``glass_blur`` shuffles pixels in Numba with its own generator,
``impulse_noise`` calls ``skimage.util.random_noise`` which makes a fresh ``default_rng``),
so they get the same value as their ``seed`` argument. The result is a pure function of
(image, corruption, severity, seed, index): identical bytes in any process, in any order,
with any batching. In-process calls restore the caller's global RNG state afterwards.

Small images
------------
The library refuses images under 32 px a side. Smaller images are mirror-padded to 32 px
(centred, so zoom-centred effects stay centred), corrupted, and cropped back; the corruption
then sees a little mirrored context, as it would near any border. Every corruption × severity
works directly from 32 px up (checked at 32, 64, 128, 200, 256 and non-square sizes):
``fog`` sizes its plasma fractal to the image, ``frost`` rescales its frost texture when the
image is larger, ``motion_blur`` stops at the border.

Caching
-------
A corrupted set is stored once as ``<cache_dir>/corrupt/<fingerprint>-<corruption>-s<severity>
-seed<seed>-<version>.npy``. ``fingerprint`` names the dataset (the caller's identity for it,
or :func:`array_fingerprint`), ``version`` names this code and the library release, so a
changed dataset, seed or library misses the old files instead of reusing them. Files are
written to a temporary name and renamed (atomic on POSIX), so a reader never sees half a
file, and parallel writers of the same cell just overwrite each other with equal bytes.
Cells already on disk are skipped, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import multiprocessing
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import closing
from functools import cache
from pathlib import Path

import numpy as np

from harness.atomic import atomic_write
from harness.errors import HarnessError

_FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
_COMMON = tuple(name for family in _FAMILIES.values() for name in family)
_EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")

CORRUPTION_GROUPS: dict[str, tuple[str, ...]] = {
    **_FAMILIES,
    "common": _COMMON,
    "extra": _EXTRA,
    "all": _COMMON + _EXTRA,
}
"""Named groups of corruptions, in ImageNet-C order. ``common`` is the 15 used in papers;
``extra`` (ImageNet-C's validation corruptions) is opt-in; ``all`` is both."""

SEVERITIES = (1, 2, 3, 4, 5)

CODE_VERSION = 1
"""Bump when a change here alters corrupted pixels, so old cache files are not reused."""

MIN_SIDE = 32
"""The library's smallest accepted image side; smaller images are padded up to it."""

_SEEDED_BY_ARGUMENT = frozenset({"glass_blur", "impulse_noise"})


# --------------------------------------------------------------------------- names


def resolve_corruptions(spec: str | Sequence[str]) -> list[str]:
    """Expand group names and corruption names into a list of corruption names.

    ``spec`` is a name, a comma-separated string (``"noise,fog"``) or a list of names; each
    name is a group of :data:`CORRUPTION_GROUPS` or a single corruption. Order is kept and
    duplicates dropped. Unknown names raise :class:`HarnessError` naming them.
    """
    tokens = spec.split(",") if isinstance(spec, str) else list(spec)
    tokens = [token.strip() for token in tokens if token.strip()]
    if not tokens:
        raise HarnessError(f"no corruptions given (spec {spec!r})")
    names: list[str] = []
    for token in tokens:
        if token in CORRUPTION_GROUPS:
            names.extend(CORRUPTION_GROUPS[token])
        else:
            names.append(_check_corruption(token))
    return list(dict.fromkeys(names))


def corruption_cells(
    spec: str | Sequence[str], severities: Iterable[int] = SEVERITIES
) -> list[tuple[str, int]]:
    """The (corruption, severity) grid for a corruption spec, corruption-major."""
    severities = [_check_severity(s) for s in severities]
    return [(name, s) for name in resolve_corruptions(spec) for s in severities]


def _check_corruption(name: str) -> str:
    if name not in CORRUPTION_GROUPS["all"]:
        raise HarnessError(
            f"unknown corruption {name!r}; known: {', '.join(CORRUPTION_GROUPS['all'])} "
            f"or a group: {', '.join(CORRUPTION_GROUPS)}"
        )
    return name


def _check_severity(severity: int) -> int:
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise HarnessError(f"corruption severity must be an integer 1..5, got {severity!r}")
    return int(severity)


def _check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        kind = f"{type(images).__name__} {getattr(images, 'dtype', '')}"
        raise ValueError(f"images must be a uint8 NumPy array, got {kind}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be N×H×W×3, got shape {images.shape}")


# --------------------------------------------------------------------------- corrupting


def corruption_seed(seed: int, corruption: str, severity: int, index: int) -> int:
    """The RNG seed for one image of one cell: stable across processes and runs."""
    return zlib.crc32(f"{seed}/{corruption}/{severity}/{index}".encode())


def _pad_to_min_side(image: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Mirror-pad an image to at least MIN_SIDE a side; return it and the crop back."""
    height, width = image.shape[:2]
    pad_h, pad_w = max(0, MIN_SIDE - height), max(0, MIN_SIDE - width)
    top, left = pad_h // 2, pad_w // 2
    if pad_h or pad_w:
        pads = ((top, pad_h - top), (left, pad_w - left), (0, 0))
        image = np.pad(image, pads, mode="symmetric")
    return image, (slice(top, top + height), slice(left, left + width))


def corrupt_image(image: np.ndarray, corruption: str, severity: int, rng_seed: int) -> np.ndarray:
    """Corrupt one ``H×W×3`` uint8 image; the output depends only on the arguments."""
    from imagecorruptions import corrupt  # heavy (cv2, numba, skimage): import on first use

    padded, crop = _pad_to_min_side(image)
    kwargs = {"seed": rng_seed} if corruption in _SEEDED_BY_ARGUMENT else {}
    saved = np.random.get_state()
    try:
        np.random.seed(rng_seed)
        out = corrupt(padded, corruption_name=corruption, severity=severity, **kwargs)
    finally:
        np.random.set_state(saved)
    out = np.ascontiguousarray(np.asarray(out, dtype=np.uint8)[crop])
    if out.shape != image.shape:
        raise RuntimeError(f"{corruption} returned shape {out.shape} for {image.shape}")
    return out


def corrupt_images(
    images: np.ndarray, corruption: str, severity: int, seed: int = 0, start: int = 0
) -> np.ndarray:
    """Corrupt ``N×H×W×3`` images in this process; ``images[i]`` is image ``start + i``.

    ``start`` lets a batch of a larger set draw the same noise as the whole set would.
    """
    _check_images(images)
    corruption, severity = _check_corruption(corruption), _check_severity(severity)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        rng_seed = corruption_seed(seed, corruption, severity, start + i)
        out[i] = corrupt_image(image, corruption, severity, rng_seed)
    return out


# --------------------------------------------------------------------------- cache files


def array_fingerprint(images: np.ndarray) -> str:
    """A short content hash of an array (its bytes, shape and dtype), for cache keys."""
    digest = hashlib.sha1(f"{images.shape}{images.dtype}".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()[:16]


@cache
def cache_version() -> str:
    """This code's version plus the library's: part of every cache file name."""
    for dist in ("imagecorruptions-imaug", "imagecorruptions"):
        try:
            return f"v{CODE_VERSION}-ic{importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"v{CODE_VERSION}-ic0"


_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")


def cache_path(
    cache_dir: Path, fingerprint: str, corruption: str, severity: int, seed: int = 0
) -> Path:
    """Where one corrupted set (a cell) is stored."""
    if not _SAFE_NAME.fullmatch(fingerprint):
        raise ValueError(
            f"fingerprint must match [A-Za-z0-9._-]+ (it names files), got {fingerprint!r}"
        )
    name = f"{fingerprint}-{corruption}-s{severity}-seed{seed}-{cache_version()}.npy"
    return Path(cache_dir) / "corrupt" / name


def _load(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array, memory-mapped read-only, or None when absent or not this shape."""
    try:
        array = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        return None
    return array if array.shape == shape and array.dtype == np.uint8 else None


def _save_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array)


# --------------------------------------------------------------------------- building


Cell = tuple[str, int]
_Task = tuple[str, int, int, int, int]  # corruption, severity, seed, start, stop

_worker_images: np.ndarray | None = None


def _init_worker(images: np.ndarray) -> None:
    """Pool initializer: receive the images once per process, not once per task."""
    global _worker_images
    _worker_images = images
    try:  # one process per core already; OpenCV's own threads would oversubscribe
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def _run_on(images: np.ndarray, task: _Task) -> np.ndarray:
    corruption, severity, seed, start, stop = task
    return corrupt_images(images[start:stop], corruption, severity, seed, start=start)


def _run_task(task: _Task) -> np.ndarray:
    """Top-level (spawn-picklable) worker entry point."""
    return _run_on(_worker_images, task)


def _results(
    tasks: list[_Task], images: np.ndarray, workers: int
) -> Iterator[tuple[_Task, np.ndarray]]:
    """Run tasks in this process or in a spawn pool, yielding results as they finish."""
    if workers <= 1:
        for task in tasks:
            yield task, _run_on(images, task)
        return
    context = multiprocessing.get_context("spawn")  # safe with threads, torch, CUDA
    pool = ProcessPoolExecutor(workers, context, initializer=_init_worker, initargs=(images,))
    try:
        pending = {pool.submit(_run_task, task): task for task in tasks}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()
    finally:
        # on Ctrl-C or an error, drop queued tasks instead of waiting for all of them
        pool.shutdown(wait=True, cancel_futures=True)


def build_corruption_cache(
    images: np.ndarray,
    fingerprint: str,
    cells: Iterable[Cell],
    cache_dir: Path,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    batch_size: int = 64,
) -> dict[Cell, np.ndarray]:
    """Make sure every (corruption, severity) cell of ``images`` is cached; return them all.

    Missing cells are generated in ``workers`` processes (default ``os.cpu_count()``; 0 or 1
    means in this process), in tasks of up to ``batch_size`` images, with a progress bar
    counting images. Each finished cell is written as soon as its last batch arrives, so an
    interrupted build keeps what it finished. The returned arrays are read-only memory maps
    of the cache files (``np.array(x)`` for a writable copy).
    """
    from tqdm.auto import tqdm

    _check_images(images)
    if len(images) == 0:
        raise ValueError("no images to corrupt (an empty evaluation set)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    cells = list(dict.fromkeys((_check_corruption(c), _check_severity(s)) for c, s in cells))
    paths = {cell: cache_path(cache_dir, fingerprint, *cell, seed=seed) for cell in cells}
    missing = [cell for cell in cells if _load(paths[cell], images.shape) is None]

    n = len(images)
    tasks = [
        (corruption, severity, seed, start, min(start + batch_size, n))
        for corruption, severity in missing
        for start in range(0, n, batch_size)
    ]
    if workers is None:
        workers = os.cpu_count() or 1
    parts: dict[Cell, dict[int, np.ndarray]] = {cell: {} for cell in missing}
    batches_per_cell = math.ceil(n / batch_size)
    with tqdm(total=n * len(missing), unit="img", desc="corrupting",
              disable=not progress or not missing) as bar:
        # closing() shuts the pool down at once even if saving a cell fails
        with closing(_results(tasks, images, min(workers, len(tasks)))) as results:
            for (corruption, severity, _, start, stop), out in results:
                cell = (corruption, severity)
                parts[cell][start] = out
                if len(parts[cell]) == batches_per_cell:
                    batches = parts.pop(cell)
                    whole = np.concatenate([batches[k] for k in sorted(batches)])
                    _save_atomic(paths[cell], whole)
                bar.update(stop - start)

    loaded = {cell: _load(paths[cell], images.shape) for cell in cells}
    if any(array is None for array in loaded.values()):  # e.g. another process wrote a bad file
        raise RuntimeError(f"corruption cache under {Path(cache_dir) / 'corrupt'} is inconsistent")
    return loaded


def corrupted_images(
    images: np.ndarray,
    fingerprint: str,
    corruption: str,
    severity: int,
    cache_dir: Path,
    seed: int = 0,
) -> np.ndarray:
    """One corrupted set, generated in this process on a cache miss (see the module doc)."""
    cell = (corruption, severity)
    cached = build_corruption_cache(
        images, fingerprint, [cell], cache_dir, seed=seed, workers=1, progress=False
    )
    return cached[cell]


__all__ = [
    "CODE_VERSION",
    "CORRUPTION_GROUPS",
    "MIN_SIDE",
    "SEVERITIES",
    "array_fingerprint",
    "build_corruption_cache",
    "cache_path",
    "cache_version",
    "corrupt_image",
    "corrupt_images",
    "corrupted_images",
    "corruption_cells",
    "corruption_seed",
    "resolve_corruptions",
]
