"""Build the optimizer a study names: ``adamw`` (or ``sgd``), ``sam``, ``asam``.

The training loop needs one extra fact beyond the optimizer itself: whether ``step`` wants a
closure for a second forward/backward. :func:`needs_closure` answers it. A sharpness-aware
optimizer's ``step(closure)`` also handles ``every_k`` off-steps (it then calls no closure), so
the loop stays the same for every variant::

    opt = build_optimizer(model.parameters(), "asam", lr=1e-4, rho=0.5, every_k=5)
    loss_fn(model, batch).backward()
    opt.step(lambda: loss_fn(model, batch).backward()) if needs_closure(opt) else opt.step()
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from harness.errors import HarnessError
from harness.optim.sam import ASAM, SAM

BASE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}
SHARPNESS_AWARE: dict[str, type[SAM]] = {"sam": SAM, "asam": ASAM}
METHODS = tuple(BASE_OPTIMIZERS) + tuple(SHARPNESS_AWARE)

# Hyper-parameters that belong to SAM/ASAM rather than to the base optimizer.
_SAM_HPARAMS = ("rho", "eta", "adaptive_1d", "every_k", "off_step", "alpha")


def build_optimizer(
    params,
    method: str,
    *,
    base: str = "adamw",
    max_grad_norm: float | None = None,
    **hparams: Any,
) -> torch.optim.Optimizer:
    """Return the optimizer for ``method`` over ``params``.

    Args:
        method: ``"adamw"``/``"sgd"`` (plain) or ``"sam"``/``"asam"`` (wrapping ``base``).
        base: the base optimizer of ``sam``/``asam``: ``"adamw"`` or ``"sgd"``.
        max_grad_norm: SAM/ASAM clip g_s between the second backward and the base step, a
            point the caller cannot reach. Plain optimizers have no such gap: the caller clips
            before ``step()``; the argument is accepted so one call site serves every method.
        **hparams: the base optimizer's keywords (``lr``, ``weight_decay``, ``betas``,
            ``momentum``, ...) plus, for sam/asam, ``rho``, ``eta``, ``adaptive_1d``,
            ``every_k``, ``off_step``, ``alpha`` (see :class:`harness.optim.SAM`).

    Raises:
        HarnessError: unknown method or base, or a hyper-parameter the method does not take
            (named in the message).
    """
    name = method.lower()
    if name in BASE_OPTIMIZERS:
        base = name
    elif name not in SHARPNESS_AWARE:
        raise HarnessError(f"unknown optimizer method {method!r}; choose from {', '.join(METHODS)}")
    if base not in BASE_OPTIMIZERS:
        raise HarnessError(f"unknown base optimizer {base!r}; choose from {', '.join(BASE_OPTIMIZERS)}")
    base_cls = BASE_OPTIMIZERS[base]

    sam_hparams = {k: hparams.pop(k) for k in _SAM_HPARAMS if k in hparams}
    accepted = set(inspect.signature(base_cls).parameters) - {"params"}
    unknown = sorted(set(hparams) - accepted)
    if unknown:
        raise HarnessError(f"unknown hyper-parameter(s) {unknown} for base optimizer {base!r}")

    if name in BASE_OPTIMIZERS:
        if sam_hparams:
            raise HarnessError(
                f"hyper-parameter(s) {sorted(sam_hparams)} only apply to sam/asam, not {method!r}"
            )
        return base_cls(params, **hparams)
    return SHARPNESS_AWARE[name](
        params, base_cls, max_grad_norm=max_grad_norm, **sam_hparams, **hparams
    )


def needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """True if ``optimizer.step`` takes a closure that redoes forward and backward (SAM/ASAM)."""
    return isinstance(optimizer, SAM)
