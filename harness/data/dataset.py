"""Instance-segmentation datasets as arrays, generated once and cached on disk.

A dataset is N images plus K instance masks, each mask pointing at its image (`owner`).
Training and evaluation work per instance (one prompt → one mask), so this flat layout is
what every consumer wants, and it saves to a single `.npz`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.atomic import atomic_write
from harness.data import synthetic
from harness.data.prompts import loosen_boxes, mask_boxes
from harness.errors import HarnessError

SPLIT_OFFSETS = {"train": 0, "val": 1_000_003, "test": 2_000_003}  # disjoint image seeds


@dataclass(frozen=True)
class SegDataset:
    images: np.ndarray  # uint8 (N, H, W, 3)
    masks: np.ndarray  # bool (K, H, W)
    owner: np.ndarray  # int64 (K,): image index of each mask
    name: str
    # float32 (K, 4) xyxy box prompt of each mask: tight (from the mask) unless loosened.
    # Training (before its jitter), evaluation and the prompt-only priors all read these, so
    # every model is asked the same question.
    boxes: np.ndarray | None = None

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"{self.name}: images must be uint8 (N, H, W, 3)")
        if self.masks.shape[1:] != self.images.shape[1:3] or len(self.owner) != len(self.masks):
            raise ValueError(f"{self.name}: masks must be (K, H, W) with one owner each")
        if self.boxes is None:
            object.__setattr__(self, "boxes", mask_boxes(self.masks))
        elif self.boxes.shape != (len(self.masks), 4):
            raise ValueError(f"{self.name}: boxes must be (K, 4), one per mask")

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.images.shape[1], self.images.shape[2]

    @property
    def boxes_digest(self) -> str:
        """Hash of the box prompts: part of what a cached score depends on (not the images'
        identity, which embeddings and corrupted copies are keyed by)."""
        return hashlib.sha1(np.ascontiguousarray(self.boxes, np.float32).tobytes()).hexdigest()[:16]

    @property
    def fingerprint(self) -> str:
        """Content hash of images and masks: equal fingerprints mean equal data (a cache key
        downstream)."""
        if "_fingerprint" not in self.__dict__:
            h = hashlib.sha1()
            for arr in (self.images, self.masks, self.owner):
                h.update(str(arr.shape).encode())
                h.update(np.ascontiguousarray(arr).tobytes())
            object.__setattr__(self, "_fingerprint", h.hexdigest()[:16])
        return self.__dict__["_fingerprint"]

    def with_images(self, images: np.ndarray, name: str) -> "SegDataset":
        """Same masks and prompts on other pixels (a corrupted or restyled copy)."""
        return dataclasses.replace(self, images=images, name=name)

    def first_images(self, n: int | None) -> "SegDataset":
        """The first ``n`` images with their masks and prompts (the dataset itself if ≤ n)."""
        if n is None or n >= len(self.images):
            return self
        keep = self.owner < n  # a mask keeps its image whatever the order
        return SegDataset(self.images[:n], self.masks[keep], self.owner[keep],
                          f"{self.name}-first{n}", self.boxes[keep])

    def loosened(self, margin: float, noise: float, seed: int) -> "SegDataset":
        """The same data prompted by loose boxes (:func:`~harness.data.prompts.loosen_boxes`,
        drawn once from `seed`): a box that no longer outlines its object makes the model
        find the object's extent in the image."""
        if margin == 0 and noise == 0:
            return self
        boxes = loosen_boxes(self.boxes, np.random.default_rng(seed), margin, noise,
                             image_size=self.image_size)
        return dataclasses.replace(self, boxes=boxes)

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
