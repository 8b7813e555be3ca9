"""Turning dataset images into model-ready batches, and the loss on a batch.

A batch is a set of images with *all* their instance prompts: each image is encoded once and
decoded once per instance (as Segment Anything itself trains), which makes an instance ≈ 3×
cheaper than one image encoding per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.data import SegDataset, jitter_boxes
from harness.model import encode_images, predict_from_embeddings
from harness.model.embeddings import as_tensor
from harness.train.losses import segmentation_loss


@dataclass
class PointPrompts:
    """The instances of a batch prompted by clicks instead of their box."""
    coords: torch.Tensor  # float (P, n, 2) xy pixels
    labels: torch.Tensor  # float (P, n): 1 a positive click, -1 padding (no point)
    used: torch.Tensor  # bool (P,): instance i is prompted by its points

    def to(self, device) -> "PointPrompts":
        return PointPrompts(self.coords.to(device), self.labels.to(device), self.used.to(device))


@dataclass
class Batch:
    images: torch.Tensor  # float (B, 3, H, W) in 0..255
    boxes: torch.Tensor  # float (P, 4) xyxy pixels, one per instance
    targets: torch.Tensor  # bool (P, 1, H, W)
    image_index: torch.Tensor  # long (P,): which image each prompt belongs to
    # (B, C, h, w) stored embeddings of the images when the encoder is frozen, else None
    embeddings: torch.Tensor | None = None
    points: PointPrompts | None = None  # None: every instance is prompted by its box

    def to(self, device) -> "Batch":
        return Batch(self.images.to(device), self.boxes.to(device), self.targets.to(device),
                     self.image_index.to(device),
                     None if self.embeddings is None else self.embeddings.to(device),
                     None if self.points is None else self.points.to(device))


def sample_points(masks: np.ndarray, rng: np.random.Generator, fraction: float,
                  max_points: int) -> PointPrompts:
    """Prompt a `fraction` of the masks by 1..`max_points` positive clicks drawn uniformly
    inside each mask (the others keep their box), as Segment Anything trains: a model that
    only ever saw boxes is not measured by the point-prompt shift, it is surprised by it."""
    k = len(masks)
    used = rng.random(k) < fraction
    counts = rng.integers(1, max_points + 1, size=k)
    coords = np.zeros((k, max_points, 2), dtype=np.float32)
    labels = -np.ones((k, max_points), dtype=np.float32)
    for i in np.flatnonzero(used):
        ys, xs = np.nonzero(masks[i])
        if not len(ys):
            used[i] = False
            continue
        pick = rng.integers(0, len(ys), size=counts[i])
        coords[i, :counts[i]] = np.stack([xs[pick], ys[pick]], axis=1)
        labels[i, :counts[i]] = 1
    return PointPrompts(torch.from_numpy(coords), torch.from_numpy(labels),
                        torch.from_numpy(used))


def make_batch(dataset: SegDataset, image_ids: np.ndarray,
               rng: np.random.Generator | None = None, box_jitter: float = 0.0,
               embeddings: np.ndarray | None = None, point_fraction: float = 0.0,
               max_points: int = 3) -> Batch:
    """Images `image_ids` of `dataset` with every instance's box prompt (the dataset's, then
    jittered if rng), a `point_fraction` of them prompted by clicks instead (needs rng), and
    their rows of `embeddings` (the whole dataset's, from a store) when given."""
    image_ids = np.asarray(image_ids)
    instances = np.flatnonzero(np.isin(dataset.owner, image_ids))
    masks = dataset.masks[instances]
    boxes = dataset.boxes[instances]
    if rng is not None and box_jitter > 0:
        boxes = jitter_boxes(boxes, rng, box_jitter, image_size=dataset.image_size)
    points = None
    if rng is not None and point_fraction > 0:
        points = sample_points(masks, rng, point_fraction, max_points)
    position = {int(image): i for i, image in enumerate(image_ids)}
    index = np.array([position[int(o)] for o in dataset.owner[instances]], dtype=np.int64)
    images = torch.from_numpy(dataset.images[image_ids]).permute(0, 3, 1, 2).float()
    rows = None if embeddings is None else as_tensor(embeddings, image_ids, torch.device("cpu"))
    return Batch(images, torch.from_numpy(boxes), torch.from_numpy(masks)[:, None],
                 torch.from_numpy(index), rows, points)


def shard(batch: Batch, rank: int, world: int) -> Batch:
    """Rank `rank`'s share of a global batch for data-parallel training: every `world`-th
    image from the `rank`-th, with its prompts (possibly none)."""
    keep_images = torch.arange(rank, batch.images.shape[0], world)
    keep = torch.isin(batch.image_index, keep_images)
    remap = torch.full((batch.images.shape[0],), -1, dtype=torch.long)
    remap[keep_images] = torch.arange(len(keep_images))
    points = None if batch.points is None else PointPrompts(
        batch.points.coords[keep], batch.points.labels[keep], batch.points.used[keep])
    return Batch(batch.images[keep_images], batch.boxes[keep], batch.targets[keep],
                 remap[batch.image_index[keep]],
                 None if batch.embeddings is None else batch.embeddings[keep_images], points)


def batch_predictions(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask logits (P, 1, H, W) and predicted IoU (P, 1) for every prompt of `batch`."""
    size = tuple(batch.images.shape[-2:])
    embeddings = batch.embeddings if batch.embeddings is not None else encode_images(
        model, batch.images)
    if batch.points is None or not batch.points.used.any():
        return predict_from_embeddings(model, embeddings, size, boxes=batch.boxes,
                                       image_index=batch.image_index)
    used = batch.points.used
    logits = torch.empty(len(used), 1, *size, device=embeddings.device)
    iou = torch.empty(len(used), 1, device=embeddings.device)
    for subset, prompt in ((~used, {"boxes": batch.boxes[~used]}),
                           (used, {"points": (batch.points.coords[used],
                                              batch.points.labels[used])})):
        if subset.any():
            logits[subset], iou[subset] = predict_from_embeddings(
                model, embeddings, size, image_index=batch.image_index[subset], **prompt)
    return logits, iou


def batch_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The training loss of `model` on `batch` (also the `loss_fn` the probes take)."""
    logits, iou_pred = batch_predictions(model, batch)
    return segmentation_loss(logits, iou_pred, batch.targets)


def fixed_batches(dataset: SegDataset, n_batches: int, batch_size: int, seed: int) -> list[Batch]:
    """`n_batches` disjoint seeded batches of `batch_size` images, tight boxes (for probes)."""
    order = np.random.default_rng(seed).permutation(len(dataset.images))
    take = min(len(order), n_batches * batch_size)
    return [make_batch(dataset, order[i:i + batch_size]) for i in range(0, take, batch_size)]
