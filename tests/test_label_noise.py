"""Annotation noise on the training split: exact boundary moves, dropped masks, clean
evaluation splits."""

from __future__ import annotations

import numpy as np
import pytest

from harness.config import study_from_dict
from harness.data.dataset import SegDataset
from harness.data.label_noise import with_label_noise
from harness.data.sources import load_split
from harness.errors import HarnessError


def _squares(n: int, side: int = 8, size: int = 32) -> SegDataset:
    masks = np.zeros((n, size, size), bool)
    masks[:, 12:12 + side, 12:12 + side] = True
    images = np.zeros((n, size, size, 3), np.uint8)
    return SegDataset(images, masks, np.arange(n), "squares")


def test_each_boundary_moves_by_a_whole_number_of_pixels_within_the_bound():
    data = _squares(200)
    noisy = with_label_noise(data, boundary=2, drop=0.0, seed=0)
    sides = np.sqrt(noisy.masks.sum(axis=(1, 2)))  # a square stays a square
    assert np.allclose(sides, np.round(sides))
    assert set(np.round(sides).astype(int)) == {4, 6, 8, 10, 12}  # side 8 ± 2·r, r ∈ −2..2
    # boxes follow the noisy masks, as they would follow a noisy annotation
    assert np.array_equal(noisy.boxes[:, 2] - noisy.boxes[:, 0] + 1, sides)  # inclusive xyxy


def test_an_erosion_that_would_empty_a_mask_keeps_it():
    data = _squares(50, side=2)
    noisy = with_label_noise(data, boundary=3, drop=0.0, seed=1)
    assert noisy.masks.sum(axis=(1, 2)).min() >= 4


def test_masks_are_dropped_at_the_stated_rate_and_the_draw_is_fixed_by_the_seed():
    data = _squares(2000)
    noisy = with_label_noise(data, boundary=0, drop=0.25, seed=3)
    assert abs(len(noisy) / len(data) - 0.75) < 0.03
    again = with_label_noise(data, boundary=0, drop=0.25, seed=3)
    assert np.array_equal(noisy.owner, again.owner)
    assert with_label_noise(data, 0, 0.0, seed=3) is data


def test_only_the_training_split_is_noisy(home, tiny_study_dict):
    clean = study_from_dict(tiny_study_dict).data
    tiny_study_dict["data"].update(label_noise_boundary=1, label_noise_drop=0.3)
    noisy = study_from_dict(tiny_study_dict).data
    for split in ("val", "test"):
        a, b = load_split(clean, split), load_split(noisy, split)
        assert np.array_equal(a.masks, b.masks) and np.array_equal(a.boxes, b.boxes)
    a, b = load_split(clean, "train"), load_split(noisy, "train")
    assert np.array_equal(a.images, b.images)
    assert len(b) < len(a) or not np.array_equal(a.masks, b.masks)


@pytest.mark.parametrize(("key", "value"), [("label_noise_boundary", -1),
                                            ("label_noise_drop", 1.0)])
def test_bad_noise_settings_name_their_key(tiny_study_dict, key, value):
    tiny_study_dict["data"][key] = value
    with pytest.raises(HarnessError, match=f"'data.{key}'"):
        study_from_dict(tiny_study_dict)
