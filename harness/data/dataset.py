"""Instance-segmentation datasets as arrays, generated once and cached on disk.

A dataset is N images plus K instance masks, each mask pointing at its image (`owner`).
Training and evaluation work per instance (one prompt → one mask), so this flat layout is
what every consumer wants, and it saves to a single `.npz`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.atomic import atomic_write
from harness.data import synthetic
from harness.errors import HarnessError

SPLIT_OFFSETS = {"train": 0, "val": 1_000_003, "test": 2_000_003}  # disjoint image seeds


@dataclass(frozen=True)
class SegDataset:
    images: np.ndarray  # uint8 (N, H, W, 3)
    masks: np.ndarray  # bool (K, H, W)
    owner: np.ndarray  # int64 (K,): image index of each mask
    name: str

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"{self.name}: images must be uint8 (N, H, W, 3)")
        if self.masks.shape[1:] != self.images.shape[1:3] or len(self.owner) != len(self.masks):
            raise ValueError(f"{self.name}: masks must be (K, H, W) with one owner each")

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.images.shape[1], self.images.shape[2]

    @property
    def fingerprint(self) -> str:
        """Content hash: equal fingerprints mean equal data (used as a cache key downstream)."""
        if "_fingerprint" not in self.__dict__:
            h = hashlib.sha1()
            for arr in (self.images, self.masks, self.owner):
                h.update(str(arr.shape).encode())
                h.update(np.ascontiguousarray(arr).tobytes())
            object.__setattr__(self, "_fingerprint", h.hexdigest()[:16])
        return self.__dict__["_fingerprint"]

    def with_images(self, images: np.ndarray, name: str) -> "SegDataset":
        """Same masks on other pixels (a corrupted or restyled copy)."""
        return SegDataset(images, self.masks, self.owner, name)

    def save(self, path: Path) -> None:
        with atomic_write(path) as f:  # a concurrent reader never sees half a file
            np.savez(f, images=self.images, masks=self.masks, owner=self.owner)

    @classmethod
    def load(cls, path: Path, name: str | None = None) -> "SegDataset":
        try:
            with np.load(path) as f:
                return cls(f["images"], f["masks"], f["owner"], name or path.stem)
        except (OSError, KeyError, ValueError) as exc:
            raise HarnessError(f"cannot read dataset {path}: {exc}") from None


def synthetic_split(domain: str, split: str, n_images: int, image_size: int, seed: int,
                    max_objects: int, cache_dir: Path | None) -> SegDataset:
    """One split of a synthetic domain; generated on first use, then read from `cache_dir`."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"split must be one of {list(SPLIT_OFFSETS)}")
    name = f"{domain}-{split}-n{n_images}-{image_size}px-o{max_objects}-seed{seed}"
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "data" / f"{name}-v{synthetic.GENERATOR_VERSION}.npz"
        if path.exists():
            return SegDataset.load(path, name)
    images, masks, owner = synthetic.generate(
        domain, n_images, image_size, seed + SPLIT_OFFSETS[split], max_objects
    )
    dataset = SegDataset(images, masks, owner, name)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.save(path)
    return dataset
