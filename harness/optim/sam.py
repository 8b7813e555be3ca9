"""Sharpness-Aware Minimization (SAM) and Adaptive SAM (ASAM) around any base optimizer.

SAM (Foret et al., ICLR 2021) minimises the loss at the worst nearby point instead of at w.
One step, with g = ∇L(w):

    ε = ρ T² g / ‖T g‖₂        (SAM: T = 1; ASAM, Kwon et al. 2021: T = |w| + η element-wise)
    g_s = ∇L(w + ε)             (a second forward/backward at the perturbed weights)
    w ← base_step(w, g_s)       (e.g. AdamW, whose decoupled weight decay then acts on w)

‖T g‖ is one norm over *all* parameters of all groups; ρ and η may differ per param group.
ASAM's T makes ε follow the scale of each weight, so rescaling a ReLU layer by a and the next by
1/a (which leaves the network's function unchanged) no longer changes the sharpness it sees.

Calling convention (the one of davda54/sam, so code written for it works here)::

    opt = ASAM(model.parameters(), torch.optim.AdamW, rho=0.5, eta=0.01, lr=1e-4)

    loss_fn(model, batch).backward()          # 1st pass: g at w  (you always do this one)
    opt.first_step(zero_grad=True)            # w ← w + ε
    loss_fn(model, batch).backward()          # 2nd pass: g_s at w + ε
    opt.second_step(zero_grad=True)           # w restored, then the base step with g_s

or, equivalently, after the first backward: ``opt.step(closure)`` where ``closure`` runs the
forward and ``backward()`` (without zeroing gradients) and returns the loss; it is called once,
for the second pass, and only on steps that ascend (see ``every_k`` below).

Details that matter in real training:

* **Restoring w.** ``first_step`` keeps a copy of w and ``second_step`` copies it back, so w is
  bit-identical to before the ascent (subtracting ε again would not be, in floating point).
  With ρ = 0 the optimizer therefore reproduces its base optimizer exactly.
* **Zero gradient.** A tiny constant (1e-12) in the denominator turns ‖T g‖ = 0 into ε = 0.
* **Mixed precision.** bf16 autocast needs nothing special. With fp16 and a
  ``torch.amp.GradScaler``, scale the loss in both passes and pass the scaler to
  ``first_step``/``second_step``/``step``; call ``scaler.update()`` yourself afterwards, as in any
  AMP loop. The first pass is unscaled before the norm; if it overflowed, nothing moves (no
  ascent, no base step) and ``update()`` backs the scale off; an overflow in the second pass is
  caught by ``scaler.step`` on the base optimizer in the usual way, with w already restored.
* **Gradient clipping** (``max_grad_norm``) applies to g_s, after unscaling and just before the
  base step — the only place a caller cannot reach between the two passes.
* **DDP.** Run both backward passes normally: DDP all-reduces gradients in each, so ε is built
  from the global gradient and every rank takes the same step. Do *not* wrap the first pass in
  ``model.no_sync()``: ranks would still agree on w, but each would ascend along its own local
  gradient, which is a different method (m-sharpness), not SAM on the global batch.
* **BatchNorm.** Keep running statistics out of the second pass with
  :func:`harness.optim.bn.frozen_bn_stats`.
* **LR schedulers** may wrap this optimizer or ``opt.base_optimizer``: both share one list of
  param groups. Wrapping ``base_optimizer`` avoids torch's "scheduler.step() before
  optimizer.step()" warning when you call ``first_step``/``second_step`` rather than ``step``.
* **Checkpoints.** ``state_dict()`` holds the base optimizer's state, the step counter and any
  LookSAM directions, so resuming gives bit-identical next steps.

Cheaper variants (``every_k``, ``off_step``) are explained in :mod:`harness.optim.efficient`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from harness.optim.efficient import OFF_STEP_MODES, add_reused_component, orthogonal_direction_
from harness.optim.foreach import TINY, combine_norms, norm

_GROUP_KEYS = ("rho", "adaptive", "eta", "adaptive_1d")


@dataclass
class _Bucket:
    """Parameters of one param group that share device, dtype and whether T = |w| + η."""

    group: dict[str, Any]
    adaptive: bool
    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)


@dataclass
class _Ascent:
    """What ``first_step`` leaves for ``second_step`` on a step that ascended.

    Only parameters, never the first pass's gradient tensors: holding those would keep a
    parameter-sized buffer alive through the second backward after ``zero_grad()``.
    """

    params: list[list[Tensor]]  # the parameters that moved, per bucket
    backups: list[list[Tensor]]  # their values at w
    first_grads: list[list[Tensor]] | None  # g at w, kept only for LookSAM
    found_inf: bool = False


def _is_scaling(grad_scaler: torch.amp.GradScaler | None) -> bool:
    return grad_scaler is not None and grad_scaler.is_enabled()


def params_with_grad(param_groups: list[dict[str, Any]]) -> list[Tensor]:
    return [p for group in param_groups for p in group["params"] if p.grad is not None]


class SAM(torch.optim.Optimizer):
    """Sharpness-Aware Minimization wrapping ``base_optimizer`` (see the module docstring).

    Args:
        params: parameters or param groups; groups may override ``rho``, ``eta``, ``adaptive``,
            ``adaptive_1d`` and any base-optimizer hyper-parameter.
        base_optimizer: an optimizer *class* (or factory), e.g. ``torch.optim.AdamW``; it is
            built on the same param groups with ``**base_kwargs``.
        rho: radius ρ of the neighbourhood.
        adaptive: use ASAM's T = |w| + η (prefer the :class:`ASAM` class, which has ASAM's
            defaults).
        eta: η in T = |w| + η; keeps T > 0 for zero weights.
        adaptive_1d: if False, 1-D (and 0-D) tensors — biases, norm gains — keep T = 1 while
            matrices and kernels get T = |w| + η. The default (True) scales every parameter.
        every_k: ascend only on steps 0, k, 2k, ...; ``1`` is plain SAM/ASAM.
        off_step: what the other steps do: ``"skip"`` (base step on g) or ``"looksam"``
            (reuse the stored sharpness direction; see :mod:`harness.optim.efficient`).
        alpha: LookSAM's α.
        max_grad_norm: clip the global norm of g_s to this before the base step (None: off).
        **base_kwargs: passed to ``base_optimizer`` (``lr``, ``weight_decay``, ...).
    """

    def __init__(
        self,
        params,
        base_optimizer: Callable[..., torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.0,
        *,
        adaptive_1d: bool = True,
        every_k: int = 1,
        off_step: str = "skip",
        alpha: float = 0.7,
        max_grad_norm: float | None = None,
        **base_kwargs: Any,
    ) -> None:
        if isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError(
                "base_optimizer must be an optimizer class such as torch.optim.AdamW, "
                "not an optimizer instance"
            )
        if rho < 0 or eta < 0 or alpha < 0:
            raise ValueError(f"rho, eta and alpha must be >= 0, got {rho=}, {eta=}, {alpha=}")
        if not isinstance(every_k, int) or every_k < 1:
            raise ValueError(f"every_k must be a positive integer, got {every_k!r}")
        if off_step not in OFF_STEP_MODES:
            raise ValueError(f"off_step must be one of {OFF_STEP_MODES}, got {off_step!r}")

        defaults = dict(rho=rho, adaptive=adaptive, eta=eta, adaptive_1d=adaptive_1d, **base_kwargs)
        super().__init__(params, defaults)
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        # One list of group dicts for both optimizers, so changing opt.param_groups[i]["lr"]
        # (as LR schedulers do) changes what the base optimizer uses.
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)

        self.every_k = every_k
        self.off_step = off_step
        self.alpha = alpha
        self.max_grad_norm = max_grad_norm
        self._step_index = 0  # completed steps, ascending or not
        self._ascent: _Ascent | None = None

    # -- schedule ---------------------------------------------------------------------------

    def ascends_this_step(self) -> bool:
        """Whether the coming step perturbs the weights, i.e. needs a second forward/backward."""
        return self._step_index % self.every_k == 0

    # -- the two halves ---------------------------------------------------------------------

    @torch.no_grad()
    def first_step(
        self, zero_grad: bool = False, grad_scaler: torch.amp.GradScaler | None = None
    ) -> None:
        """Move w to w + ε using the gradient of the first backward pass.

        On steps that do not ascend (``every_k > 1``) this only zeroes gradients if asked, so a
        loop that always calls first_step / backward / second_step stays correct (if wasteful).
        """
        if self._ascent is not None:
            raise RuntimeError("first_step() called twice without second_step() in between")
        if self.ascends_this_step():
            self._ascent = self._ascend(grad_scaler)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(
        self,
        zero_grad: bool = False,
        grad_scaler: torch.amp.GradScaler | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        """Restore w and take the base optimizer's step with the current gradient.

        ``max_grad_norm`` overrides the constructor's value for this step.
        """
        ascent, self._ascent = self._ascent, None
        if ascent is None and self.ascends_this_step():
            raise RuntimeError("second_step() on an ascending step needs first_step() first")
        if ascent is None or not ascent.found_inf:
            self._descend(ascent, grad_scaler, max_grad_norm)
        # else: the scaler recorded the overflow in unscale_(self); its update() backs off.
        self._step_index += 1
        if zero_grad:
            self.zero_grad()

    def step(
        self,
        closure: Callable[[], Tensor] | None = None,
        grad_scaler: torch.amp.GradScaler | None = None,
        max_grad_norm: float | None = None,
    ) -> Tensor | None:
        """One full step, called after the caller's first backward pass.

        ``closure`` re-runs forward and backward (without zeroing gradients) and returns the
        loss. It is called once, at w + ε, on ascending steps only; off-steps use the gradient
        already present. Returns the closure's loss (the loss at w + ε), or None when it was
        not called.
        """
        if not self.ascends_this_step():
            self.second_step(grad_scaler=grad_scaler, max_grad_norm=max_grad_norm)
            return None
        if closure is None:
            raise RuntimeError(
                "SAM/ASAM need a closure that recomputes the loss and calls backward(); "
                "do the first backward yourself before step(closure)"
            )
        self.first_step(zero_grad=True, grad_scaler=grad_scaler)
        loss = None
        if not self._ascent.found_inf:
            with torch.enable_grad():
                loss = closure()
        self.second_step(grad_scaler=grad_scaler, max_grad_norm=max_grad_norm)
        return loss

    # -- internals --------------------------------------------------------------------------

    def _buckets(self) -> list[_Bucket]:
        """Sort parameters with a gradient into lists the fused kernels can take whole."""
        by_key: dict[tuple, _Bucket] = {}
        for index, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p.grad is None:
                    continue
                adaptive = group["adaptive"] and (group["adaptive_1d"] or p.ndim > 1)
                key = (index, adaptive, p.device, p.dtype)
                if key not in by_key:
                    by_key[key] = _Bucket(group, adaptive)
                by_key[key].params.append(p)
                by_key[key].grads.append(p.grad)
        return list(by_key.values())

    def _ascend(self, grad_scaler: torch.amp.GradScaler | None) -> _Ascent:
        if _is_scaling(grad_scaler):
            grad_scaler.unscale_(self)
        buckets = self._buckets()
        transforms, scaled_grads = [], []  # T and T·g per bucket (None and g where T = 1)
        for b in buckets:
            if b.adaptive:
                t = torch._foreach_abs(b.params)
                torch._foreach_add_(t, b.group["eta"])
                transforms.append(t)
                scaled_grads.append(torch._foreach_mul(t, b.grads))
            else:
                transforms.append(None)
                scaled_grads.append(b.grads)
        grad_norm = combine_norms([norm(tg) for tg in scaled_grads])
        # Only with a scaler do we pay for this device sync: it is what lets a step be skipped.
        if _is_scaling(grad_scaler) and not torch.isfinite(grad_norm):
            return _Ascent([], [], None, found_inf=True)

        first_grads = None
        if self.off_step == "looksam":
            # A copy, not the tensors themselves: the caller may zero them in place, and under
            # DDP with gradient_as_bucket_view the next backward writes into the same storage.
            first_grads = [torch._foreach_clone(b.grads) for b in buckets]
        backups = []
        for b, t, tg in zip(buckets, transforms, scaled_grads):
            scale = (b.group["rho"] / (grad_norm + TINY)).to(b.params[0].device)
            backups.append(torch._foreach_clone(b.params))
            if t is None:
                torch._foreach_add_(b.params, torch._foreach_mul(b.grads, scale))
            else:
                # ε = (T g)·(T ρ/‖Tg‖): scaling T in place saves allocating T² g.
                torch._foreach_mul_(t, scale)
                torch._foreach_addcmul_(b.params, tg, t)
        return _Ascent([b.params for b in buckets], backups, first_grads)

    def _descend(
        self,
        ascent: _Ascent | None,
        grad_scaler: torch.amp.GradScaler | None,
        max_grad_norm: float | None,
    ) -> None:
        if ascent is not None:
            for params, backup in zip(ascent.params, ascent.backups):
                torch._foreach_copy_(params, backup)
            ascent.backups.clear()  # free them before LookSAM and the base step allocate
        scaling = _is_scaling(grad_scaler)
        if scaling:
            grad_scaler.unscale_(self.base_optimizer)
        if self.off_step == "looksam":
            if ascent is not None:
                self._store_direction(ascent, check_finite=scaling)
            else:
                self._reuse_direction()
        max_norm = self.max_grad_norm if max_grad_norm is None else max_grad_norm
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_(params_with_grad(self.param_groups), max_norm)
        if scaling:
            grad_scaler.step(self.base_optimizer)  # skips the step if g_s overflowed
        else:
            self.base_optimizer.step()

    def _store_direction(self, ascent: _Ascent, check_finite: bool) -> None:
        if all(group["rho"] == 0 for group in self.param_groups):
            # g_s = g exactly, and g_v would be rounding noise blown up to unit length.
            return
        second_grads = []
        for params in ascent.params:
            if any(p.grad is None for p in params):
                raise RuntimeError("a parameter had a gradient in the first pass but not the second")
            second_grads.append([p.grad for p in params])
        directions = ascent.first_grads  # our copy of g, turned into the direction in place
        v_norm = orthogonal_direction_(directions, second_grads)
        if check_finite and not torch.isfinite(v_norm):
            return  # g_s overflowed; the scaler skips this step, keep the previous direction
        for params, unit in zip(ascent.params, directions):
            for p, u in zip(params, unit):
                self.state[p]["looksam_direction"] = u

    def _reuse_direction(self) -> None:
        buckets = self._buckets()
        directions = [[self._direction(p) for p in b.params] for b in buckets]
        add_reused_component([b.grads for b in buckets], directions, self.alpha)

    def _direction(self, p: Tensor) -> Tensor:
        state = self.state[p]
        if "looksam_direction" not in state:  # no ascent has seen p yet: reuse nothing
            state["looksam_direction"] = torch.zeros_like(p)
        return state["looksam_direction"]

    # -- plumbing ---------------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "base_optimizer" not in self.__dict__:  # called from Optimizer.__init__
            super().add_param_group(param_group)
            return
        for key in _GROUP_KEYS:
            param_group.setdefault(key, self.defaults[key])
        self.base_optimizer.add_param_group(param_group)  # appends to the shared list

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()  # our per-parameter state (LookSAM) and the groups
        state["base_optimizer"] = self.base_optimizer.state_dict()
        state["sam"] = {"step_index": self._step_index}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._ascent is not None:
            raise RuntimeError("cannot load a state dict between first_step() and second_step()")
        super().load_state_dict(state_dict)
        self.base_optimizer.load_state_dict(state_dict["base_optimizer"])
        # Both loads built fresh group dicts; share the base optimizer's again.
        self.param_groups = self.base_optimizer.param_groups
        self._step_index = state_dict["sam"]["step_index"]


class ASAM(SAM):
    """Adaptive SAM (Kwon et al., ICML 2021): :class:`SAM` with T = |w| + η and its defaults.

    ``ASAM(params, torch.optim.AdamW, rho=0.5, eta=0.01, lr=...)``; every keyword of
    :class:`SAM` except ``adaptive`` is accepted (``adaptive_1d``, ``every_k``, ...).
    """

    def __init__(
        self,
        params,
        base_optimizer: Callable[..., torch.optim.Optimizer],
        rho: float = 0.5,
        eta: float = 0.01,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, rho=rho, adaptive=True, eta=eta, **kwargs)
