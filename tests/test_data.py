"""Synthetic domains: deterministic, cached, sensible instances; prompts from masks."""

import numpy as np
import pytest

from harness.data import (
    DOMAINS, SegDataset, interior_points, jitter_boxes, mask_boxes, synthetic_split,
)
from harness.data.synthetic import MIN_VISIBLE_FRACTION, generate


@pytest.mark.parametrize("domain", DOMAINS)
def test_generation_is_deterministic_and_seed_dependent(domain):
    a = generate(domain, 3, 48, seed=5)
    b = generate(domain, 3, 48, seed=5)
    c = generate(domain, 3, 48, seed=6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    images, masks, owner = a
    assert images.dtype == np.uint8 and images.shape == (3, 48, 48, 3)
    assert masks.dtype == bool and masks.shape[1:] == (48, 48) and len(owner) == len(masks)
    assert set(owner) == {0, 1, 2}  # every image has at least one instance
    assert (masks.mean(axis=(1, 2)) >= MIN_VISIBLE_FRACTION).all()


def test_instances_of_one_image_do_not_overlap():
    _, masks, owner = generate("shapes", 4, 64, seed=1)
    for i in range(4):
        own = masks[owner == i].astype(int)
        assert own.sum(axis=0).max() <= 1  # occlusion: visible parts are disjoint


def test_image_i_does_not_depend_on_dataset_size():
    small = generate("shapes", 2, 32, seed=3)[0]
    large = generate("shapes", 4, 32, seed=3)[0]
    np.testing.assert_array_equal(small, large[:2])


def test_split_cache_roundtrip_and_distinct_splits(tmp_path):
    first = synthetic_split("shapes", "train", 3, 32, 0, 3, tmp_path)
    files = list((tmp_path / "data").glob("*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = synthetic_split("shapes", "train", 3, 32, 0, 3, tmp_path)
    assert files[0].stat().st_mtime_ns == mtime  # read, not regenerated
    assert again.fingerprint == first.fingerprint
    val = synthetic_split("shapes", "val", 3, 32, 0, 3, tmp_path)
    assert val.fingerprint != first.fingerprint


def test_fingerprint_tracks_content():
    images, masks, owner = generate("lesions", 2, 32, seed=0)
    a = SegDataset(images, masks, owner, "a")
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    assert SegDataset(changed, masks, owner, "b").fingerprint != a.fingerprint
    assert SegDataset(images.copy(), masks, owner, "c").fingerprint == a.fingerprint


def test_boxes_points_and_jitter():
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 6:10, 0:2] = True
    np.testing.assert_array_equal(mask_boxes(masks), [[3, 2, 8, 4], [0, 6, 1, 9]])
    points = interior_points(masks)
    assert all(masks[k, int(y), int(x)] for k, (x, y) in enumerate(points))
    boxes = mask_boxes(masks)
    np.testing.assert_array_equal(jitter_boxes(boxes, np.random.default_rng(0), 0.0), boxes)
    moved = jitter_boxes(boxes, np.random.default_rng(0), 0.1, max_pixels=2.0,
                         image_size=(10, 12))
    assert not np.array_equal(moved, boxes) and np.abs(moved - boxes).max() <= 2.0
    assert (moved[:, 0] <= moved[:, 2]).all() and (moved[:, 1] <= moved[:, 3]).all()
    again = jitter_boxes(boxes, np.random.default_rng(0), 0.1, max_pixels=2.0, image_size=(10, 12))
    np.testing.assert_array_equal(moved, again)
