"""Fine-tuning modes: which parameters train (decoder / prompt+decoder / lora / all) and
layer-wise learning-rate decay.

The training loop hands the optimizer ``[p for p in model.parameters() if p.requires_grad]``
(or :func:`layer_decay_groups`), so a sharpness-aware optimizer perturbs and steps exactly the
trainable parameters; frozen ones stay bit-identical.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import HarnessError

TRAINABLE = ("all", "decoder", "prompt+decoder", "lora")
"""all: every weight. decoder: the mask decoder only (the usual recipe for a pretrained
vit_b/l/h). prompt+decoder: also the prompt encoder. lora: low-rank adapters on the image
encoder's attention (see :func:`apply_lora`) plus the mask decoder."""

LORA_SPEC_KEY = "lora_spec"  # a model buffer [rank, alpha]: LoRA state dicts describe themselves
_LORA_PARAM = re.compile(r"\.lora_[AB]\.")


class FrozenAwareBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that stays in eval mode while its weight and bias are frozen.

    In train mode a BatchNorm normalises with batch statistics and updates its running ones, so
    an encoder whose weights are all frozen would still drift (and behave differently) under
    ``model.train()``. Frozen here means frozen: running statistics are used and kept.
    :func:`set_trainable` re-applies the rule when it changes ``requires_grad``.
    """

    def train(self, mode: bool = True):
        return super().train(mode and any(p.requires_grad for p in self.parameters()))


@dataclass(frozen=True)
class LoraSpec:
    """LoRA on the image encoder: W x + (alpha / rank) B A x on every Linear whose module name
    ends in one of `targets` (``qkv``: the fused attention projection of both ViT and TinyViT
    blocks). A starts random (Kaiming), B at zero, so a fresh adapter changes nothing."""

    rank: int = 8
    alpha: float = 8.0
    targets: tuple[str, ...] = ("qkv",)

    def __post_init__(self):
        if self.rank < 1:
            raise HarnessError(f"LoRA rank must be ≥ 1, got {self.rank}")
        if not self.alpha > 0:
            raise HarnessError(f"LoRA alpha must be > 0, got {self.alpha}")
        if not self.targets:
            raise HarnessError("LoRA needs at least one target module name")
        object.__setattr__(self, "targets", tuple(self.targets))

    @classmethod
    def coerce(cls, value: LoraSpec | Mapping | None) -> LoraSpec:
        if value is None:
            return cls()
        return value if isinstance(value, cls) else cls(**value)


def has_lora(model: nn.Module) -> bool:
    return hasattr(model, LORA_SPEC_KEY)


def lora_spec_of(model: nn.Module) -> LoraSpec | None:
    """The LoRA settings `model` was built with (None without adapters)."""
    if not has_lora(model):
        return None
    rank, alpha = getattr(model, LORA_SPEC_KEY).tolist()
    targets = sorted({n.rsplit(".", 1)[-1] for n, m in model.image_encoder.named_modules()
                      if hasattr(m, "lora_A")})
    return LoraSpec(int(rank), alpha, tuple(targets))


def lora_spec_of_state(state: Mapping[str, torch.Tensor]) -> LoraSpec | None:
    """The LoRA settings a saved state dict was trained with; None if it holds no adapters."""
    adapters = [k for k in state if _LORA_PARAM.search(k)]
    if not adapters:
        return None
    targets = sorted({k.split(".lora_")[0].rsplit(".", 1)[-1] for k in adapters})
    if LORA_SPEC_KEY not in state:
        a_key = next(k for k in adapters if ".lora_A." in k)
        raise HarnessError(f"the state dict holds LoRA adapters (rank {state[a_key].shape[0]}, "
                           f"targets {targets}) but not their {LORA_SPEC_KEY!r} (rank, alpha)")
    rank, alpha = state[LORA_SPEC_KEY].tolist()
    return LoraSpec(int(rank), alpha, tuple(targets))


def same_lora(a: LoraSpec, b: LoraSpec) -> bool:
    """Same rank and alpha (targets are checked by the strict load: their keys must match)."""
    return a.rank == b.rank and math.isclose(a.alpha, b.alpha, rel_tol=1e-9)


def apply_lora(model: nn.Module, rank: int = 8, alpha: float = 8.0,
               targets: tuple[str, ...] | list[str] = ("qkv",)) -> nn.Module:
    """Add LoRA adapters (``peft``) to `model.image_encoder` in place and make the model
    trainable in ``lora`` mode: adapters and mask decoder train, everything else is frozen.

    The encoder stays a plain module (``peft.inject_adapter_in_model``, no PeftModel wrapper),
    so prediction code is unchanged. Weight names gain ``.base_layer`` / ``.lora_A.default`` /
    ``.lora_B.default`` and the model a ``lora_spec`` buffer: ``model.state_dict()`` reloads
    with ``build_model(preset, checkpoint, trainable="lora")``.
    """
    spec = LoraSpec(rank, alpha, tuple(targets))
    if has_lora(model):
        raise HarnessError("the model already has LoRA adapters")
    import peft  # slow to import (it imports transformers): only when LoRA is used

    config = peft.LoraConfig(r=spec.rank, lora_alpha=spec.alpha,
                             target_modules=list(spec.targets), lora_dropout=0.0, bias="none")
    try:
        peft.inject_adapter_in_model(config, model.image_encoder)
    except ValueError as exc:
        raise HarnessError(f"LoRA targets {list(spec.targets)} match no layer of the image "
                           f"encoder: {str(exc).splitlines()[0]}") from None
    device = next(model.parameters()).device
    model.register_buffer(LORA_SPEC_KEY, torch.tensor([spec.rank, spec.alpha],
                                                      dtype=torch.float64, device=device))
    set_trainable(model, "lora")
    return model


def set_trainable(model: nn.Module, trainable: str) -> None:
    """Freeze all but the parts `trainable` (one of :data:`TRAINABLE`) names."""
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}, got {trainable!r}")
    if trainable == "lora":
        if not has_lora(model):
            raise ValueError("trainable='lora' needs LoRA adapters: apply_lora(model, ...) "
                             "first (build_model(..., trainable='lora') does)")
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith("mask_decoder.")
                                 or bool(_LORA_PARAM.search(name)))
    else:
        frozen = {"all": (), "decoder": ("image_encoder", "prompt_encoder"),
                  "prompt+decoder": ("image_encoder",)}[trainable]
        for name, param in model.named_parameters():
            param.requires_grad_(name.split(".")[0] not in frozen)
    for module in model.modules():
        if isinstance(module, FrozenAwareBatchNorm2d):
            module.train(model.training)


def _encoder_blocks(encoder: nn.Module) -> list[tuple[str, list[str]]]:
    """Blocks of the image encoder in depth order: (block prefix, extra prefixes that share
    its layer id). ViT: ``blocks.i``. TinyViT: ``layers.s.blocks.j`` in order, each stage's
    patch merging (``layers.s.downsample``) with the stage's last block (as TinyViT does)."""
    if hasattr(encoder, "blocks"):
        return [(f"blocks.{i}.", []) for i in range(len(encoder.blocks))]
    if hasattr(encoder, "layers"):
        out: list[tuple[str, list[str]]] = []
        for s, layer in enumerate(encoder.layers):
            for j in range(len(layer.blocks)):
                out.append((f"layers.{s}.blocks.{j}.", []))
            if layer.downsample is not None:
                out[-1][1].append(f"layers.{s}.downsample.")
        return out
    raise TypeError(f"no blocks found in image encoder {type(encoder).__name__}")


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """Layer id of every parameter name and L, the number of encoder blocks.

    BEiT / MAE convention (``param_groups_lrd`` in MAE's ``util/lr_decay.py``): the patch
    embedding (and ViT's ``pos_embed``) is layer 0, encoder block i (0-based) is layer i + 1,
    everything after the blocks — the encoder neck, prompt encoder, mask decoder — is L + 1.
    LoRA adapters belong to the block they sit in.
    """
    blocks = _encoder_blocks(model.image_encoder)
    depth = len(blocks)
    ids = {}
    for name, _ in model.named_parameters():
        ids[name] = depth + 1
        if not name.startswith("image_encoder."):
            continue
        local = name[len("image_encoder."):]
        if local.startswith("patch_embed.") or local == "pos_embed":
            ids[name] = 0
            continue
        for i, (prefix, extra) in enumerate(blocks):
            if local.startswith(prefix) or any(local.startswith(e) for e in extra):
                ids[name] = i + 1
                break
    return ids, depth


def layer_decay_groups(model: nn.Module, base_lr: float, decay: float) -> list[dict]:
    """Optimizer param groups with layer-wise learning-rate decay (trainable params only).

    A parameter of layer id k (see :func:`layer_ids`) gets ``base_lr * decay ** (L + 1 - k)``:
    encoder block i of L gets ``decay ** (L - i)`` (the last block ``decay``), the patch
    embedding ``decay ** (L + 1)``, the neck, prompt encoder and mask decoder ``base_lr``.
    One group per layer id, in id order; each carries ``lr``, ``lr_scale`` and ``name``.
    """
    if not 0 < decay <= 1:
        raise HarnessError(f"layer decay must be in (0, 1], got {decay}")
    ids, depth = layer_ids(model)
    groups: dict[int, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault(ids[name], []).append(param)
    out = []
    for k in sorted(groups):
        scale = decay ** (depth + 1 - k)
        out.append({"params": groups[k], "lr": base_lr * scale, "lr_scale": scale,
                    "name": f"layer_{k}"})
    return out
