"""The embedding store: frozen encoders are run once per image; results stay trustworthy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.data import synthetic_split
from harness.evaluate.segment import evaluate_dataset, predict_dataset
from harness.model import build_model, set_trainable
from harness.model.embeddings import EmbeddingStore, encoder_digest, encoder_frozen
from harness.optim import get_method
from harness.train.loop import train


@pytest.fixture
def data():
    return synthetic_split("shapes", "test", 6, 32, 0, 3, None)


def _model(trainable="decoder", seed=0):
    torch.manual_seed(seed)
    model = build_model("tiny-32")
    set_trainable(model, trainable)
    return model


def _stored(home):
    return sorted((home / "cache" / "embeddings").rglob("*.npy"))


def test_frozen_encoder_is_encoded_once_and_scores_stay_put(home, data):
    frozen, full = _model("decoder"), _model("all")
    assert encoder_frozen(frozen) and not encoder_frozen(full)
    first = predict_dataset(frozen, data, return_logits=True)
    (path,) = _stored(home)
    second = predict_dataset(frozen, data, return_logits=True)
    assert torch.equal(torch.as_tensor(first), torch.as_tensor(second))  # read back = computed
    assert _stored(home) == [path]
    # float16 storage moves logits a little, and scores by less than a hundredth
    exact = predict_dataset(full, data, return_logits=True)  # same weights, no store
    assert np.abs(first - exact).max() < 0.05
    cached, direct = evaluate_dataset(frozen, data), evaluate_dataset(full, data)
    assert abs(cached["miou"] - direct["miou"]) < 0.01


def test_digest_follows_encoder_weights_and_preprocessing():
    a, b = _model(), _model()
    assert encoder_digest(a) == encoder_digest(b)
    with torch.no_grad():
        b.image_encoder.patch_embed.proj.weight[0, 0, 0, 0] += 1e-3
    assert encoder_digest(a) != encoder_digest(b)
    c = _model()
    c.pixel_std.mul_(2)
    assert encoder_digest(a) != encoder_digest(c)
    d = _model()
    with torch.no_grad():  # the decoder is not part of what is cached
        d.mask_decoder.iou_token.weight.add_(1.0)
    assert encoder_digest(a) == encoder_digest(d)


def test_decoder_only_training_reads_the_store_and_learns(home):
    dataset = synthetic_split("shapes", "train", 8, 32, 0, 3, None)
    model = _model()
    encoder_before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    losses = []
    train(model, dataset, "asam", get_method("asam").defaults(lr=3e-3), epochs=12,
          batch_size=4, seed=0, box_jitter=0.0, progress=False,
          log=lambda step, m: losses.append(m["train/loss"]))
    assert len(_stored(home)) == 1  # the training set, once, for all 12 epochs
    assert all(torch.equal(v, model.image_encoder.state_dict()[k])
               for k, v in encoder_before.items())
    assert np.mean(losses[-4:]) < 0.9 * np.mean(losses[:4])


def test_an_unreadable_store_file_is_recomputed(tmp_path, data):
    store = EmbeddingStore(tmp_path)
    model = _model()
    good = np.array(store.get(model, data))
    path = store.path(model, data)
    path.write_bytes(b"not an array")
    assert np.array_equal(store.get(model, data), good) and store.misses == 2


def test_embedding_bench_measures_both_ratios(home):
    from harness.bench.embeddings import format_report, run_embedding_bench

    result = run_embedding_bench("tiny-32", images=4, batch_size=2, rounds=1, threads=1)
    assert result["epoch_ratio"]["median"] > 0 and result["shifts_ratio"]["median"] > 0
    assert result["shift_miou_within_0.01"] and result["cells"] == 1 + 6 + 5
    assert "encoder ÷ store" in format_report(result)
    assert not _stored(home)  # the bench wrote into its own temporary home


def test_ensemble_of_decoder_fine_tunes_encodes_each_image_once(home, data):
    from harness.evaluate.ensemble import Ensemble, aggregate

    members = [_model(), _model()]
    with torch.no_grad():  # two different decoders on one shared frozen encoder
        members[1].mask_decoder.iou_token.weight.add_(0.5)
        members[1].mask_decoder.output_upscaling[0].weight.mul_(1.5)
    ensemble = Ensemble(members)
    logits = predict_dataset(ensemble, data, return_logits=True)
    assert len(_stored(home)) == 1  # one encoder, one set of embeddings
    each = [predict_dataset(m, data, return_logits=True) for m in members]
    expected = aggregate(torch.stack([torch.as_tensor(e) for e in each]), "mean-logit")
    assert torch.allclose(torch.as_tensor(logits), expected, atol=1e-5)
    # members with different encoders share nothing: each encodes for itself, chunk by chunk
    other = _model(seed=1)
    mixed = predict_dataset(Ensemble([members[0], other]), data, return_logits=True)
    assert len(_stored(home)) == 1 and mixed.shape == logits.shape
