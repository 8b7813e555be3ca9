"""The probed objective L(w) = mean over batches of ``loss_fn(model, batch)``, and its cost.

Every probe is built from three primitives — the loss, its gradient, and Hessian-vector
products — so they live here, together with the bookkeeping that lets a study report what a
probe cost next to what training cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ._params import Vector

LossFn = Callable[[nn.Module, Any], Tensor]


@dataclass(frozen=True)
class Cost:
    """What a probe spent. Counts are per *batch* pass, so they compare directly with training.

    - ``loss_evals``: forward-only passes (no graph kept).
    - ``grad_evals``: forward + backward passes, the unit one training step of AdamW costs.
    - ``hvp_evals``: forward + backward with ``create_graph`` + a second backward.

    :attr:`fb_equivalents` converts to forward-backward equivalents with the usual rough weights
    (a forward is about a third of a forward-backward, an HVP about two); ``seconds`` is the
    measured truth on the machine at hand. It is left out of ``==``, so two results compare
    equal when they computed the same numbers.
    """

    seconds: float = field(compare=False)
    loss_evals: int
    grad_evals: int
    hvp_evals: int

    @property
    def fb_equivalents(self) -> float:
        return self.loss_evals / 3 + self.grad_evals + 2 * self.hvp_evals


class Objective:
    """L(w) over fixed batches for the given parameters, counting every pass it makes.

    Losses are summed in float64 so that a sharpness, a small difference of two losses, is
    not swamped by the rounding of the sums; gradients and HVPs stay in the parameters' dtype.
    """

    def __init__(
        self, model: nn.Module, loss_fn: LossFn, batches: Sequence[Any], params: Sequence[Tensor]
    ) -> None:
        if len(batches) == 0:
            raise ValueError("probes need at least one batch")
        self.model, self.loss_fn, self.batches, self.params = model, loss_fn, batches, list(params)
        self._started = time.perf_counter()
        self._counts = {"loss_evals": 0, "grad_evals": 0, "hvp_evals": 0}

    def cost(self) -> Cost:
        return Cost(seconds=time.perf_counter() - self._started, **self._counts)

    def _batch_loss(self, batch: Any) -> Tensor:
        loss = self.loss_fn(self.model, batch)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}"
                             f"{tuple(loss.shape) if isinstance(loss, Tensor) else ''}")
        return loss.reshape(())

    def loss(self) -> float:
        """L(w) at the parameters' current values."""
        total = torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for batch in self.batches:
                total = total + self._batch_loss(batch).double().cpu()
                self._counts["loss_evals"] += 1
        return total.item() / len(self.batches)

    def loss_and_grad(self) -> tuple[float, Vector]:
        """L(w) and ∇L(w); parameters the loss does not reach get a zero gradient."""
        total = torch.zeros((), dtype=torch.float64)
        grad = [torch.zeros_like(p) for p in self.params]
        with torch.enable_grad():  # a caller may run the probe inside torch.no_grad()
            for batch in self.batches:
                loss = self._batch_loss(batch)
                parts = torch.autograd.grad(loss, self.params, allow_unused=True)
                _accumulate(grad, parts, 1 / len(self.batches))
                total = total + loss.detach().double().cpu()
                self._counts["grad_evals"] += 1
        return total.item() / len(self.batches), grad

    def hvp(self, vector: Sequence[Tensor]) -> Vector:
        """H v by double backward: ``H v = ∇⟨∇L(w), v⟩`` for the fixed vector v.

        The math attention kernel is forced because the fused scaled-dot-product kernels
        (flash, memory-efficient, and even the default CPU one in torch 2.14) implement no
        double backward. segment_anything itself uses explicit matmuls, but adapters and newer
        decoders may call ``F.scaled_dot_product_attention``.
        """
        out = [torch.zeros_like(p) for p in self.params]
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            for batch in self.batches:
                loss = self._batch_loss(batch)
                grad = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
                inner = sum(
                    (g * v).sum() for g, v in zip(grad, vector, strict=True) if g is not None
                )
                # A loss linear in w has a gradient that no longer depends on w: H v = 0.
                if isinstance(inner, Tensor) and inner.requires_grad:
                    parts = torch.autograd.grad(inner, self.params, allow_unused=True)
                    _accumulate(out, parts, 1 / len(self.batches))
                self._counts["hvp_evals"] += 1
        return out


def _accumulate(into: Vector, parts: Sequence[Tensor | None], weight: float) -> None:
    for acc, part in zip(into, parts, strict=True):
        if part is not None:
            acc.add_(part.detach(), alpha=weight)
