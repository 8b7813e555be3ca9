"""Turning dataset instances into model-ready batches, and the loss on a batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.data import SegDataset, jitter_boxes, mask_boxes
from harness.model import predict_masks
from harness.train.losses import segmentation_loss


@dataclass
class Batch:
    images: torch.Tensor  # float (B, 3, H, W) in 0..255, one image per prompt
    boxes: torch.Tensor  # float (B, 4) xyxy pixels
    targets: torch.Tensor  # bool (B, 1, H, W)

    def to(self, device) -> "Batch":
        return Batch(self.images.to(device), self.boxes.to(device), self.targets.to(device))


def make_batch(dataset: SegDataset, index: np.ndarray, rng: np.random.Generator | None = None,
               box_jitter: float = 0.0) -> Batch:
    """Instances `index` of `dataset` with their images and (jittered, if rng) box prompts."""
    masks = dataset.masks[index]
    boxes = mask_boxes(masks)
    if rng is not None and box_jitter > 0:
        boxes = jitter_boxes(boxes, rng, box_jitter, image_size=dataset.image_size)
    images = torch.from_numpy(dataset.images[dataset.owner[index]]).permute(0, 3, 1, 2).float()
    return Batch(images, torch.from_numpy(boxes), torch.from_numpy(masks)[:, None])


def batch_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The training loss of `model` on `batch` (also the `loss_fn` the probes take)."""
    logits, iou_pred = predict_masks(model, batch.images, boxes=batch.boxes)
    return segmentation_loss(logits, iou_pred, batch.targets)


def fixed_batches(dataset: SegDataset, n_batches: int, batch_size: int, seed: int) -> list[Batch]:
    """`n_batches` disjoint seeded batches of `dataset` with tight boxes (for probes)."""
    order = np.random.default_rng(seed).permutation(len(dataset))
    take = min(len(order), n_batches * batch_size)
    return [make_batch(dataset, order[i:i + batch_size]) for i in range(0, take, batch_size)]
