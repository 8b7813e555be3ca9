"""Cheaper sharpness-aware steps: ascend only every k-th step.

A SAM/ASAM step costs two forward/backward passes. With ``every_k=k`` only steps 0, k, 2k, ...
ascend; the k − 1 steps in between ("off-steps") need a single pass and do one of:

``off_step="skip"``
    a plain base-optimizer step on g = ∇L(w).

``off_step="looksam"`` (Liu et al., CVPR 2022, "Towards Efficient and Scalable
Sharpness-Aware Minimization", Algorithm 1)
    On an ascent step, with g = ∇L(w) and the sharpness-aware gradient g_s = ∇L(w + ε), keep the
    part of g_s that g does not explain,

        g_v = g_s − ‖g_s‖ cos θ · g/‖g‖ = g_s − (g·g_s / ‖g‖²) g,

    which the paper finds changes slowly from step to step. On the following off-steps reuse it:

        g_s ≈ g + α · (‖g‖ / ‖g_v‖) · g_v.

    Only the unit vector g_v/‖g_v‖ is stored (one parameter-sized buffer per parameter, kept in
    the optimizer state so checkpoints carry it). Norms and the projection are global over all
    parameters, as in LookSAM (not the layer-wise LookLayerSAM).

The functions below do the LookSAM algebra on *buckets*: lists of same-device, same-dtype
tensor lists, so every operation is a fused `torch._foreach_*` call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from harness.optim.foreach import TINY, combine_norms, combine_sums, dot, norm

OFF_STEP_MODES = ("skip", "looksam")

Buckets = Sequence[Sequence[Tensor]]


def orthogonal_direction_(g: Buckets, g_s: Buckets) -> Tensor:
    """Overwrite g with u = g_v / ‖g_v‖, g_v the part of g_s orthogonal to g; return ‖g_v‖.

    Working in place on g (a copy the caller owns) means no new parameter-sized buffers;
    ‖g_v‖ is returned so the caller can refuse a non-finite direction (an fp16 overflow).
    """
    g_sq = combine_sums([norm(gb) ** 2 for gb in g])
    projection = combine_sums([dot(gb, sb) for gb, sb in zip(g, g_s)]) / (g_sq + TINY)
    for gb, sb in zip(g, g_s):
        torch._foreach_mul_(gb, -projection.to(gb[0].device))
        torch._foreach_add_(gb, sb)
    v_norm = combine_norms([norm(gb) for gb in g])
    inverse = 1.0 / (v_norm + TINY)
    for gb in g:
        torch._foreach_mul_(gb, inverse.to(gb[0].device))
    return v_norm


def add_reused_component(grads: Buckets, directions: Buckets, alpha: float) -> None:
    """In place g ← g + α ‖g‖ u (the LookSAM off-step gradient), u a stored unit direction."""
    coefficient = alpha * combine_norms([norm(gb) for gb in grads])
    for gb, ub in zip(grads, directions):
        torch._foreach_add_(gb, torch._foreach_mul(ub, coefficient.to(gb[0].device)))
