"""Segmenters: build by preset name, load checkpoints, predict masks in batches."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from segment_anything.modeling import Sam

from harness.errors import HarnessError
from harness.model.checkpoint import (
    describe_state,
    load_state_dict,
    load_weights,
    match_state_dict,
)
from harness.model.decoder import (
    decode_masks,
    encode_images,
    predict_from_embeddings,
    predict_masks,
)
from harness.model.device import resolve_device, synchronize, torch_threads
from harness.model.finetune import (
    TRAINABLE,
    LoraSpec,
    apply_lora,
    layer_decay_groups,
    layer_ids,
    lora_spec_of,
    lora_spec_of_state,
    same_lora,
    set_trainable,
)
from harness.model.preprocess import MEDSAM, SQUARE, Preprocessing, preprocessing_of
from harness.model.presets import PRESETS, ModelSpec, TinyViTSpec, build_from_spec, get_spec
from harness.model.pretrained import PackagedWeights, packaged_checkpoint, verify_sha256


def build_model(
    preset: str,
    checkpoint: str | Path | None = None,
    trainable: str = "all",
    lora: LoraSpec | Mapping | None = None,
) -> Sam:
    """A Segment Anything model of `preset` with its weights, frozen as `trainable` says.

    Weights: `checkpoint` when given (any layout ``checkpoint.load_state_dict`` accepts), else
    the preset's packaged weights (litemedsam), else a random initialisation.

    `trainable` (see :data:`TRAINABLE`): "decoder" trains the mask decoder only (the usual recipe
    for fine-tuning a pretrained vit_b/l/h), "prompt+decoder" also the prompt encoder, "lora"
    adds LoRA adapters (`lora`: a :class:`LoraSpec` or its fields as a mapping; default
    ``LoraSpec()``) to the image encoder and trains them and the mask decoder. A checkpoint
    saved from a LoRA model (its ``state_dict()``) reloads with ``trainable="lora"``: the
    adapters are rebuilt from its own ``lora_spec`` before loading; a plain checkpoint is
    loaded first and the adapters added on top.
    """
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}, got {trainable!r}")
    spec = get_spec(preset)
    wanted = None if lora is None else LoraSpec.coerce(lora)
    model = build_from_spec(spec)
    state = load_state_dict(checkpoint) if checkpoint is not None else None
    try:
        saved = lora_spec_of_state(state) if state is not None else None
    except HarnessError as exc:
        raise HarnessError(f"checkpoint {checkpoint}: {exc}") from None
    if saved is not None:
        if trainable != "lora":
            raise HarnessError(f"checkpoint {checkpoint} holds LoRA adapters (rank {saved.rank}):"
                               " load it with trainable='lora'")
        if wanted is not None and not same_lora(wanted, saved):
            raise HarnessError(f"checkpoint {checkpoint} holds LoRA rank {saved.rank}, alpha "
                               f"{saved.alpha:g}, not the rank {wanted.rank}, alpha "
                               f"{wanted.alpha:g} asked for")
        apply_lora(model, saved.rank, saved.alpha, (wanted or saved).targets)
        match_state_dict(model, state, checkpoint, spec.ignore_keys)
    else:
        if state is not None:
            match_state_dict(model, state, checkpoint, spec.ignore_keys)
        elif spec.weights is not None:
            load_weights(model, packaged_checkpoint(spec.weights), spec.ignore_keys)
        if trainable == "lora":
            lora_ = wanted or LoraSpec()
            apply_lora(model, lora_.rank, lora_.alpha, lora_.targets)
    set_trainable(model, trainable)
    return model


def has_pretrained_weights(preset: str) -> bool:
    """Whether `preset` comes with weights of its own (no checkpoint needed to be pretrained)."""
    return get_spec(preset).weights is not None


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "MEDSAM", "PRESETS", "SQUARE", "TRAINABLE", "LoraSpec", "ModelSpec", "PackagedWeights",
    "Preprocessing", "TinyViTSpec", "apply_lora", "build_from_spec", "build_model",
    "count_parameters", "decode_masks", "describe_state", "encode_images", "get_spec",
    "has_pretrained_weights", "layer_decay_groups", "layer_ids", "load_state_dict",
    "load_weights", "lora_spec_of", "match_state_dict", "packaged_checkpoint",
    "predict_from_embeddings", "predict_masks", "preprocessing_of", "resolve_device",
    "set_trainable", "synchronize", "torch_threads", "verify_sha256",
]
