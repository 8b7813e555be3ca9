"""How images reach the encoder and masks come back: a property of the preset, not the caller.

Every preset carries a :class:`Preprocessing` (``ModelSpec.preprocessing``); the model built
from it keeps it as ``model.preprocessing`` and its pixel mean/std as Segment Anything's own
``pixel_mean``/``pixel_std`` buffers. :func:`encode_images` and :func:`predict_from_embeddings`
(``harness.model.decoder``) read both, so training and evaluation code never special-case a
preset. A model without the attribute (built by hand from ``segment_anything`` classes) gets
:data:`SQUARE`, the harness's original behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # ImageNet, in 0..255 (segment_anything.build_sam)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
RESIZE = ("square", "longest")


@dataclass(frozen=True)
class Preprocessing:
    """Images (B, 3, H, W) in 0..255 → encoder input (B, 3, S, S), S = the encoder's size.

    stretch: min–max stretch each image (over all its pixels and channels) to 0..255 first, as
      MedSAM does; a constant image becomes 0.
    pixel_mean / pixel_std: then ``(x - mean) / std`` per channel.
    resize: ``square`` resizes H×W straight to S×S (aspect not kept; prompts and masks are
      scaled per axis) — the tiny presets' and vit_b/l/h's behaviour in this harness.
      ``longest`` scales the longest side to S keeping the aspect and zero-pads the bottom and
      right after normalisation (upstream Segment Anything's ``ResizeLongestSide`` + ``pad``);
      masks are cropped back before resizing to H×W. Both agree when H = W.
    antialias: low-pass before downscaling (``F.interpolate(antialias=True)``), closer to the
      PIL / cv2.INTER_AREA resizing upstream pipelines use.
    """

    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD
    stretch: bool = False
    resize: str = "square"
    antialias: bool = False

    def __post_init__(self):
        if self.resize not in RESIZE:
            raise ValueError(f"resize must be one of {RESIZE}, got {self.resize!r}")


SQUARE = Preprocessing()
"""ImageNet mean/std, straight resize to the encoder size (tiny presets, vit_b/l/h)."""
MEDSAM = Preprocessing(pixel_mean=(0.0, 0.0, 0.0), pixel_std=(255.0, 255.0, 255.0),
                       stretch=True, resize="longest", antialias=True)
"""MedSAM / LiteMedSAM: min–max stretch to 0..1, longest side to S, zero padding."""


def preprocessing_of(model: torch.nn.Module) -> Preprocessing:
    return getattr(model, "preprocessing", SQUARE)


def _resized_shape(image_size: tuple[int, int], size: int) -> tuple[int, int]:
    """(h, w) of an H×W image with its longest side scaled to `size` (as ResizeLongestSide)."""
    scale = size / max(image_size)
    return int(image_size[0] * scale + 0.5), int(image_size[1] * scale + 0.5)


def prepare_images(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Encoder input (B, 3, S, S) for float images (B, 3, H, W) in 0..255."""
    prep = preprocessing_of(model)
    size = model.image_encoder.img_size
    if prep.stretch:
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        images = (images - low) / (high - low).clamp_min(1e-8) * 255.0
    x = (images - model.pixel_mean) / model.pixel_std
    if prep.resize == "square" or x.shape[-2] == x.shape[-1]:
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=prep.antialias)
        return x
    h, w = _resized_shape(tuple(x.shape[-2:]), size)
    if (h, w) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                          antialias=prep.antialias)
    return F.pad(x, (0, size - w, 0, size - h))


def prompt_scale(model: torch.nn.Module, image_size: tuple[int, int],
                 device: torch.device | None = None) -> torch.Tensor:
    """(sx, sy): image pixel coordinates × this = encoder input coordinates."""
    size = model.image_encoder.img_size
    if preprocessing_of(model).resize == "longest":
        scale = size / max(image_size)
        return torch.tensor([scale, scale], dtype=torch.float32, device=device)
    return size / torch.tensor([image_size[1], image_size[0]], dtype=torch.float32, device=device)


def masks_to_image(model: torch.nn.Module, masks: torch.Tensor,
                   image_size: tuple[int, int]) -> torch.Tensor:
    """Low-resolution mask logits (P, C, h, w) of the S×S input → (P, C, H, W) of the image."""
    if preprocessing_of(model).resize == "longest" and image_size[0] != image_size[1]:
        size = model.image_encoder.img_size
        h, w = _resized_shape(image_size, size)
        masks = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)
        masks = masks[..., :h, :w]
    return F.interpolate(masks, size=image_size, mode="bilinear", align_corners=False)
