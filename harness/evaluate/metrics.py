"""Mask metrics: IoU, Dice and Boundary IoU, one mask pair at a time or a batch at once.

Inputs are boolean masks: ``H×W`` for the scalar functions (NumPy arrays or torch tensors),
``B×H×W`` torch tensors (any device) for the ``batch_*`` functions. Other dtypes are
refused rather than guessed at: threshold logits or probabilities first (``logits > 0``).

Definitions
-----------
- IoU  = |P ∩ G| / |P ∪ G|
- Dice = 2 |P ∩ G| / (|P| + |G|)
- Boundary IoU (Cheng et al., CVPR 2021, reference code ``boundary_iou/utils/boundary_utils.py``,
  ``mask_to_boundary``): the boundary of a mask M is ``M minus erode(M)``, where ``erode`` is
  an erosion by a 3×3 square applied ``d`` times and
  ``d = max(1, round(dilation_ratio · sqrt(H² + W²)))`` (Python ``round``, as in the
  reference). Pixels outside the image count as background (the reference pads the mask with
  a ring of zeros), so a mask touching the image border has a boundary along that border:
  a full-image mask's boundary is its outer ring of width ``d``. Then
  Boundary IoU = |B(P) ∩ B(G)| / |B(P) ∪ B(G)|.

Empty masks
-----------
The formulas are 0/0 when both masks are empty. We define that case as **1.0** (the
prediction agrees perfectly: there is nothing, and nothing was predicted). When exactly one
mask is empty the formulas already give **0.0**. The same rule holds for Dice and Boundary
IoU (a non-empty mask always has a non-empty boundary, so a boundary is empty exactly when
its mask is).

Aggregation over the shift suite lives in :func:`aggregate_shift_table`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

METRICS = ("miou", "mdice", "biou")
"""Per-cell metric columns of a shift table (means over the masks of that cell)."""

CLEAN = "clean"
"""The ``shift`` value of the unshifted evaluation set (severity 0)."""


# --------------------------------------------------------------------------- validation


def _as_bool_numpy(mask: Any, name: str) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise ValueError(
            f"{name} must be a boolean mask, got dtype {mask.dtype}; "
            "threshold it first (e.g. logits > 0)"
        )
    return mask


def _check_pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    pred, target = _as_bool_numpy(pred, "pred"), _as_bool_numpy(target, "target")
    if pred.ndim != 2 or target.ndim != 2:
        raise ValueError(
            f"masks must be 2-D (H×W), got pred {pred.shape} and target {target.shape}"
        )
    if pred.shape != target.shape:
        raise ValueError(f"mask shapes differ: pred {pred.shape} vs target {target.shape}")
    return pred, target


def _check_batch(pred: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    for name, t in (("pred", pred), ("target", target)):
        if t.dtype != torch.bool:
            raise ValueError(
                f"{name} must be a boolean mask batch, got dtype {t.dtype}; "
                "threshold it first (e.g. logits > 0)"
            )
    if pred.ndim != 3 or target.ndim != 3:
        raise ValueError(
            f"mask batches must be 3-D (B×H×W), got pred {tuple(pred.shape)} "
            f"and target {tuple(target.shape)}"
        )
    if pred.shape != target.shape:
        raise ValueError(
            f"mask batch shapes differ: pred {tuple(pred.shape)} vs target {tuple(target.shape)}"
        )
    return pred, target.to(pred.device)


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator with the empty rule: 0/0 means perfect agreement."""
    return 1.0 if denominator == 0 else numerator / denominator


def _batch_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    # float64 so that the batched results equal the scalar (Python float) ones bit for bit
    num, den = numerator.to(torch.float64), denominator.to(torch.float64)
    return torch.where(den == 0, torch.ones_like(num), num / den.clamp_min(1))


# --------------------------------------------------------------------------- boundaries


