"""Segmenters: build by preset name, load checkpoints, predict masks in batches."""

from __future__ import annotations

from pathlib import Path

import torch
from segment_anything.modeling import Sam

from harness.model.checkpoint import load_state_dict, load_weights
from harness.model.decoder import (
    decode_masks,
    encode_images,
    predict_from_embeddings,
    predict_masks,
)
from harness.model.device import resolve_device, synchronize, torch_threads
from harness.model.presets import PRESETS, ModelSpec, build_from_spec, get_spec

TRAINABLE = ("all", "decoder", "prompt+decoder")


def build_model(
    preset: str, checkpoint: str | Path | None = None, trainable: str = "all"
) -> Sam:
    """A Segment Anything model of `preset`, optionally loaded from `checkpoint`.

    `trainable` freezes parts: "decoder" trains the mask decoder only (the usual recipe for
    fine-tuning a pretrained vit_b/l/h), "prompt+decoder" also the prompt encoder.
    """
    model = build_from_spec(get_spec(preset))
    if checkpoint is not None:
        load_weights(model, checkpoint)
    set_trainable(model, trainable)
    return model


def set_trainable(model: Sam, trainable: str) -> None:
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}, got {trainable!r}")
    frozen = {"all": (), "decoder": ("image_encoder", "prompt_encoder"),
              "prompt+decoder": ("image_encoder",)}[trainable]
    for name, param in model.named_parameters():
        param.requires_grad_(name.split(".")[0] not in frozen)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "PRESETS", "TRAINABLE", "ModelSpec", "build_model", "build_from_spec", "count_parameters",
    "decode_masks", "encode_images", "get_spec", "load_state_dict", "load_weights",
    "predict_from_embeddings", "predict_masks", "resolve_device", "set_trainable",
    "synchronize", "torch_threads",
]
