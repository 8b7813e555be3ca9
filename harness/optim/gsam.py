"""Surrogate Gap Guided SAM (GSAM; Zhuang et al., ICLR 2022) on top of :class:`SAM`.

SAM minimises the perturbed loss f_p(w) = L(w + ε), a stand-in for the worst loss within radius
ρ. A low f_p alone does not mean a flat minimum: a sharp minimum with a lower L can have the same
f_p as a flat one. GSAM also minimises the *surrogate gap* h = f_p − L, which near a minimum is
≈ ρ²λ_max(∇²L)/2, i.e. a measure of sharpness itself. It does so without slowing SAM's descent of
f_p. With g = ∇L(w) and g_s = ∇L(w + ε) from SAM's two passes:

    g_⊥ = g − (g·g_s / ‖g_s‖²) g_s      (the part of g orthogonal to g_s)
    d   = g_s − α g_⊥                   w ← base_step(w, d)

∇h = g_s − g, and its component orthogonal to g_s is −g_⊥; so stepping along −d is SAM's step
plus a step of size α down the gap, restricted to directions orthogonal to g_s. To first order
the decrease of f_p is SAM's (d·g_s = ‖g_s‖²), while h decreases. α = 0 is SAM; here bit for bit,
since no copy of g is then kept. Dot products and norms are global over all parameters of all
groups, as SAM's ‖T g‖ is; with ``adaptive=True`` only the ascent changes (ASAM's ε = ρT²g/‖Tg‖),
the decomposition stays Euclidean.

**ρ following the learning rate** (``rho_min``, off by default). The paper decays ρ together with
the learning rate, ρ_t = ρ_min + (ρ − ρ_min)(lr_t − lr_min)/(lr_max − lr_min): a radius that
stays large while the steps get small keeps the optimizer probing a neighbourhood it can no
longer move across. Here lr_min = 0 and lr_max is each group's lr when the optimizer is built,
stored in the group as ``"lr_max"`` (a checkpoint keeps it; a group may set it itself, e.g. for
a one-cycle schedule whose peak comes later). lr_t / lr_max is clipped to [0, 1], so ρ_t stays
between ρ_min and the group's ρ. Any LR scheduler works: it sets ``group["lr"]``, which is read at
every ``first_step``.

Details, beyond those of :mod:`harness.optim.sam`:

* **Memory.** With α > 0, one copy of g (the caller zeroes the gradients between the passes) is
  held from ``first_step`` until ``second_step`` has built d, then freed before the base step.
* **Gradient clipping** (``max_grad_norm``) applies to d, just before the base step.
* **GradScaler.** g is copied before SAM unscales it, so the copy and g_s carry the same scale S.
  d is then built at scale S (g·g_s/‖g_s‖² does not depend on S; the rest is linear) and unscaled
  with g_s's machinery. Overflows behave as in SAM: in the first pass nothing moves; in the
  second, d is non-finite and ``scaler.step`` skips the base step.
* **No off-steps.** GSAM ascends on every step: ``every_k`` must be 1 and ``off_step`` "skip";
  ``alpha`` is GSAM's α, not the LookSAM α of :class:`SAM` (which only off-steps would use).
* A parameter with a gradient in the first pass but none in the second is an error; one with a
  gradient only in the second pass counts as g = 0 there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from harness.optim.foreach import TINY, combine_sums, dot, norm
from harness.optim.sam import SAM, _Ascent, _Bucket

__all__ = ["GSAM"]


class GSAM(SAM):
    """Surrogate Gap Guided SAM wrapping ``base_optimizer`` (see the module docstring).

    Same calling convention as :class:`SAM` (``first_step`` / ``second_step``, or
    ``step(closure)`` after the first backward pass).

    Args:
        params: parameters or param groups; groups may override ``rho``, ``eta``, ``adaptive``,
            ``adaptive_1d``, ``rho_min``, ``lr_max`` and any base-optimizer hyper-parameter.
        base_optimizer: an optimizer *class*, e.g. ``torch.optim.AdamW``.
        rho: radius ρ of the neighbourhood (ρ_max when ``rho_min`` is set).
        alpha: weight α of the surrogate-gap term; 0 gives SAM.
        adaptive: ASAM's ascent, T = |w| + η.
        eta: η in T = |w| + η.
        rho_min: if set, ρ follows the learning rate from ``rho`` (at the group's initial lr)
            down to ``rho_min`` (at lr 0); None keeps ρ constant.
        adaptive_1d, max_grad_norm: as in :class:`SAM`; the clipping applies to d.
        every_k, off_step: accepted only as 1 and ``"skip"`` (GSAM ascends every step).
        **base_kwargs: passed to ``base_optimizer`` (``lr``, ``weight_decay``, ...).
    """

    def __init__(
        self,
        params,
        base_optimizer: Callable[..., torch.optim.Optimizer],
        rho: float = 0.05,
        alpha: float = 0.1,
        adaptive: bool = False,
        eta: float = 0.0,
        *,
        rho_min: float | None = None,
        adaptive_1d: bool = True,
        every_k: int = 1,
        off_step: str = "skip",
        max_grad_norm: float | None = None,
        **base_kwargs: Any,
    ) -> None:
        if not (alpha >= 0 and math.isfinite(alpha)):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if every_k != 1 or off_step != "skip":
            raise ValueError(
                "GSAM ascends on every step: every_k must be 1 and off_step 'skip', "
                f"got {every_k=!r}, {off_step=!r}"
            )
        super().__init__(
            params, base_optimizer, rho=rho, adaptive=adaptive, eta=eta,
            adaptive_1d=adaptive_1d, max_grad_norm=max_grad_norm, **base_kwargs,
        )
        self.alpha = alpha  # GSAM's α; SAM's LookSAM α is never used without off-steps
        self.defaults["rho_min"] = rho_min
        for group in self.param_groups:
            self._init_rho_schedule(group)

    def current_rho(self, group: dict[str, Any]) -> float:
        """The ρ that ``group`` ascends with on the coming step."""
        if group["rho_min"] is None:
            return group["rho"]
        fraction = min(max(float(group["lr"]) / group["lr_max"], 0.0), 1.0)
        return group["rho_min"] + (group["rho"] - group["rho_min"]) * fraction

    # -- hooks into SAM ---------------------------------------------------------------------

    def _buckets(self) -> list[_Bucket]:
        buckets = super()._buckets()
        for b in buckets:
            if b.group["rho_min"] is not None:  # a copy: the group's own "rho" stays ρ_max
                b.group = {**b.group, "rho": self.current_rho(b.group)}
        return buckets

    def _ascend(self, grad_scaler: torch.amp.GradScaler | None) -> _Ascent:
        # Copied before SAM unscales the gradients: g then has the same scale as g_s will.
        first = [torch._foreach_clone(b.grads) for b in self._buckets()] if self.alpha else None
        ascent = super()._ascend(grad_scaler)
        if not ascent.found_inf:
            ascent.first_grads = first  # SAM's _ascend builds its buckets in the same order
        return ascent

    def _descend(
        self,
        ascent: _Ascent | None,
        grad_scaler: torch.amp.GradScaler | None,
        max_grad_norm: float | None,
    ) -> None:
        if ascent is not None and ascent.first_grads is not None:
            self._gap_guided_direction_(ascent)
        super()._descend(ascent, grad_scaler, max_grad_norm)

    @torch.no_grad()
    def _gap_guided_direction_(self, ascent: _Ascent) -> None:
        """Turn the gradients g_s into d = g_s − α g_⊥, in place, and free the copy of g."""
        first = {
            p: g for params, grads in zip(ascent.params, ascent.first_grads)
            for p, g in zip(params, grads)
        }
        ascent.first_grads = None
        buckets = self._buckets()
        g = [[first.pop(p) if p in first else torch.zeros_like(p.grad) for p in b.params]
             for b in buckets]
        if first:
            for params, backup in zip(ascent.params, ascent.backups):  # w back, as SAM leaves it
                torch._foreach_copy_(params, backup)
            raise RuntimeError("a parameter had a gradient in the first pass but not the second")
        g_s = [b.grads for b in buckets]
        projection = combine_sums([dot(gb, sb) for gb, sb in zip(g, g_s)]) / (
            combine_sums([norm(sb) ** 2 for sb in g_s]) + TINY
        )
        # d = g_s − α (g − projection·g_s) = (1 + α·projection) g_s − α g
        scale = 1 + self.alpha * projection
        for gb, sb in zip(g, g_s):
            torch._foreach_mul_(sb, scale.to(sb[0].device))
            torch._foreach_add_(sb, gb, alpha=-self.alpha)

    # -- plumbing ---------------------------------------------------------------------------

    def _init_rho_schedule(self, group: dict[str, Any]) -> None:
        group.setdefault("rho_min", self.defaults["rho_min"])
        if group["rho_min"] is None:
            return
        group.setdefault("lr_max", float(group["lr"]))
        if not 0 <= group["rho_min"] <= group["rho"]:
            raise ValueError(
                f"rho_min must lie in [0, rho], got rho_min={group['rho_min']}, rho={group['rho']}"
            )
        if not group["lr_max"] > 0:
            raise ValueError(
                f"rho_min needs a positive lr (or lr_max) to scale by, got {group['lr_max']}"
            )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if "rho_min" in self.defaults:  # else still in __init__, which sets the groups up itself
            self._init_rho_schedule(self.param_groups[-1])
