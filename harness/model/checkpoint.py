"""Loading segmenter weights from a file, with errors that name the file.

Upstream `build_sam` calls `torch.load` without `map_location` (fails for CUDA checkpoints on a
CPU machine) and reports a wrong checkpoint as a page of missing keys; this does neither.

Accepted layouts: a plain ``Sam`` state dict (the official vit_b/l/h files, MedSAM, MobileSAM's
``mobile_sam.pt``, LiteMedSAM's ``lite_medsam.pth``, what this harness saves), or one wrapped as
``{"model": ...}`` / ``{"state_dict": ...}`` by a training script, with or without the
``module.`` prefix DistributedDataParallel adds.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from harness.errors import HarnessError


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError,
            zipfile.BadZipFile) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HarnessError(f"cannot read checkpoint {path}: {first}") from None
    for wrapper in ("model", "state_dict"):  # checkpoints saved by training scripts
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise HarnessError(f"checkpoint {path} does not hold a state dict of tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def describe_state(state: Mapping[str, torch.Tensor]) -> str:
    """What image encoder a state dict holds, in a few words (for error messages)."""
    blocks = {int(m.group(1)) for k in state
              if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    width = state.get("image_encoder.pos_embed")
    if blocks and width is not None:
        return f"a ViT encoder of width {width.shape[-1]}, depth {max(blocks) + 1}"
    stages = sorted({int(m.group(1)) for k in state
                     if (m := re.match(r"image_encoder\.layers\.(\d+)\.", k))})
    if stages:
        return f"a TinyViT encoder with {len(stages)} stages"
    if not any(k.startswith("image_encoder.") for k in state):
        return "no image encoder (not a Segment Anything checkpoint?)"
    return "an image encoder of unknown type"


def match_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
                     path: str | Path, ignore: tuple[str, ...] = ()) -> None:
    """Load `state` (read from `path`) into `model` strictly, after dropping keys that start
    with one of `ignore`; a mismatch raises one line naming the file and a few keys."""
    state = {k: v for k, v in state.items() if not k.startswith(ignore)} if ignore else state
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
            f"checkpoint {path} does not match this model architecture: it holds "
            f"{describe_state(state)}, the model {describe_state(own)}; {'; '.join(parts)}"
        )
    model.load_state_dict(state)


def load_weights(model: torch.nn.Module, path: str | Path, ignore: tuple[str, ...] = ()) -> None:
    """Load `path` into `model` strictly; a mismatch names the file and a few offending keys."""
    match_state_dict(model, load_state_dict(path), path, ignore)
