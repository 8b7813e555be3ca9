"""Segment Anything architectures by name: tiny CPU presets and the upstream vit_b/l/h.

Every preset is built from the real `segment_anything.modeling` classes, so what trains on a
laptop is the same code path (attention, two-way transformer, hypernetwork heads) as vit_h,
only smaller.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from harness.errors import HarnessError


@dataclass(frozen=True)
class ModelSpec:
    image_size: int
    patch_size: int
    encoder_dim: int
    encoder_depth: int
    encoder_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int
    prompt_dim: int
    decoder_mlp_dim: int
    decoder_heads: int
    decoder_depth: int = 2
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    use_rel_pos: bool = True


def _upstream(dim: int, depth: int, heads: int, global_idx: tuple[int, ...]) -> ModelSpec:
    # The constants of segment_anything.build_sam._build_sam.
    return ModelSpec(1024, 16, dim, depth, heads, global_idx, 14, 256, 2048, 8)


PRESETS: dict[str, ModelSpec] = {
    # Tiny presets: 4×4 to 16×16 tokens, a few blocks; sized so a CPU trains them in minutes.
    # tiny-32 exists for tests (a training step in milliseconds), not for experiments.
    "tiny-32": ModelSpec(32, 8, 32, 1, 2, (), 0, 16, 32, 2, decoder_depth=1,
                         iou_head_hidden_dim=16, mask_in_chans=4),
    # The prompt/decoder width is generous on purpose: with fewer than ~64 random Fourier
    # frequencies the decoder cannot place a box precisely and learns far more slowly.
    "tiny-64": ModelSpec(64, 8, 64, 2, 2, (1,), 0, 128, 256, 4, iou_head_hidden_dim=64,
                         mask_in_chans=4),
    "tiny-128": ModelSpec(128, 8, 96, 2, 3, (1,), 8, 128, 256, 4, iou_head_hidden_dim=64,
                          mask_in_chans=8),
    "tiny-256": ModelSpec(256, 16, 128, 4, 4, (1, 3), 8, 128, 512, 4, iou_head_hidden_dim=64,
                          mask_in_chans=8),
    "vit_b": _upstream(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": _upstream(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": _upstream(1280, 32, 16, (7, 15, 23, 31)),
}


def get_spec(preset: str) -> ModelSpec:
    try:
        return PRESETS[preset]
    except KeyError:
        raise HarnessError(
            f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}"
        ) from None


def build_from_spec(spec: ModelSpec) -> Sam:
    tokens = spec.image_size // spec.patch_size
    model = Sam(
        image_encoder=ImageEncoderViT(
            img_size=spec.image_size,
            patch_size=spec.patch_size,
            embed_dim=spec.encoder_dim,
            depth=spec.encoder_depth,
            num_heads=spec.encoder_heads,
            mlp_ratio=4,
            out_chans=spec.prompt_dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=spec.use_rel_pos,
            window_size=spec.window_size,
            global_attn_indexes=spec.global_attn_indexes,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=spec.prompt_dim,
            image_embedding_size=(tokens, tokens),
            input_image_size=(spec.image_size, spec.image_size),
            mask_in_chans=spec.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=spec.decoder_depth,
                embedding_dim=spec.prompt_dim,
                mlp_dim=spec.decoder_mlp_dim,
                num_heads=spec.decoder_heads,
            ),
            transformer_dim=spec.prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=spec.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return model
