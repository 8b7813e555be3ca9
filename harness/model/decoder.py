"""Batched prompt → mask prediction for training and evaluation.

Upstream `MaskDecoder.predict_masks` is written for *one* image with many prompts: it
`repeat_interleave`s the image embedding once per prompt, so B images with one box each yield
B² masks (or a shape error). Here every prompt carries the index of the image it belongs to,
so one call handles any mix of images and prompts, and gradients flow (upstream `Sam.forward`
is `@torch.no_grad()`).
"""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder, Sam

from harness.model.preprocess import masks_to_image, prepare_images, prompt_scale


def decode_masks(
    decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`MaskDecoder.predict_masks` with one image embedding per prompt (no repeat).

    Shapes: image_embeddings and dense (P, C, h, w), image_pe (1, C, h, w), sparse (P, n, C).
    Returns all mask-token outputs: masks (P, 1 + multimask, 4h, 4w), iou (P, 1 + multimask).
    """
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)

    src = image_embeddings + dense
    pos_src = image_pe.expand(src.shape[0], -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]

    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
        dim=1,
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
    return masks, decoder.iou_prediction_head(iou_token_out)


def encode_images(model: Sam, images: torch.Tensor) -> torch.Tensor:
    """Image embeddings for float images (B, 3, H, W) in 0..255, brought to the encoder's
    input the way the model's preset says (``model.preprocessing``: mean/std, stretch, resize)."""
    return model.image_encoder(prepare_images(model, images))


def predict_from_embeddings(
    model: Sam,
    embeddings: torch.Tensor,
    image_size: tuple[int, int],
    boxes: torch.Tensor | None = None,
    points: tuple[torch.Tensor, torch.Tensor] | None = None,
    image_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-mask logits (P, 1, H, W) at `image_size` and predicted IoU (P, 1).

    Prompts are in the pixel coordinates of the original images: boxes (P, 4) xyxy, or points
    ((P, n, 2) xy, (P, n) labels 1=foreground/0=background). `image_index` (P,) says which
    embedding each prompt belongs to (default: prompt i ↔ image i).
    """
    if (boxes is None) == (points is None):
        raise ValueError("give exactly one of boxes or points")
    n_prompts = (boxes if boxes is not None else points[0]).shape[0]
    if image_index is None:
        image_index = torch.arange(n_prompts, device=embeddings.device)
    scale = prompt_scale(model, image_size, embeddings.device)
    if boxes is not None:
        boxes = boxes * scale.repeat(2)
    if points is not None:
        points = (points[0] * scale, points[1])
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=None)
    dense = dense.expand(n_prompts, -1, -1, -1)
    masks, iou = decode_masks(
        model.mask_decoder,
        embeddings[image_index],
        model.prompt_encoder.get_dense_pe(),
        sparse,
        dense,
    )
    # Box prompts are unambiguous: the single-mask token (index 0), as SAM does for boxes.
    logits = masks_to_image(model, masks[:, :1], image_size)
    return logits, iou[:, :1]


def predict_masks(
    model: Sam,
    images: torch.Tensor,
    boxes: torch.Tensor | None = None,
    points: tuple[torch.Tensor, torch.Tensor] | None = None,
    image_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode `images` (B, 3, H, W, 0..255) and decode one mask per prompt (see above)."""
    embeddings = encode_images(model, images)
    return predict_from_embeddings(
        model, embeddings, tuple(images.shape[-2:]), boxes, points, image_index
    )
