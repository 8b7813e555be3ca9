"""The one method table: every optimizer a study can compare, and all that is known about it.

A :class:`Method` holds the optimizer class, its typed hyper-parameters (a dataclass whose
defaults are the method's defaults), which of them a study may tune, how many forward/backward
passes a step costs, and how the report names and colours it. Config validation, the CLI's
choices, the training loop, the study runner and the report all read this table, so adding an
optimizer is its module plus one entry here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.errors import HarnessError
from harness.optim.gsam import GSAM
from harness.optim.sam import ASAM, SAM


def _bound(default: float, low: float, *, strict: bool = False, doc: str = "") -> Any:
    """A hyper-parameter with a lower bound that config, CLI and tuning ranges are held to."""
    return field(default=default, metadata={"low": low, "strict": strict, "doc": doc})


@dataclass
class Hparams:
    """AdamW's settings, the base of every method's (decoupled weight decay throughout)."""
    lr: float = _bound(1e-3, 0.0, strict=True, doc="Learning rate")
    weight_decay: float = _bound(0.01, 0.0, doc="Decoupled weight decay")

    def problems(self) -> list[tuple[str, str]]:
        """(field, what is wrong) for every value outside its bound."""
        return [(f.name, message) for f in dataclasses.fields(self)
                if (message := bound_problem(type(self), f.name, getattr(self, f.name)))]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def bound_problem(cls: type[Hparams], name: str, value: Any) -> str | None:
    """Why `value` is not allowed for field `name` of `cls`, or None."""
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}[name]
    low, strict = meta.get("low"), meta.get("strict", False)
    if low is None or value is None:
        return None
    if value < low or (strict and value == low):
        return f"must be {'>' if strict else '≥'} {low:g}, got {value!r}"
    return None


@dataclass
class SAMHparams(Hparams):
    rho: float = _bound(0.05, 0.0, doc="Neighbourhood radius ρ")
    every_k: int = _bound(1, 1, doc="Ascend every k-th step (1: every step)")


@dataclass
class ASAMHparams(SAMHparams):
    rho: float = _bound(0.5, 0.0, doc="Neighbourhood radius ρ (relative to |w|)")
    eta: float = _bound(0.01, 0.0, doc="ASAM's η in T = |w| + η")
    # The paper's T covers every parameter; the reference implementation scales weight
    # matrices only (biases and norm gains keep T = 1). Recorded as a param either way.
    adaptive_1d: bool = field(default=True, metadata={
        "doc": "ASAM: T = |w| + η on 1-D parameters too (false: weight matrices only)"})


@dataclass
class GSAMHparams(Hparams):
    rho: float = _bound(0.05, 0.0, doc="Neighbourhood radius ρ")
    alpha: float = _bound(0.1, 0.0, doc="GSAM's α, weight of the surrogate-gap descent")
    rho_min: float | None = _bound(None, 0.0, doc="GSAM: ρ follows the lr down to this")

    def problems(self) -> list[tuple[str, str]]:
        late = self.rho_min is not None and self.rho_min > self.rho
        return super().problems() + (
            [("rho_min", f"must be ≤ rho ({self.rho:g}), got {self.rho_min!r}")] if late else [])


@dataclass(frozen=True)
class Method:
    name: str
    display: str  # as the report writes it
    color: str  # fixed colour in every figure (Okabe–Ito, colour-blind safe)
    optimizer: type[torch.optim.Optimizer]
    hparams: type[Hparams]
    tunable: tuple[str, ...]  # keys a study's `search:` may name
    passes: int = 1  # forward/backward passes per step: the expected cost ratio to AdamW
    # epochs relative to the study's train.epochs: 2 makes an AdamW control with the same
    # forward/backward budget as a two-pass method
    epochs_factor: float = 1.0

    def epochs(self, study_epochs: int) -> int:
        return max(1, round(study_epochs * self.epochs_factor))

    def budget(self, steps: int) -> int:
        """Forward/backward passes that `steps` optimizer steps cost."""
        return steps * self.passes

    @property
    def sharpness_aware(self) -> bool:
        """Wraps a base optimizer and needs a closure for its second pass."""
        return issubclass(self.optimizer, SAM)

    def defaults(self, **overrides: Any) -> Hparams:
        return dataclasses.replace(self.hparams(), **overrides)

    def from_dict(self, values: dict[str, Any]) -> Hparams:
        """Typed settings from a mapping (e.g. an Optuna trial's user attrs)."""
        return self.hparams(**{k: v for k, v in values.items()
                               if k in hparam_names(self.hparams)})

    def build(self, params, hparams: Hparams,
              max_grad_norm: float | None = None) -> torch.optim.Optimizer:
        """The optimizer over `params`; sharpness-aware ones wrap AdamW and clip g_s to
        `max_grad_norm` (plain ones leave clipping to the caller, before ``step()``)."""
        if not isinstance(hparams, self.hparams):
            raise TypeError(f"{self.name} takes {self.hparams.__name__}, got {hparams!r}")
        if not self.sharpness_aware:
            return self.optimizer(params, **hparams.as_dict())
        return self.optimizer(params, torch.optim.AdamW, max_grad_norm=max_grad_norm,
                              **hparams.as_dict())


def hparam_names(cls: type[Hparams]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("adamw", "AdamW", "#0072b2", torch.optim.AdamW, Hparams, ("lr", "weight_decay")),
    Method("adamw-2x", "AdamW ×2 epochs", "#56b4e9", torch.optim.AdamW, Hparams,
           ("lr", "weight_decay"), epochs_factor=2.0),
    Method("sam", "SAM", "#009e73", SAM, SAMHparams, ("lr", "weight_decay", "rho"), passes=2),
    Method("asam", "ASAM", "#d55e00", ASAM, ASAMHparams,
           ("lr", "weight_decay", "rho", "eta"), passes=2),
    Method("gsam", "GSAM", "#e69f00", GSAM, GSAMHparams,
           ("lr", "weight_decay", "rho", "alpha"), passes=2),
)}

def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise HarnessError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None
