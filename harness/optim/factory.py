"""Build an optimizer by method name, with free keywords (benches, tests, DDP checks).

Studies go through the typed path, :meth:`harness.optim.methods.Method.build`; both end here,
so there is one way a name becomes an optimizer. A sharpness-aware optimizer's
``step(closure)`` also handles ``every_k`` off-steps (it then calls no closure), so the loop
stays the same for every method::

    opt = build_optimizer(model.parameters(), "asam", lr=1e-4, rho=0.5, every_k=5)
    loss_fn(model, batch).backward()
    opt.step(lambda: loss_fn(model, batch).backward()) if needs_closure(opt) else opt.step()
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from harness.errors import HarnessError
from harness.optim.methods import METHODS
from harness.optim.sam import SAM

BASE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}


def _own_keywords(cls: type[SAM]) -> set[str]:
    """Keywords a sharpness-aware class (or a parent up to SAM) takes beyond the base's."""
    names: set[str] = set()
    for klass in cls.__mro__[:cls.__mro__.index(SAM) + 1]:
        names |= {name for name, p in inspect.signature(klass.__init__).parameters.items()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - {"self", "params", "base_optimizer", "max_grad_norm"}


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
        method: a plain base optimizer (``"adamw"``, ``"sgd"``) or a sharpness-aware method
            of :data:`harness.optim.methods.METHODS` (wrapping ``base``).
        base: the base optimizer a sharpness-aware method wraps: ``"adamw"`` or ``"sgd"``.
        max_grad_norm: sharpness-aware optimizers clip g_s between the second backward and
            the base step, a point the caller cannot reach. Plain optimizers have no such gap:
            the caller clips before ``step()``; the argument is accepted so one call site
            serves every method.
        **hparams: the base optimizer's keywords (``lr``, ``weight_decay``, ``betas``,
            ``momentum``, ...) plus the sharpness-aware class's own (``rho``, ``eta``,
            ``every_k``, ...).

    Raises:
        HarnessError: unknown method or base, or a hyper-parameter the method does not take
            (named in the message).
    """
    name = method.lower()
    entry = METHODS.get(name)
    wrapped = entry is not None and entry.sharpness_aware
    if name in BASE_OPTIMIZERS:
        base = name
    elif not wrapped:
        known = sorted(set(BASE_OPTIMIZERS) | set(METHODS))
        raise HarnessError(f"unknown optimizer method {method!r}; choose from {', '.join(known)}")
    if base not in BASE_OPTIMIZERS:
        raise HarnessError(f"unknown base optimizer {base!r}; choose from {', '.join(BASE_OPTIMIZERS)}")
    base_cls = BASE_OPTIMIZERS[base]

    own = _own_keywords(entry.optimizer) if wrapped else set()
    sam_hparams = {k: hparams.pop(k) for k in list(hparams) if k in own}
    accepted = set(inspect.signature(base_cls).parameters) - {"params"}
    unknown = sorted(set(hparams) - accepted)
    if unknown:
        raise HarnessError(f"unknown hyper-parameter(s) {unknown} for {method!r} "
                           f"(base optimizer {base!r})")
    if not wrapped:
        return base_cls(params, **hparams)
    return entry.optimizer(params, base_cls, max_grad_norm=max_grad_norm, **sam_hparams,
                           **hparams)


def needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """True if ``optimizer.step`` takes a closure that redoes forward and backward."""
    return isinstance(optimizer, SAM)
