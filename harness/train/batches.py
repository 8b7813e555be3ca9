"""Turning dataset images into model-ready batches, and the loss on a batch.

A batch is a set of images with *all* their instance prompts: each image is encoded once and
decoded once per instance (as Segment Anything itself trains), which makes an instance ≈ 3×
cheaper than one image encoding per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.data import SegDataset, jitter_boxes, mask_boxes
from harness.model import predict_masks
from harness.train.losses import segmentation_loss


@dataclass
class Batch:
    images: torch.Tensor  # float (B, 3, H, W) in 0..255
    boxes: torch.Tensor  # float (P, 4) xyxy pixels, one per instance
    targets: torch.Tensor  # bool (P, 1, H, W)
    image_index: torch.Tensor  # long (P,): which image each prompt belongs to

    def to(self, device) -> "Batch":
        return Batch(self.images.to(device), self.boxes.to(device), self.targets.to(device),
                     self.image_index.to(device))


def make_batch(dataset: SegDataset, image_ids: np.ndarray,
               rng: np.random.Generator | None = None, box_jitter: float = 0.0) -> Batch:
    """Images `image_ids` of `dataset` with every instance's (jittered, if rng) box prompt."""
    image_ids = np.asarray(image_ids)
    instances = np.flatnonzero(np.isin(dataset.owner, image_ids))
    masks = dataset.masks[instances]
    boxes = mask_boxes(masks)
    if rng is not None and box_jitter > 0:
        boxes = jitter_boxes(boxes, rng, box_jitter, image_size=dataset.image_size)
    position = {int(image): i for i, image in enumerate(image_ids)}
    index = np.array([position[int(o)] for o in dataset.owner[instances]], dtype=np.int64)
    images = torch.from_numpy(dataset.images[image_ids]).permute(0, 3, 1, 2).float()
    return Batch(images, torch.from_numpy(boxes), torch.from_numpy(masks)[:, None],
                 torch.from_numpy(index))


def batch_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The training loss of `model` on `batch` (also the `loss_fn` the probes take)."""
    logits, iou_pred = predict_masks(model, batch.images, boxes=batch.boxes,
                                     image_index=batch.image_index)
    return segmentation_loss(logits, iou_pred, batch.targets)


def fixed_batches(dataset: SegDataset, n_batches: int, batch_size: int, seed: int) -> list[Batch]:
    """`n_batches` disjoint seeded batches of `batch_size` images, tight boxes (for probes)."""
    order = np.random.default_rng(seed).permutation(len(dataset.images))
    take = min(len(order), n_batches * batch_size)
    return [make_batch(dataset, order[i:i + batch_size]) for i in range(0, take, batch_size)]
