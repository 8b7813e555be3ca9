"""The Segment Anything training loss: 20·focal + dice + MSE(IoU head, true IoU) (SAM §A)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

FOCAL_WEIGHT = 20.0


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017), mean over pixels and masks."""
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-ce)  # probability given to the true class
    return ((1 - p_t) ** gamma * ce).mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 − soft Dice per mask (smoothed by `eps` so empty masks stay finite), mean over masks."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    inter = (prob * target).sum(1)
    return (1 - (2 * inter + eps) / (prob.sum(1) + target.sum(1) + eps)).mean()


def hard_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU (P,) of the thresholded prediction with the target; both empty counts as 1."""
    pred = (logits > 0).flatten(1)
    target = target.flatten(1) > 0.5
    inter = (pred & target).sum(1).float()
    union = (pred | target).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def segmentation_loss(
    mask_logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Loss for logits (P, 1, H, W), IoU predictions (P, 1) and boolean targets (P, 1, H, W)."""
    target = target.to(mask_logits.dtype)
    mask_logits = mask_logits.float()
    with torch.no_grad():
        true_iou = hard_iou(mask_logits, target)
    iou_loss = F.mse_loss(iou_pred.float().squeeze(1), true_iou)
    return FOCAL_WEIGHT * focal_loss(mask_logits, target) + dice_loss(mask_logits, target) + iou_loss
