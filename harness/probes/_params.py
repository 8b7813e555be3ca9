"""Which parameters a probe looks at, how it leaves the model untouched, and vector arithmetic.

Probes treat the *trainable* parameters (``requires_grad=True``) as the point ``w`` in weight
space: frozen weights (an image encoder held fixed, the base weights under LoRA) are part of
the function, not of the landscape being measured. That matches what an optimizer sees.

A "vector" here is a list of tensors shaped like those parameters (one entry per parameter), so
nothing has to be flattened into one huge buffer except where an algorithm needs a matrix
(Lanczos, see :func:`flatten`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

Vector = list[Tensor]


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters probes perturb and differentiate: those with ``requires_grad=True``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameters with requires_grad=True to probe")
    return params


# --------------------------------------------------------------------------- snapshot / restore


@dataclass
class ModelSnapshot:
    """Everything a probe may disturb, copied so it can be put back bit for bit.

    Only trainable parameters are copied (probes never write frozen ones, and copying a frozen
    ViT-H would double memory for nothing). Gradients are copied too: probes differentiate with
    ``torch.autograd.grad`` and never write ``.grad``, but a ``loss_fn`` that calls
    ``backward()`` would, and the contract promises untouched grads regardless.
    """

    params: list[tuple[Tensor, Tensor]]
    grads: list[tuple[Tensor, Tensor | None, Tensor | None]]
    buffers: list[tuple[Tensor, Tensor]]
    modes: list[tuple[nn.Module, bool]]

    @classmethod
    def capture(cls, model: nn.Module) -> ModelSnapshot:
        with torch.no_grad():
            return cls(
                params=[(p, p.detach().clone()) for p in trainable_parameters(model)],
                grads=[
                    (p, p.grad, None if p.grad is None else p.grad.detach().clone())
                    for p in model.parameters()
                ],
                buffers=[(b, b.detach().clone()) for b in model.buffers()],
                # Per module, not just the root: a caller may have frozen BatchNorm inside a
                # model in train mode, and model.train(flag) would flatten that to one value.
                modes=[(m, m.training) for m in model.modules()],
            )

    def restore(self) -> None:
        """Write the saved state back in place: tensor identities survive, optimizers stay valid."""
        with torch.no_grad():
            for p, saved in self.params:
                p.copy_(saved)
            for b, saved in self.buffers:
                b.copy_(saved)
            for p, grad, saved in self.grads:
                if grad is not None:
                    grad.copy_(saved)
                p.grad = grad
        for module, training in self.modes:
            module.training = training


@contextlib.contextmanager
def probe_session(model: nn.Module) -> Iterator[tuple[list[nn.Parameter], Vector]]:
    """Run a probe: eval mode inside, the model and global RNG exactly as found afterwards.

    Yields the trainable parameters and their saved values w (the probe's centre; read-only,
    it is also what gets restored, so no second copy of the weights is needed). The global RNG is forked (CPU and every accelerator the
    model lives on) so that probes, which draw from their own ``torch.Generator``, stay
    invisible to the caller even if ``loss_fn`` itself happens to draw random numbers.
    """
    snapshot = ModelSnapshot.capture(model)
    accelerators: dict[str, set[int]] = {}
    for t in [*model.parameters(), *model.buffers()]:
        if t.device.type not in ("cpu", "meta"):
            accelerators.setdefault(t.device.type, set()).add(t.device.index or 0)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=[]))  # the CPU state is always forked
        for device_type, indices in accelerators.items():
            stack.enter_context(
                torch.random.fork_rng(devices=sorted(indices), device_type=device_type)
            )
        try:
            model.eval()
            yield [p for p, _ in snapshot.params], [saved for _, saved in snapshot.params]
        finally:
            snapshot.restore()


def set_perturbed(params: Sequence[Tensor], origin: Vector, *terms: tuple[float, Vector]) -> None:
    """Set ``params = origin + sum(alpha * direction)`` in place.

    Always rebuilt from the saved origin rather than stepped incrementally, so that no rounding
    drift accumulates over a grid of hundreds of points.
    """
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(origin[i])
            for alpha, direction in terms:
                p.add_(direction[i], alpha=alpha)


# --------------------------------------------------------------------------- vector arithmetic


def dot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> float:
    """Inner product of two vectors, accumulated in float64."""
    return float(sum((x.double() * y.double()).sum() for x, y in zip(xs, ys, strict=True)))


def norm(xs: Sequence[Tensor]) -> float:
    """Euclidean norm of a vector, accumulated in float64."""
    return dot(xs, xs) ** 0.5


def scale(xs: Sequence[Tensor], factors: Sequence[Tensor] | None) -> Vector:
    """Element-wise product ``T ⊙ x``; ``factors=None`` stands for T = 1 (plain SAM)."""
    if factors is None:
        return list(xs)
    return [x * t for x, t in zip(xs, factors, strict=True)]


def adaptive_scale(origin: Sequence[Tensor], eta: float) -> Vector:
    """ASAM's T_w = |w| + η, element-wise (Kwon et al. 2021)."""
    return [w.abs() + eta for w in origin]


def flatten(xs: Sequence[Tensor]) -> Tensor:
    """Concatenate a vector into one 1-D tensor (dtype promoted across entries)."""
    dtype = xs[0].dtype
    for x in xs[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    return torch.cat([x.reshape(-1).to(dtype) for x in xs])


def unflatten(flat: Tensor, like: Sequence[Tensor]) -> Vector:
    """Split a 1-D tensor back into tensors shaped (and typed) like ``like``."""
    pieces = torch.split(flat, [t.numel() for t in like])
    return [piece.view(t.shape).to(t.dtype) for piece, t in zip(pieces, like, strict=True)]
