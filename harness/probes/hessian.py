"""Curvature of the loss at w from Hessian-vector products, never the Hessian itself.

A segmenter has millions of parameters, so H (n × n) can't be formed; ``H v`` costs about two
gradient evaluations (double backward, see :meth:`Objective.hvp`) and that is all these
estimators need:

- :func:`hessian_top_eigenvalues` — Lanczos (the top of the spectrum: the sharpest directions,
  what worst-case sharpness feels for small ρ);
- :func:`hessian_trace` — Hutchinson (the sum of the spectrum: what average sharpness feels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._objective import Cost, LossFn, Objective
from ._params import dot, flatten, probe_session, unflatten
from ._random import ProbeRandom
from ._stats import mean_and_stderr


@dataclass(frozen=True)
class EigenResult:
    """The ``k`` largest Hessian eigenvalues, descending, with Lanczos residual bounds.

    Each ``eigenvalues[i]`` is within ``residuals[i]`` of a true eigenvalue (and usually much
    closer: the error shrinks like residual²/gap). ``converged`` says the top-k residuals met
    ``tol`` before ``iterations`` reached ``iters``.
    """

    eigenvalues: tuple[float, ...]
    residuals: tuple[float, ...]
    iterations: int
    converged: bool
    cost: Cost


@dataclass(frozen=True)
class TraceResult:
    """Hutchinson estimate ``trace ± stderr`` of tr(H); ``values`` holds each zᵀHz."""

    trace: float
    stderr: float
    values: tuple[float, ...]
    cost: Cost


def hessian_top_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Any],
    k: int = 1,
    iters: int = 64,
    tol: float = 1e-4,
    seed: int = 0,
) -> EigenResult:
    """The ``k`` largest (algebraic, not absolute) eigenvalues of ∇²L(w) by Lanczos.

    Why Lanczos and not power iteration: power iteration finds the eigenvalue of largest
    *magnitude*, which away from a minimum is often a negative one, and it converges with the
    ratio λ₂/λ₁; Lanczos gets both ends of the spectrum from one Krylov space and its outliers
    converge in a few dozen products.

    The Krylov basis is fully re-orthogonalised (twice, "twice is enough"), which keeps the
    float32 arithmetic of a real model from producing spurious copies of converged
    eigenvalues. The price is memory: up to ``iters`` vectors the size of the trainable
    parameters. Stops when every top-k Ritz residual ``|β_j s_j|`` is at most ``tol`` times the
    largest Ritz value in magnitude (≈ ‖H‖), or after ``iters`` HVPs. If the Krylov space
    closes (an invariant subspace), it continues from a fresh random vector orthogonal to it.
    Like any single-vector Lanczos it finds one copy of a repeated eigenvalue per restart.

    Parameters are the model's trainable ones; ``seed`` fixes the start vector.
    """
    if iters < k:
        raise ValueError(f"iters ({iters}) must be at least k ({k})")
    with probe_session(model) as (params, _):
        size = sum(p.numel() for p in params)
        if k > size:
            raise ValueError(f"k ({k}) exceeds the {size} trainable parameters")
        objective = Objective(model, loss_fn, batches, params)
        rng = ProbeRandom(seed)

        def hessian_times(v: Tensor) -> Tensor:
            return flatten(objective.hvp(unflatten(v, params)))

        def fresh_direction(basis: list[Tensor]) -> Tensor:
            w = _orthogonalize(flatten(rng.normal(params)), basis)
            return w / w.norm()

        basis: list[Tensor] = []
        alphas: list[float] = []
        betas: list[float] = []  # betas[j] couples basis[j] and basis[j + 1]
        v = fresh_direction(basis)
        converged = False
        for _ in range(min(iters, size)):
            basis.append(v)
            w = hessian_times(v)
            alphas.append(float(torch.dot(w, v)))
            w = w - alphas[-1] * v - (betas[-1] * basis[-2] if betas else 0)
            w = _orthogonalize(w, basis)
            beta = float(w.norm())

            ritz, vectors = np.linalg.eigh(_tridiagonal(alphas, betas))
            top = np.argsort(ritz)[::-1][:k]
            residuals = np.abs(beta * vectors[-1, top])
            scale = float(np.abs(ritz).max())
            if len(basis) == size:  # the Krylov space is everything: Ritz values are exact
                residuals[:] = 0.0
                converged = True
                break
            # Rounding-level β means the basis spans an invariant subspace: its Ritz values are
            # exact but need not be the top ones, so look elsewhere before trusting them.
            closed = beta <= 100 * torch.finfo(w.dtype).eps * scale
            if len(top) == k and not closed and np.all(residuals <= tol * scale):
                converged = True
                break
            v, beta = (fresh_direction(basis), 0.0) if closed else (w / beta, beta)
            betas.append(beta)
        return EigenResult(
            eigenvalues=tuple(float(x) for x in ritz[top]),
            residuals=tuple(float(x) for x in residuals),
            iterations=len(basis),
            converged=converged,
            cost=objective.cost(),
        )


def _orthogonalize(w: Tensor, basis: list[Tensor]) -> Tensor:
    """Remove the components of ``w`` along an orthonormal basis (Gram–Schmidt, two passes)."""
    for _ in range(2):
        for b in basis:
            w = w - torch.dot(b, w) * b
    return w


def _tridiagonal(alphas: list[float], betas: list[float]) -> np.ndarray:
    m = len(alphas)
    off = betas[: m - 1]
    return np.diag(alphas) + np.diag(off, 1) + np.diag(off, -1)


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Any],
    samples: int = 32,
    seed: int = 0,
) -> TraceResult:
    """tr(∇²L(w)) by Hutchinson's estimator: the mean of ``zᵀHz`` over Rademacher ``z``.

    ``E[zᵀHz] = tr(H)`` for any z with independent ±1 entries, and Rademacher draws have the
    smallest variance among such vectors (``2 Σ_{i≠j} H_ij²``: only off-diagonal mass adds
    noise). The sample count is fixed rather than adaptive so the estimate is unbiased and its
    cost known in advance; ``stderr`` says how far to trust it. Cost: ``samples`` HVPs over the
    batches. Parameters are the model's trainable ones.
    """
    if samples < 2:
        raise ValueError(f"need samples >= 2 for a standard error, got {samples}")
    with probe_session(model) as (params, _):
        objective = Objective(model, loss_fn, batches, params)
        rng = ProbeRandom(seed)
        values = []
        for _ in range(samples):
            z = rng.rademacher(params)
            values.append(dot(z, objective.hvp(z)))
        trace, stderr = mean_and_stderr(values)
        return TraceResult(trace=trace, stderr=stderr, values=tuple(values), cost=objective.cost())
