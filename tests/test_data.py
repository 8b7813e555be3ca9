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


# Hashes of generate(domain, 6, 64, seed=1234) computed before the glyph domains were added:
# adding domains must not change the existing ones (their cache files are keyed by
# GENERATOR_VERSION, which a change here would have to bump).
_OLD_DOMAIN_HASHES = {
    "shapes": "e07a3ef6e3387ce303460b8954b626174abc39c46159f83f73ec817f40f89446",
    "shapes-restyled": "d0cb18a09da36af70e00c56717d3a641a0fdc6039dba0223dec75d5b3395e511",
    "lesions": "0dc2424954fea2194428e3da0fb35d4026818cd346fcf9d69cbc6d26ddd239dd",
}


@pytest.mark.parametrize("domain", sorted(_OLD_DOMAIN_HASHES))
def test_existing_domains_are_unchanged(domain):
    import hashlib

    from harness.data.synthetic import GENERATOR_VERSION

    h = hashlib.sha256()
    for a in generate(domain, 6, 64, 1234, 4):
        h.update(str(a.shape).encode())
        h.update(str(a.dtype).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    assert GENERATOR_VERSION == 4
    assert h.hexdigest() == _OLD_DOMAIN_HASHES[domain]


def test_domain_order_is_append_only():
    # a domain's index seeds its images: existing names keep their positions
    assert DOMAINS[:3] == ("shapes", "shapes-restyled", "lesions")


@pytest.mark.parametrize("domain", ["glyphs", "glyphs-texture"])
def test_glyph_domains_are_not_boxes(domain):
    from scipy import ndimage

    _, masks, owner = generate(domain, 30, 64, seed=2)
    for i in range(30):
        assert masks[owner == i].astype(int).sum(axis=0).max() <= 1  # visible parts disjoint
    boxes = mask_boxes(masks)
    box_area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    fill = masks.sum(axis=(1, 2)) / box_area
    assert np.median(fill) < 0.5  # an ellipse fills π/4 ≈ 0.79 of its box
    holed = [not np.array_equal(ndimage.binary_fill_holes(m), m) for m in masks]
    assert np.mean(holed) > 0.1  # rings (and rings with something in their hole)


def test_loosen_boxes_identity_margin_and_containment():
    from harness.data.prompts import loosen_boxes

    boxes = np.array([[10, 10, 19, 29], [0, 0, 5, 5], [40, 50, 40, 50]], np.float32)
    rng = np.random.default_rng(0)
    same = loosen_boxes(boxes, rng, 0.0, 0.0, (64, 64))
    np.testing.assert_array_equal(same, boxes)
    assert same is not boxes and same.dtype == np.float32
    assert rng.random() == np.random.default_rng(0).random()  # no draw without noise
    # margin only: each side moves out by margin × side (side = x1 - x0 + 1), then clipped
    out = loosen_boxes(boxes, np.random.default_rng(0), 0.1, 0.0, (64, 64))
    np.testing.assert_allclose(out, [[9, 8, 20, 31], [0, 0, 5.6, 5.6],
                                     [39.9, 49.9, 40.1, 50.1]], rtol=0, atol=1e-5)
    np.testing.assert_allclose(loosen_boxes(boxes, np.random.default_rng(0), 1.0, 0.0),
                               [[0, -10, 29, 49], [-6, -6, 11, 11], [39, 49, 41, 51]])
    # with noise: deterministic from the rng, never tighter than the box, inside the image
    a = loosen_boxes(boxes, np.random.default_rng(3), 0.2, 0.3, (60, 64))
    b = loosen_boxes(boxes, np.random.default_rng(3), 0.2, 0.3, (60, 64))
    np.testing.assert_array_equal(a, b)
    assert (a[:, :2] <= boxes[:, :2]).all() and (a[:, 2:] >= boxes[:, 2:]).all()
    assert (a >= 0).all() and (a[:, [0, 2]] <= 63).all() and (a[:, [1, 3]] <= 59).all()
    with pytest.raises(ValueError):
        loosen_boxes(boxes, rng, -0.1, 0.0)


def test_loosen_boxes_noise_is_relative_to_the_side():
    from harness.data.prompts import loosen_boxes

    boxes = np.tile(np.array([[100, 200, 119, 239]], np.float32), (4000, 1))  # 20 × 40
    out = loosen_boxes(boxes, np.random.default_rng(1), 0.5, 0.1)
    push = np.abs(out - boxes)
    side = np.array([20, 40, 20, 40])
    # mean push ≈ margin × side (clipping at 0 is 5 std away), std ≈ noise × side
    np.testing.assert_allclose(push.mean(0) / side, 0.5, atol=0.01)
    np.testing.assert_allclose(push.std(0) / side, 0.1, atol=0.01)
