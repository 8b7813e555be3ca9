"""Loading segmenter weights from a file, with errors that name the file.

Upstream `build_sam` calls `torch.load` without `map_location` (fails for CUDA checkpoints on a
CPU machine) and reports a wrong checkpoint as a page of missing keys; this does neither.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from harness.errors import HarnessError


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise HarnessError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # checkpoints saved by training scripts wrap the weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HarnessError(f"checkpoint {path} does not hold a state dict of tensors")
    return state


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load `path` into `model` strictly; a mismatch names the file and a few offending keys."""
    state = load_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("wrong shape", wrong_shape)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise HarnessError(
            f"checkpoint {path} does not match this model architecture: {'; '.join(parts)}"
        )
    model.load_state_dict(state)
