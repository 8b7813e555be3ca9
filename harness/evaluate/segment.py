"""Prompted segmentation of a whole dataset, batched, and its per-mask scores.

Each image is encoded once; all of its instance prompts are decoded against that embedding.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from harness.data import SegDataset, interior_points, jitter_boxes
from harness.evaluate.metrics import batch_boundary_iou, batch_dice, batch_iou
from harness.model import encode_images, predict_from_embeddings
from harness.model.embeddings import as_tensor, stored_embeddings

PROMPTS = ("box", "point")


def dataset_prompts(dataset: SegDataset, prompt: str = "box", box_jitter: float = 0.0,
                    seed: int = 0) -> np.ndarray:
    """Prompts for every instance: the dataset's boxes (K, 4), jittered when `box_jitter` > 0,
    or points (K, 2)."""
    if prompt == "point":
        return interior_points(dataset.masks)
    if prompt != "box":
        raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    return jitter_boxes(dataset.boxes, np.random.default_rng(seed), box_jitter,
                        image_size=dataset.image_size)


def chunk_logits(model: torch.nn.Module, images: torch.Tensor, prompts: dict,
                 image_index: torch.Tensor, image_size: tuple[int, int],
                 embeddings: torch.Tensor | None = None) -> torch.Tensor:
    """Mask logits (k, H, W) for one chunk of images and the prompts on them.

    ``prompts`` holds ``boxes`` (k, 4) or ``points`` ((k, 1, 2), (k, 1) labels); a model with
    its own ``chunk_logits`` (an ensemble, a prior) answers for itself. ``embeddings`` are the
    chunk's image embeddings when a store already has them.
    """
    if hasattr(model, "chunk_logits"):
        return model.chunk_logits(images, prompts, image_index, image_size, embeddings)
    if embeddings is None:
        embeddings = encode_images(model, images)
    logits, _ = predict_from_embeddings(model, embeddings, image_size, image_index=image_index,
                                        **prompts)
    return logits[:, 0].float()


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset: SegDataset, prompt: str = "box",
                    box_jitter: float = 0.0, seed: int = 0, batch_size: int = 32,
                    return_logits: bool = False) -> np.ndarray:
    """Predicted masks (K, H, W) bool for every instance (float logits if `return_logits`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    prompts = torch.from_numpy(dataset_prompts(dataset, prompt, box_jitter, seed))
    stored = stored_embeddings(model, dataset)
    out = []
    try:
        for start in range(0, len(dataset.images), batch_size):
            stop = min(start + batch_size, len(dataset.images))
            images = torch.from_numpy(dataset.images[start:stop]).permute(0, 3, 1, 2).float()
            sel = np.flatnonzero((dataset.owner >= start) & (dataset.owner < stop))
            index = torch.from_numpy(dataset.owner[sel] - start).to(device)
            p = prompts[sel].to(device)
            if prompt == "point":
                kwargs = {"points": (p[:, None], torch.ones(len(sel), 1, device=device))}
            else:
                kwargs = {"boxes": p}
            embeddings = None if stored is None else as_tensor(stored, slice(start, stop),
                                                               device)
            logits = chunk_logits(model, images.to(device), kwargs, index,
                                  dataset.image_size, embeddings).cpu()
            out.append(logits if return_logits else logits > 0)
    finally:
        model.train(was_training)
    # owner is sorted by construction, so chunk order is instance order
    return torch.cat(out).numpy()


def score_masks(pred: np.ndarray | torch.Tensor, dataset: SegDataset,
                boundary: bool = True) -> dict[str, np.ndarray]:
    """Per-instance IoU, Dice (and Boundary IoU) of predictions against the dataset's masks."""
    pred = torch.as_tensor(pred)
    target = torch.from_numpy(dataset.masks)
    scores = {"iou": batch_iou(pred, target).numpy(), "dice": batch_dice(pred, target).numpy()}
    if boundary:
        scores["biou"] = batch_boundary_iou(pred, target).numpy()
    return scores


SCORE_NAMES = {"iou": "miou", "dice": "mdice", "biou": "biou"}
"""Per-mask score → the name of its mean over a dataset."""


def mean_scores(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """{miou, mdice, biou}: the means of :func:`score_masks` output."""
    return {SCORE_NAMES[k]: float(v.mean()) if len(v) else float("nan")
            for k, v in scores.items()}


def timed_scores(model: torch.nn.Module, dataset: SegDataset, prompt: str = "box",
                 box_jitter: float = 0.0, seed: int = 0, batch_size: int = 32,
                 boundary: bool = True) -> tuple[dict[str, np.ndarray], float]:
    """Per-mask scores of `model` on `dataset` (:func:`score_masks`) and the seconds spent
    predicting them (not scoring)."""
    start = time.perf_counter()
    pred = predict_dataset(model, dataset, prompt, box_jitter, seed, batch_size)
    seconds = time.perf_counter() - start
    return score_masks(pred, dataset, boundary), seconds


def evaluate_dataset(model: torch.nn.Module, dataset: SegDataset, prompt: str = "box",
                     box_jitter: float = 0.0, seed: int = 0, batch_size: int = 32,
                     boundary: bool = True) -> dict[str, float]:
    """mIoU, mean Dice (and mean Boundary IoU) over the instances of `dataset`, plus
    `infer_seconds`: the time spent predicting (not scoring)."""
    scores, seconds = timed_scores(model, dataset, prompt, box_jitter, seed, batch_size,
                                   boundary)
    return {**mean_scores(scores), "infer_seconds": seconds}
