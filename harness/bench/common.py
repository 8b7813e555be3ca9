"""What every `harness bench` command shares: thread setting, device sync, spread summary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


def summary(samples: list[float]) -> dict[str, float]:
    """Median, quartiles and range of repeated measurements (ratios or seconds)."""
    q25, median, q75 = np.percentile(samples, [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75),
            "min": float(min(samples)), "max": float(max(samples))}


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads (``None``: as set), restoring the setting after."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so a timer brackets the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
