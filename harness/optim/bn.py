"""Keep BatchNorm running statistics out of SAM's second (perturbed) forward pass.

In train mode a BatchNorm layer normalises with the batch's statistics *and* folds them into
``running_mean``/``running_var``. SAM runs two forwards per step; the second, at w + ε, is a
probe of a point the weights never actually take, so its statistics should not leak into the
running averages used at evaluation (davda54/sam does the same with momentum = 0).

We switch ``track_running_stats`` off instead of zeroing the momentum: the layer still
normalises with batch statistics in train mode, but leaves ``running_mean``, ``running_var`` and
``num_batches_tracked`` untouched (momentum = 0 would still count the batch, and would divide by
zero for cumulative averaging, ``momentum=None``). In eval mode nothing changes.

Usage::

    loss_fn(model, batch).backward()
    opt.first_step(zero_grad=True)
    with frozen_bn_stats(model):
        loss_fn(model, batch).backward()
    opt.second_step(zero_grad=True)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm  # BatchNorm1d/2d/3d, SyncBatchNorm, lazy ones

_FROZEN = "_harness_frozen_running_stats"  # marks layers we switched off, so we restore only those


def disable_running_stats(model: nn.Module) -> None:
    """Stop BatchNorm layers of ``model`` from updating their running statistics."""
    for module in model.modules():
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            module.track_running_stats = False
            setattr(module, _FROZEN, True)


def enable_running_stats(model: nn.Module) -> None:
    """Undo :func:`disable_running_stats` (layers that never tracked stats stay as they were)."""
    for module in model.modules():
        if getattr(module, _FROZEN, False):
            module.track_running_stats = True
            delattr(module, _FROZEN)


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager form: running statistics are frozen inside, restored on exit."""
    disable_running_stats(model)
    try:
        yield model
    finally:
        enable_running_stats(model)
