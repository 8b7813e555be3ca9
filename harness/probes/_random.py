"""Seeded random vectors for probes, drawn from private generators.

Probes never touch the global RNG: a probe run in the middle of training must not change the
batches or dropout masks that training sees next. Each probe call builds a fresh
:class:`ProbeRandom` from its ``seed``, so the same call gives the same numbers every time.

One generator per device, created on that device: drawing on the CPU and copying would cost
seconds per draw for a ViT-H. The flip side is that CPU and CUDA runs with the same seed draw
different (equally valid) vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._params import Vector


class ProbeRandom:
    """Gaussian and Rademacher vectors shaped like a list of tensors, from ``seed``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def normal(self, like: Sequence[Tensor]) -> Vector:
        """Independent N(0, 1) entries."""
        return [
            torch.randn(
                t.shape, generator=self._generator(t.device), device=t.device, dtype=t.dtype
            )
            for t in like
        ]

    def rademacher(self, like: Sequence[Tensor]) -> Vector:
        """Independent ±1 entries with equal probability (Hutchinson's lowest-variance choice)."""
        return [
            torch.randint(
                0, 2, t.shape, generator=self._generator(t.device), device=t.device, dtype=t.dtype
            ).mul_(2).sub_(1)
            for t in like
        ]
