"""What every file-based source shares: splitting, the SA transform with the area filter,
and the on-disk cache of decoded splits.

A source *indexes* its files (names only: nothing is opened), splits them, then hands the
split's :class:`Item` s to :func:`cached_split`, which keys the cache by the files' paths,
sizes and modification times plus the settings, and decodes only on a miss.

Splits without split folders come from a stable hash: an item whose id (file stem or name)
hashes to u ∈ [0, 1) goes to train when u < f_train, to val when u < f_train + f_val, else to
test (``data.split`` = [f_train, f_val, f_test]). The assignment does not depend on which
other files exist, so adding files never moves old ones, and changing the fractions moves
only the items between the old and new boundaries. ``data.max_images`` keeps the split's
items with the smallest second hash (a fixed random subset). Images are ordered by id.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.atomic import atomic_write
from harness.data.dataset import SPLIT_OFFSETS, SegDataset
from harness.data.transform import transform_image, transform_nearest
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.config import DataConfig

log = logging.getLogger(__name__)
SPLITS = tuple(SPLIT_OFFSETS)
CACHE_VERSION = 1  # bump when decoding or the transform changes: cached splits are keyed by it
MASK_CHUNK = 16  # full-resolution masks decoded at once (SA-1B images hold ~100 large masks)


@dataclass(frozen=True)
class SourceDataset(SegDataset):
    """A :class:`SegDataset` read from files, with what was left out on the way."""
    image_ids: tuple[str, ...] = ()  # per image: file stem / name / crop name
    dropped: int = 0  # instances below data.min_area pixels after the transform
    dropped_images: int = 0  # images left out because none of their instances was kept


@dataclass(frozen=True, eq=False)
class Item:
    """One image to decode: its id, the files that key the cache, and how to read it."""
    id: str
    files: tuple[Path, ...]
    read: Callable[[], "Decoded"]


@dataclass
class Decoded:
    """An image (uint8 RGB, full resolution) and its instances: a label map, or chunks of
    boolean masks (H, W, n) and how many instances they hold in all."""
    image: np.ndarray
    labels: np.ndarray | None = None
    masks: Callable[[], Iterable[np.ndarray]] | None = None
    count: int = 0
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- config
def real_source_problems(data: "DataConfig", *, needs_path: str | None = None,
                         reads: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Problems common to file-based sources; `needs_path` describes what data.path is;
    `reads` names the optional keys (images, categories) this source reads."""
    out = []
    if needs_path and not data.path:
        out.append(("path", f"is required for data.source {data.source}: {needs_path}"))
    if data.image_size < 1:
        out.append(("image_size", "must be ≥ 1"))
    if data.min_area < 0:
        out.append(("min_area", "must be ≥ 0 (pixels after the resize to data.image_size)"))
    if data.max_images is not None and data.max_images < 1:
        out.append(("max_images", "must be ≥ 1 (or null: every image)"))
    if len(data.split) != 3 or any(f < 0 for f in data.split) or not math.isclose(
            sum(data.split), 1.0, abs_tol=1e-6):
        out.append(("split", f"is {data.split}; give [train, val, test] fractions ≥ 0 that "
                             "sum to 1"))
    for key in ("images", "categories"):
        if key not in reads and getattr(data, key):
            out.append((key, f"is only read by data.source coco, not {data.source}"))
    return out


def resolve(path: str) -> Path:
    """A user path (``~`` expanded; relative to the working directory)."""
    return Path(os.path.expanduser(path)).absolute()


# ---------------------------------------------------------------- splitting
def stable_unit(key: str) -> float:
    """A number in [0, 1) fixed by `key` (the same on every machine and Python version)."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2.0 ** 64


def split_of(key: str, fractions) -> str:
    u, edge = stable_unit(key), 0.0
    for name, fraction in zip(SPLITS, fractions):
        edge += fraction
        if u < edge:
            return name
    return SPLITS[-1]


def hash_split(items: list[Item], split: str, fractions) -> list[Item]:
    return [item for item in items if split_of(item.id, fractions) == split]


def quotas(n: int, fractions) -> list[int]:
    """`n` things shared by `fractions` (largest remainder), at least one for every nonzero
    fraction when there are enough."""
    raw = [f * n for f in fractions]
    counts = [math.floor(r) for r in raw]
    if n >= sum(f > 0 for f in fractions):
        counts = [max(c, 1) if f > 0 else c for c, f in zip(counts, fractions)]
    while sum(counts) > n:
        counts[counts.index(max(counts))] -= 1
    while sum(counts) < n:
        gaps = [r - c for r, c in zip(raw, counts)]
        counts[gaps.index(max(gaps))] += 1
    return counts


def cap(items: list, max_images: int | None, ident=lambda item: item.id) -> list:
    """At most `max_images` items (a fixed pseudo-random subset), ordered by id; `ident`
    gives an item's id (default: its ``id`` attribute)."""
    if max_images is not None and len(items) > max_images:
        items = sorted(items, key=lambda item: stable_unit("subset:" + ident(item)))[:max_images]
    return sorted(items, key=ident)


# ---------------------------------------------------------------- decoding
def label_instances(labels: np.ndarray, size: int, min_area: int) -> tuple[np.ndarray, int]:
    """Masks (k, size, size) of the label map's instances that keep ≥ `min_area` pixels after
    the transform (ordered by label value), and how many instances were dropped."""
    flat = labels.ravel()
    if labels.dtype.kind == "u" and labels.dtype.itemsize <= 2:
        total = int(np.count_nonzero(np.bincount(flat)[1:]))
    else:
        values = np.unique(flat)
        total = int(np.count_nonzero(values))
    small = transform_nearest(labels, size)
    values, inverse = np.unique(small, return_inverse=True)
    areas = np.bincount(inverse.ravel(), minlength=len(values))
    keep = np.flatnonzero((values != 0) & (areas >= min_area))
    masks = inverse.reshape(small.shape)[None] == keep[:, None, None]
    return masks, total - len(keep)


