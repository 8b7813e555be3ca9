"""Segmenters: presets build from segment_anything classes, the batched decoder equals the
upstream per-image path, checkpoints load through the real path with clear errors."""

import pytest
import torch
from segment_anything.modeling import Sam

from harness.errors import HarnessError
from harness.model import (
    PRESETS,
    build_model,
    encode_images,
    get_spec,
    predict_from_embeddings,
    predict_masks,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("tiny-64").eval()


def test_presets_are_real_segment_anything_models():
    for name in ("tiny-32", "tiny-64", "tiny-128"):
        m = build_model(name)
        assert isinstance(m, Sam)
        assert m.image_encoder.img_size == PRESETS[name].image_size
    spec = get_spec("vit_b")  # upstream constants, built without weights only on demand
    assert (spec.image_size, spec.encoder_dim, spec.encoder_depth) == (1024, 768, 12)
    with pytest.raises(HarnessError, match="vit_q"):
        get_spec("vit_q")


def _upstream_single(model, image, box):
    """Segment Anything's own path for one image and one box (what Sam.forward does)."""
    emb = encode_images(model, image[None])
    sparse, dense = model.prompt_encoder(points=None, boxes=box[None], masks=None)
    low, iou = model.mask_decoder(emb, model.prompt_encoder.get_dense_pe(), sparse, dense,
                                  multimask_output=False)
    return model.postprocess_masks(low, image.shape[-2:], image.shape[-2:]), iou


def test_batched_decoder_matches_per_image_loop(model):
    torch.manual_seed(1)
    images = torch.rand(5, 3, 64, 64) * 255
    boxes = torch.tensor([[2, 3, 30, 40], [10, 10, 60, 50], [0, 0, 63, 63], [20, 5, 40, 25],
                          [5, 30, 25, 62]], dtype=torch.float32)
    with torch.no_grad():
        logits, iou = predict_masks(model, images, boxes=boxes)
        for i in range(5):
            ref_logits, ref_iou = _upstream_single(model, images[i], boxes[i])
            torch.testing.assert_close(logits[i], ref_logits[0], atol=1e-6, rtol=0)
            torch.testing.assert_close(iou[i], ref_iou[0], atol=1e-6, rtol=0)


def test_many_prompts_per_image_with_image_index(model):
    torch.manual_seed(2)
    images = torch.rand(2, 3, 64, 64) * 255
    boxes = torch.tensor([[2, 3, 30, 40], [10, 10, 60, 50], [5, 5, 20, 20]], dtype=torch.float32)
    index = torch.tensor([1, 0, 1])
    with torch.no_grad():
        emb = encode_images(model, images)
        logits, _ = predict_from_embeddings(model, emb, (64, 64), boxes=boxes, image_index=index)
        for p in range(3):
            ref, _ = predict_masks(model, images[index[p]][None], boxes=boxes[p][None])
            torch.testing.assert_close(logits[p], ref[0], atol=1e-6, rtol=0)


def test_gradients_flow_through_batched_path():
    model = build_model("tiny-32")
    logits, iou = predict_masks(model, torch.rand(3, 3, 32, 32) * 255,
                                boxes=torch.tensor([[1.0, 1, 20, 20]] * 3))
    (logits.mean() + iou.mean()).backward()
    assert model.image_encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.mask_decoder.iou_token.weight.grad is not None


def test_point_prompts_and_resized_inputs():
    model = build_model("tiny-32").eval()
    images = torch.rand(2, 3, 48, 48) * 255  # not the encoder size: resized in and out
    points = (torch.tensor([[[10.0, 12.0]], [[30.0, 40.0]]]), torch.ones(2, 1))
    with torch.no_grad():
        logits, iou = predict_masks(model, images, points=points)
    assert logits.shape == (2, 1, 48, 48) and iou.shape == (2, 1)


def test_checkpoint_roundtrip_through_real_loader(tmp_path):
    torch.manual_seed(3)
    trained = build_model("tiny-32")
    path = tmp_path / "tiny.pth"
    torch.save(trained.state_dict(), path)
    loaded = build_model("tiny-32", checkpoint=path)
    for (name, a), b in zip(trained.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(HarnessError, match="missing.pth"):
        build_model("tiny-32", checkpoint=tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(HarnessError, match="cannot read checkpoint .*garbage.pth"):
        build_model("tiny-32", checkpoint=garbage)
    other = tmp_path / "other.pth"
    torch.save(build_model("tiny-64").state_dict(), other)
    with pytest.raises(HarnessError, match="other.pth does not match .*wrong shape"):
        build_model("tiny-32", checkpoint=other)


def test_trainable_freezes_encoder():
    model = build_model("tiny-32", trainable="decoder")
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    assert all(p.requires_grad for p in model.mask_decoder.parameters())


def test_presets_choose_their_preprocessing():
    from harness.model import MEDSAM, SQUARE

    for name in ("tiny-32", "tiny-64", "tiny-128", "tiny-256", "vit_b", "vit_l", "vit_h"):
        assert get_spec(name).preprocessing == SQUARE  # ImageNet mean/std, straight resize
    assert get_spec("litemedsam").preprocessing == MEDSAM
    assert build_model("tiny-32").preprocessing == SQUARE


def _with_preprocessing(preprocessing):
    import dataclasses

    from harness.model import build_from_spec

    torch.manual_seed(0)
    spec = dataclasses.replace(get_spec("tiny-32"), preprocessing=preprocessing)
    return build_from_spec(spec).eval()


def test_longest_side_resize_pads_instead_of_stretching():
    from harness.model import Preprocessing

    model = _with_preprocessing(Preprocessing(resize="longest"))
    torch.manual_seed(1)
    wide = torch.rand(1, 3, 16, 32) * 255  # longest side already 32: padded below, not resized
    padded = model.pixel_mean.expand(1, 3, 32, 32).clone()  # pads to 0 after normalisation
    padded[..., :16, :] = wide
    box = torch.tensor([[4.0, 2.0, 20.0, 12.0]])
    points = (torch.tensor([[[10.0, 8.0]]]), torch.ones(1, 1))
    with torch.no_grad():
        for prompt in ({"boxes": box}, {"points": points}):
            logits, iou = predict_masks(model, wide, **prompt)
            ref_logits, ref_iou = predict_masks(model, padded, **prompt)
            assert logits.shape == (1, 1, 16, 32)
            torch.testing.assert_close(logits, ref_logits[..., :16, :], atol=1e-5, rtol=0)
            torch.testing.assert_close(iou, ref_iou, atol=1e-6, rtol=0)


def test_minmax_stretch_ignores_brightness_and_contrast():
    from harness.model import MEDSAM

    model = _with_preprocessing(MEDSAM)
    torch.manual_seed(2)
    image = torch.rand(2, 3, 32, 32) * 100
    box = torch.tensor([[3.0, 3, 20, 25], [0, 0, 31, 31]])
    with torch.no_grad():
        a, _ = predict_masks(model, image, boxes=box)
        b, _ = predict_masks(model, image * 2.5 + 7, boxes=box)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
