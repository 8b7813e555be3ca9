"""Probes of the loss geometry around trained weights: is the minimum flat, and how flat?

Every probe has the same shape::

    probe(model, loss_fn, batches, ...) -> small frozen dataclass with a ``cost`` field

- ``loss_fn(model, batch) -> scalar tensor``; the probed loss is L(w) = mean over ``batches``
  (fixed, so repeated probes measure the same function).
- w is the model's *trainable* parameters (``requires_grad=True``): frozen weights are part of
  the function, not of the landscape.
- During the probe the model is in eval mode (no dropout, BatchNorm on running statistics).
  Afterwards parameters, buffers, gradients (None stays None), every submodule's train/eval
  flag and the global RNG state are exactly as before — also when ``loss_fn`` raises.
- Randomised probes take a ``seed`` and draw from their own ``torch.Generator``: same seed,
  same device, same numbers.
- ``cost`` (:class:`Cost`) gives seconds and per-batch pass counts, with
  ``cost.fb_equivalents`` to set a probe's price beside a training step's.

Which probe answers what:

================================  =====================================================
:func:`sharpness`                 worst-case rise within a ρ-ball (what SAM / ASAM minimise)
:func:`average_sharpness`         expected rise under Gaussian noise (≈ σ² tr(H) / 2)
:func:`hessian_top_eigenvalues`   the sharpest curvatures (Lanczos)
:func:`hessian_trace`             total curvature (Hutchinson)
:func:`landscape_1d` / ``_2d``    pictures: loss along filter-normalised random directions
================================  =====================================================
"""

from ._objective import Cost
from .hessian import EigenResult, TraceResult, hessian_top_eigenvalues, hessian_trace
from .landscape import (
    Landscape1D,
    Landscape2D,
    filter_normalized_directions,
    landscape_1d,
    landscape_2d,
    plot_landscape_1d,
    plot_landscape_2d,
)
from .sharpness import AverageSharpnessResult, SharpnessResult, average_sharpness, sharpness

__all__ = [
    "AverageSharpnessResult",
    "Cost",
    "EigenResult",
    "Landscape1D",
    "Landscape2D",
    "SharpnessResult",
    "TraceResult",
    "average_sharpness",
    "filter_normalized_directions",
    "hessian_top_eigenvalues",
    "hessian_trace",
    "landscape_1d",
    "landscape_2d",
    "plot_landscape_1d",
    "plot_landscape_2d",
    "sharpness",
]