def mask_instances(chunks: Iterable[np.ndarray], count: int, size: int,
                   min_area: int) -> tuple[np.ndarray, int]:
    """Like :func:`label_instances` for chunks of full-resolution masks (H, W, n)."""
    kept = []
    for chunk in chunks:
        small = transform_nearest(np.asarray(chunk, dtype=bool), size)
        areas = small.sum(axis=(0, 1))
        kept.extend(np.moveaxis(small[..., areas >= min_area], -1, 0))
    masks = np.stack(kept) if kept else np.zeros((0, size, size), dtype=bool)
    return masks, count - len(kept)


def instances_of(decoded: Decoded, size: int, min_area: int) -> tuple[np.ndarray, int]:
    if decoded.labels is not None:
        return label_instances(decoded.labels, size, min_area)
    return mask_instances(decoded.masks() if decoded.masks else (), decoded.count, size,
                          min_area)


def assemble(name: str, decoded: Iterator[tuple[str, Decoded]], size: int, min_area: int,
             what: str) -> SourceDataset:
    """The transformed dataset of `decoded` (id, image) pairs; images left without an
    instance are dropped. `what` names the data in errors."""
    images, masks, owner, ids = [], [], [], []
    dropped = dropped_images = 0
    for image_id, dec in decoded:
        inst, lost = instances_of(dec, size, min_area)
        dropped += lost
        if not len(inst):
            dropped_images += 1
            continue
        owner.extend([len(images)] * len(inst))
        images.append(transform_image(dec.image, size))
        masks.append(inst)
        ids.append(image_id)
    if not images:
        raise HarnessError(f"{what}: no instance keeps data.min_area = {min_area} pixels at "
                           f"data.image_size = {size} (dropped {dropped} instances)")
    dataset = SourceDataset(np.stack(images), np.concatenate(masks),
                            np.asarray(owner, dtype=np.int64), name, image_ids=tuple(ids),
                            dropped=dropped, dropped_images=dropped_images)
    report(dataset, min_area)
    return dataset


def report(dataset: SourceDataset, min_area: int) -> None:
    if dataset.dropped or dataset.dropped_images:
        log.info("%s: %d images, %d instances; dropped %d instances below %d pixels and %d "
                 "images left without one", dataset.name, len(dataset.images), len(dataset),
                 dataset.dropped, min_area, dataset.dropped_images)


def build_items(name: str, items: list[Item], size: int, min_area: int,
                what: str) -> SourceDataset:
    if not items:
        raise HarnessError(f"{what} holds no images")

    def decoded():
        from tqdm import tqdm

        for item in tqdm(items, desc=f"decoding {name}", unit="image", leave=False,
                         disable=True if len(items) < 200 else None):
            yield item.id, item.read()

    return assemble(name, decoded(), size, min_area, what)


# ---------------------------------------------------------------- cache
def file_stamps(paths: Iterable[Path]) -> list[list]:
    """[path, size, mtime_ns] of each file: what keys a cached split."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise HarnessError(f"cannot read {path}: {exc.strerror or exc}") from None
        out.append([str(path), st.st_size, st.st_mtime_ns])
    return out


def digest(parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_path(cache_dir: Path, stem: str, key) -> Path:
    return Path(cache_dir) / "data" / f"{stem}-{digest([CACHE_VERSION, key])}.npz"


def save(dataset: SourceDataset, path: Path) -> None:
    with atomic_write(path) as f:  # a concurrent reader never sees half a file
        np.savez(f, images=dataset.images, masks=np.packbits(dataset.masks, axis=-1),
                 width=dataset.masks.shape[-1], owner=dataset.owner,
                 ids=np.asarray(dataset.image_ids, dtype=str),
                 dropped=dataset.dropped, dropped_images=dataset.dropped_images)


def read(path: Path, name: str) -> SourceDataset:
    with np.load(path, allow_pickle=False) as f:
        masks = np.unpackbits(f["masks"], axis=-1, count=int(f["width"])).view(bool)
        return SourceDataset(f["images"], masks, f["owner"], name,
                             image_ids=tuple(str(s) for s in f["ids"]),
                             dropped=int(f["dropped"]), dropped_images=int(f["dropped_images"]))


def cached(cache_dir: Path | None, stem: str, key, name: str,
           build: Callable[[], SourceDataset]) -> SourceDataset:
    """The dataset cached under `key` (any JSON-able value), built and saved on a miss."""
    if cache_dir is None:
        return build()
    path = cache_path(cache_dir, stem, key)
    if path.is_file():
        try:
            return read(path, name)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache file is built again
    dataset = build()
    save(dataset, path)
    return dataset


def cached_split(cache_dir: Path | None, stem: str, name: str, items: list[Item], settings,
                 data: "DataConfig", what: str) -> SourceDataset:
    """The split of `items`, decoded and transformed, from the cache when the files (paths,
    sizes, mtimes) and `settings` are unchanged."""
    if not items:
        raise HarnessError(f"{what} holds no images")
    key = {"settings": settings, "image_size": data.image_size, "min_area": data.min_area,
           "files": file_stamps(path for item in items for path in item.files)}
    return cached(cache_dir, stem, key, name,
                  lambda: build_items(name, items, data.image_size, data.min_area, what))


def name_list(names: list[str], shown: int = 5) -> str:
    """The first `shown` of `names` (sorted) and how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(sorted(names)[:shown]) + more


def safe_stem(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60]