def boundary_width(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """Erosion count d of Boundary IoU for an image of this size (reference formula)."""
    diagonal = float(np.sqrt(height**2 + width**2))
    return max(1, int(round(dilation_ratio * diagonal)))


def mask_to_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Inner boundary band of a boolean H×W mask: ``mask & ~erode^d(mask)``.

    ``border_value=0`` makes everything outside the image background, like the reference's
    zero padding, so the band also runs along the image border where the mask touches it.
    """
    d = boundary_width(*mask.shape, dilation_ratio=dilation_ratio)
    square = np.ones((3, 3), dtype=bool)
    eroded = ndimage.binary_erosion(mask, structure=square, iterations=d, border_value=0)
    return mask & ~eroded


def batch_mask_to_boundary(masks: torch.Tensor, dilation_ratio: float = 0.02) -> torch.Tensor:
    """:func:`mask_to_boundary` for a B×H×W bool tensor, on the tensor's device.

    d erosions by a 3×3 square equal one erosion by a (2d+1)×(2d+1) square, and a square
    erosion is separable into a row pass and a column pass: 2·(2d+1) comparisons per pixel
    instead of (2d+1)². Erosion is min-pooling, i.e. ``-max_pool(-x)``; the explicit zero
    padding is what makes outside pixels background (``max_pool2d``'s own padding would
    ignore them instead, treating the border as foreground).
    """
    _, height, width = masks.shape
    d = boundary_width(height, width, dilation_ratio=dilation_ratio)
    # max_pool2d has no bool kernels; 0/1 values are exact in float32
    x = masks.to(torch.float32).unsqueeze(1)
    x = F.pad(x, (d, d, d, d), value=0.0)
    x = -F.max_pool2d(-x, kernel_size=(1, 2 * d + 1), stride=1)
    x = -F.max_pool2d(-x, kernel_size=(2 * d + 1, 1), stride=1)
    eroded = x.squeeze(1) > 0.5
    return masks & ~eroded


# --------------------------------------------------------------------------- scalar metrics


def iou(pred: Any, target: Any) -> float:
    """Intersection over union of two boolean H×W masks (1.0 when both are empty)."""
    pred, target = _check_pair(pred, target)
    return _ratio(int(np.count_nonzero(pred & target)), int(np.count_nonzero(pred | target)))


def dice(pred: Any, target: Any) -> float:
    """Dice coefficient (F1) of two boolean H×W masks (1.0 when both are empty)."""
    pred, target = _check_pair(pred, target)
    overlap = int(np.count_nonzero(pred & target))
    return _ratio(2 * overlap, int(np.count_nonzero(pred)) + int(np.count_nonzero(target)))


def boundary_iou(pred: Any, target: Any, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU (Cheng et al. 2021) of two boolean H×W masks; see the module docstring."""
    pred, target = _check_pair(pred, target)
    pred_band = mask_to_boundary(pred, dilation_ratio)
    target_band = mask_to_boundary(target, dilation_ratio)
    return _ratio(
        int(np.count_nonzero(pred_band & target_band)),
        int(np.count_nonzero(pred_band | target_band)),
    )


# --------------------------------------------------------------------------- batched metrics


def _batch_overlap(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred & target).sum(dim=(1, 2))


def batch_iou(pred: Any, target: Any) -> torch.Tensor:
    """Per-item IoU of two B×H×W bool tensors, as a float64 tensor of length B."""
    pred, target = _check_batch(pred, target)
    return _batch_ratio(_batch_overlap(pred, target), (pred | target).sum(dim=(1, 2)))


def batch_dice(pred: Any, target: Any) -> torch.Tensor:
    """Per-item Dice of two B×H×W bool tensors, as a float64 tensor of length B."""
    pred, target = _check_batch(pred, target)
    sizes = pred.sum(dim=(1, 2)) + target.sum(dim=(1, 2))
    return _batch_ratio(2 * _batch_overlap(pred, target), sizes)


def batch_boundary_iou(pred: Any, target: Any, dilation_ratio: float = 0.02) -> torch.Tensor:
    """Per-item Boundary IoU of two B×H×W bool tensors, as a float64 tensor of length B."""
    pred, target = _check_batch(pred, target)
    pred_band = batch_mask_to_boundary(pred, dilation_ratio)
    target_band = batch_mask_to_boundary(target, dilation_ratio)
    union = (pred_band | target_band).sum(dim=(1, 2))
    return _batch_ratio(_batch_overlap(pred_band, target_band), union)


# --------------------------------------------------------------------------- shift-suite aggregates


def aggregate_shift_table(table: Any) -> dict[str, float]:
    """Summarise a shift-suite result table into flat, loggable numbers.

    Schema of ``table`` (a ``pandas.DataFrame``, or anything ``pd.DataFrame(...)`` accepts:
    a dict of columns or a list of row dicts), one row per evaluated cell:

    ========== ====== ===============================================================
    column     type   meaning
    ========== ====== ===============================================================
    shift      str    ``"clean"`` or a corruption name, e.g. ``"gaussian_noise"``
    severity   int    0 for ``"clean"``, 1..5 for corruptions
    miou       float  mean IoU over the masks of that cell
    mdice      float  mean Dice over the masks of that cell
    biou       float  mean Boundary IoU over the masks of that cell
    ========== ====== ===============================================================

    Metric columns are optional (only those present are summarised). Rows repeating a
    (shift, severity) cell are averaged first, so every cell weighs the same.

    For every metric ``m`` present the result has:

    - ``clean/m`` — the clean value;
    - ``shift/mean/m`` — mean over all corruption × severity cells;
    - ``shift/relative/m`` — ``shift/mean/m / clean/m`` (robustness relative to clean;
      NaN when the clean value is 0);
    - ``shift/<corruption>/m`` — mean over that corruption's severities;
    - ``shift/s<k>/m`` — mean over corruptions at severity k;

    plus ``shift/relative`` = ``shift/relative/miou``, the headline number. Keys needing the
    clean row are left out when the table has none; keys needing corruption rows are left
    out when it has none.
    """
    import pandas as pd  # only this helper needs pandas

    df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
    missing = {"shift", "severity"} - set(df.columns)
    if missing:
        raise ValueError(f"shift table lacks column(s) {sorted(missing)}; has {list(df.columns)}")
    metrics = [m for m in METRICS if m in df.columns]
    if not metrics:
        raise ValueError(f"shift table has none of the metric columns {list(METRICS)}")
    is_clean = df["shift"] == CLEAN
    if (df.loc[is_clean, "severity"] != 0).any() or (df.loc[~is_clean, "severity"] < 1).any():
        raise ValueError("severity must be 0 for the clean rows and 1..5 for corruption rows")

    cells = df.groupby(["shift", "severity"], as_index=False)[metrics].mean()
    clean = cells[cells["shift"] == CLEAN]
    shifted = cells[cells["shift"] != CLEAN]

    out: dict[str, float] = {}
    for m in metrics:
        if len(clean):
            out[f"{CLEAN}/{m}"] = float(clean[m].iloc[0])
        if not len(shifted):
            continue
        out[f"shift/mean/{m}"] = float(shifted[m].mean())
        if len(clean):
            base = out[f"{CLEAN}/{m}"]
            out[f"shift/relative/{m}"] = out[f"shift/mean/{m}"] / base if base else float("nan")
        for name, value in shifted.groupby("shift")[m].mean().items():
            out[f"shift/{name}/{m}"] = float(value)
        for severity, value in shifted.groupby("severity")[m].mean().items():
            out[f"shift/s{int(severity)}/{m}"] = float(value)
    if "shift/relative/miou" in out:
        out["shift/relative"] = out["shift/relative/miou"]
    return out


__all__ = [
    "CLEAN",
    "METRICS",
    "aggregate_shift_table",
    "batch_boundary_iou",
    "batch_dice",
    "batch_iou",
    "batch_mask_to_boundary",
    "boundary_iou",
    "boundary_width",
    "dice",
    "iou",
    "mask_to_boundary",
]
