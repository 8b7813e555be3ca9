"""Loss-landscape slices: L(w + α d₁ [+ β d₂]) along random, filter-normalised directions.

A raw Gaussian direction is meaningless for comparing two networks: rescaling a layer (which
BatchNorm / LayerNorm make free) rescales how far a unit step moves it. Li et al. (2018,
"Visualizing the Loss Landscape of Neural Nets") fix this by rescaling each *filter* of the
direction to the norm of the matching filter of w, so a step α perturbs every filter by the
same *relative* amount. Here a filter is a slice along the first dimension: a row of a Linear
weight, an output channel of a Conv weight (an input channel for ConvTranspose, whose weight is
stored transposed). Tensors with fewer than two dimensions (biases, norm scales) get a zero
direction, as in the paper.

Plots use matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg on save)
rather than pyplot: no global figure registry to leak, no backend switched under a notebook.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor, nn

from ._objective import Cost, LossFn, Objective
from ._params import Vector, probe_session, set_perturbed, trainable_parameters
from ._random import ProbeRandom


@dataclass(frozen=True)
class Landscape1D:
    """``losses[i] = L(w + alphas[i] d)``; ``alphas`` symmetric with an exact 0 in the middle."""

    alphas: np.ndarray
    losses: np.ndarray
    center_loss: float
    seed: int
    cost: Cost


@dataclass(frozen=True)
class Landscape2D:
    """``losses[i, j] = L(w + alphas[i] d₁ + betas[j] d₂)`` on a symmetric grid."""

    alphas: np.ndarray
    betas: np.ndarray
    losses: np.ndarray
    center_loss: float
    seed: int
    cost: Cost


def filter_normalized_directions(model: nn.Module, count: int = 1, seed: int = 0) -> list[Vector]:
    """``count`` Gaussian directions over the trainable parameters, filter-normalised.

    The landscape probes draw theirs exactly like this, so the same ``seed`` reproduces them.
    """
    return _directions(trainable_parameters(model), count, ProbeRandom(seed))


def _directions(params: Sequence[Tensor], count: int, rng: ProbeRandom) -> list[Vector]:
    directions = []
    for _ in range(count):
        direction = []
        for p, d in zip(params, rng.normal(params), strict=True):
            if p.dim() < 2:
                direction.append(torch.zeros_like(d))
                continue
            w_norms = p.detach().flatten(1).norm(dim=1)
            d_norms = d.flatten(1).norm(dim=1)
            factor = w_norms / d_norms  # a zero filter of w (e.g. LoRA's B) stays unperturbed
            direction.append(d * factor.view(-1, *[1] * (d.dim() - 1)))
        directions.append(direction)
    return directions


def _symmetric_grid(span: float, points: int) -> np.ndarray:
    """``points`` values on [−span, span], mirror-symmetric bit for bit, with 0.0 at the centre."""
    if points < 3 or points % 2 == 0 or span <= 0:
        raise ValueError(f"need an odd points >= 3 and span > 0, got points={points}, span={span}")
    half = np.linspace(0.0, span, (points + 1) // 2)
    return np.concatenate([-half[:0:-1], half])


def landscape_1d(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Any],
    span: float = 1.0,
    points: int = 21,
    seed: int = 0,
) -> Landscape1D:
    """Loss along one filter-normalised direction d: ``L(w + α d)`` for α in [−span, span].

    Because every filter of d has the norm of its filter in w, α = 1 moves each filter by
    100 % of its own size; Li et al. plot α ∈ [−1, 1] (the default span). ``points`` must be
    odd so that the centre is a grid point; it is evaluated at w itself, so
    ``losses[points // 2]`` *is* L(w). Cost: ``points`` loss passes over the batches.
    """
    alphas = _symmetric_grid(span, points)
    with probe_session(model) as (params, origin):
        objective = Objective(model, loss_fn, batches, params)
        (direction,) = _directions(origin, 1, ProbeRandom(seed))
        losses = np.empty(points)
        for i, alpha in enumerate(alphas):
            set_perturbed(params, origin, *([(float(alpha), direction)] if alpha else []))
            losses[i] = objective.loss()
        return Landscape1D(alphas=alphas, losses=losses, center_loss=float(losses[points // 2]),
                           seed=seed, cost=objective.cost())


def landscape_2d(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Any],
    span: float = 1.0,
    points: int = 11,
    seed: int = 0,
) -> Landscape2D:
    """Loss on the plane of two filter-normalised directions: ``L(w + α d₁ + β d₂)``.

    The directions are independent Gaussian draws, not orthogonalised: in millions of
    dimensions they are nearly orthogonal already (Li et al. do the same). Cost: ``points²``
    loss passes over the batches.
    """
    grid = _symmetric_grid(span, points)
    with probe_session(model) as (params, origin):
        objective = Objective(model, loss_fn, batches, params)
        first, second = _directions(origin, 2, ProbeRandom(seed))
        losses = np.empty((points, points))
        for i, alpha in enumerate(grid):
            for j, beta in enumerate(grid):
                terms = [(float(a), d) for a, d in ((alpha, first), (beta, second)) if a]
                set_perturbed(params, origin, *terms)
                losses[i, j] = objective.loss()
        return Landscape2D(alphas=grid, betas=grid.copy(), losses=losses,
                           center_loss=float(losses[points // 2, points // 2]),
                           seed=seed, cost=objective.cost())


def plot_landscape_1d(
    result: Landscape1D, ax: Axes | None = None, label: str | None = None
) -> Figure:
    """Line plot of a 1-D slice. Pass ``ax`` to overlay several methods on one axes."""
    if ax is None:
        ax = Figure(figsize=(5, 3.5), layout="constrained").add_subplot()
    ax.plot(result.alphas, result.losses, marker=".", label=label)
    ax.axvline(0.0, color="0.8", linewidth=0.8, zorder=0)
    ax.set_xlabel("α (filter-normalised direction)")
    ax.set_ylabel("loss")
    if label is not None:
        ax.legend()
    return ax.figure


def plot_landscape_2d(result: Landscape2D, levels: int = 20, title: str | None = None) -> Figure:
    """Contour plot of a 2-D slice, the centre w marked."""
    fig = Figure(figsize=(4.5, 4), layout="constrained")
    ax = fig.add_subplot()
    # losses[i, j] is at (alphas[i], betas[j]); contour wants rows along y, so transpose.
    filled = ax.contourf(result.alphas, result.betas, result.losses.T, levels=levels)
    ax.contour(result.alphas, result.betas, result.losses.T, levels=levels,
               colors="k", linewidths=0.4)
    ax.plot([0.0], [0.0], marker="+", color="w", markersize=10)
    fig.colorbar(filled, ax=ax, label="loss")
    ax.set_xlabel("α (direction 1)")
    ax.set_ylabel("β (direction 2)")
    ax.set_aspect("equal")
    if title is not None:
        ax.set_title(title)
    return fig
