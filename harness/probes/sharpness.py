"""Sharpness: how much the loss can rise within a small neighbourhood of the weights.

Two notions, matching the two families in the literature:

- **worst-case** (:func:`sharpness`) — ``max L(w + ε) − L(w)`` over ``‖ε‖ ≤ ρ``; the quantity
  SAM minimises (Foret et al. 2021). The *adaptive* variant measures the ball in the
  coordinates ``ε = T u`` with ``T = |w| + η`` (ASAM, Kwon et al. 2021), i.e. ``‖T⁻¹ε‖ ≤ ρ``,
  which makes it blind to the weight rescalings that leave a ReLU network's function unchanged.
- **average-case** (:func:`average_sharpness`) — ``E[L(w + δ)] − L(w)`` for Gaussian ``δ``;
  for small σ it is ``σ²·tr(H)/2``, so it tracks the Hessian trace rather than its top
  eigenvalue.

Both are differences of two nearby losses, computed in float64 (see :class:`Objective`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ._objective import Cost, LossFn, Objective
from ._params import Vector, adaptive_scale, norm, probe_session, scale, set_perturbed
from ._random import ProbeRandom
from ._stats import mean_and_stderr


@dataclass(frozen=True)
class SharpnessResult:
    """Worst-case sharpness ``perturbed_loss − loss`` found at perturbation ``ε``.

    ``epsilon_norm`` is ‖ε‖ in weight space (for the adaptive variant it is ‖T⁻¹ε‖ = ρ that is
    fixed, not ‖ε‖); ``best_step`` is the ascent iterate (1-based) that gave the maximum.
    """

    sharpness: float
    loss: float
    perturbed_loss: float
    epsilon_norm: float
    best_step: int
    rho: float
    adaptive: bool
    eta: float
    steps: int
    cost: Cost


@dataclass(frozen=True)
class AverageSharpnessResult:
    """Monte-Carlo estimate ``mean ± stderr`` of ``E[L(w + δ)] − L(w)``; ``values`` per draw."""

    mean: float
    stderr: float
    loss: float
    values: tuple[float, ...]
    sigma: float
    adaptive: bool
    eta: float
    antithetic: bool
    cost: Cost


def sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Any],
    rho: float,
    adaptive: bool = False,
    eta: float = 0.0,
    steps: int = 1,
    step_size: float | None = None,
) -> SharpnessResult:
    """Worst-case sharpness ``max_{‖T⁻¹ε‖ ≤ ρ} L(w + ε) − L(w)`` (T = 1 unless ``adaptive``).

    ``steps=1`` is exactly the perturbation SAM / ASAM train with — the maximiser of the
    first-order Taylor model: ``ε = ρ g/‖g‖``, adaptive ``ε = ρ T² g/‖T g‖`` — so its value is
    a lower bound on the true maximum and a cheap, widely reported estimate.

    ``steps > 1`` refines that by projected normalised gradient ascent in ``u = T⁻¹ε``: start at
    the one-step point, then ``u ← Π_ρ(u + α T g/‖T g‖)`` with ``α = step_size`` (default ρ).
    Why ρ and not the ``2ρ/steps`` common in adversarial training: the maximum usually lies on
    the sphere, where the gradient points mostly outwards and projection cancels most of a
    step; only its tangential part, ~α·sin(angle), moves the iterate, so small steps crawl
    (on a convex quadratic 20 steps of 2ρ/steps still miss the maximum by 0.6 %, while α = ρ
    is within 1e-9). Pass ``step_size=2 * rho / steps`` to match those papers. The best
    iterate is kept, so the result never falls below the one-step value. Cost: ``steps``
    gradient passes plus one loss pass over the batches. A zero (scaled) gradient gives
    ε = 0: the probe cannot see beyond first order.

    Parameters are the model's trainable ones; ``T`` is fixed at the centre ``w``.
    """
    if rho <= 0 or steps < 1:
        raise ValueError(f"need rho > 0 and steps >= 1, got rho={rho}, steps={steps}")
    step_size = rho if step_size is None else step_size
    if step_size <= 0:
        raise ValueError(f"need step_size > 0, got {step_size}")
    with probe_session(model) as (params, origin):
        objective = Objective(model, loss_fn, batches, params)
        t = adaptive_scale(origin, eta) if adaptive else None
        center_loss, grad = objective.loss_and_grad()

        u = _ascent_direction(grad, t, rho)  # the one-step (SAM / ASAM) point
        best = (-math.inf, 0.0, 0)  # (perturbed loss, ‖ε‖, step)
        for step in range(1, steps + 1):
            epsilon = scale(u, t)
            set_perturbed(params, origin, (1.0, epsilon))
            if step == steps:  # the last iterate needs no gradient
                loss = objective.loss()
            else:
                loss, grad = objective.loss_and_grad()
                ascent = _ascent_direction(grad, t, step_size)
                u = _project([a + b for a, b in zip(u, ascent, strict=True)], rho)
            if loss > best[0]:
                best = (loss, norm(epsilon), step)
        return SharpnessResult(
            sharpness=best[0] - center_loss, loss=center_loss, perturbed_loss=best[0],
            epsilon_norm=best[1], best_step=best[2], rho=rho, adaptive=adaptive, eta=eta,
            steps=steps, cost=objective.cost(),
        )


def _ascent_direction(grad: Vector, t: Vector | None, length: float) -> Vector:
    """``length · T g / ‖T g‖`` in u-coordinates (zero if the scaled gradient vanishes)."""
    tg = scale(grad, t)
    size = norm(tg)
    return [x * (length / size) if size > 0 else x * 0 for x in tg]


def _project(u: Vector, rho: float) -> Vector:
    """Euclidean projection onto the ball ``‖u‖ ≤ ρ``."""
    size = norm(u)
    return u if size <= rho else [x * (rho / size) for x in u]


def average_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Any],
    sigma: float,
    adaptive: bool = False,
    eta: float = 0.0,
    samples: int = 32,
    seed: int = 0,
    antithetic: bool = True,
) -> AverageSharpnessResult:
    """Average-case sharpness ``E[L(w + δ)] − L(w)``, ``δ ~ N(0, σ²I)`` (adaptive: ``δ = σ T z``).

    With ``antithetic=True`` (default) each draw ``z`` is used as a pair ``±δ`` and contributes
    ``(L(w+δ) + L(w−δ))/2 − L(w)``: the first-order term ``g·δ``, pure noise with mean zero and
    usually the largest source of variance, then cancels exactly. The draws are independent,
    so ``stderr = std(values, ddof=1)/√samples``. Cost: ``samples`` (×2 if antithetic) loss
    passes over the batches.

    ``adaptive`` scales the noise element-wise by ``T = |w| + η`` (η = 0 gives the ``|w|``
    scaling of adaptive average sharpness), making the measure rescaling-invariant like ASAM.
    """
    if sigma <= 0 or samples < 2:
        raise ValueError(f"need sigma > 0 and samples >= 2, got sigma={sigma}, samples={samples}")
    with probe_session(model) as (params, origin):
        objective = Objective(model, loss_fn, batches, params)
        t = adaptive_scale(origin, eta) if adaptive else None
        rng = ProbeRandom(seed)
        center_loss = objective.loss()
        values = []
        for _ in range(samples):
            delta = scale(rng.normal(origin), t)
            signs = (1.0, -1.0) if antithetic else (1.0,)
            losses = []
            for sign in signs:
                set_perturbed(params, origin, (sign * sigma, delta))
                losses.append(objective.loss())
            values.append(sum(losses) / len(losses) - center_loss)
        mean, stderr = mean_and_stderr(values)
        return AverageSharpnessResult(
            mean=mean, stderr=stderr, loss=center_loss, values=tuple(values), sigma=sigma,
            adaptive=adaptive, eta=eta, antithetic=antithetic, cost=objective.cost(),
        )

