"""Where and with how many threads a model runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from harness.errors import HarnessError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HarnessError(f"device {name!r} asked for, but this machine has no CUDA device")
    return device


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads (``None``: as set), restoring the setting after:
    a trial's choice must not leak into the next one, or into the caller."""
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
