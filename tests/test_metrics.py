"""Mask metrics against masks small enough to reason out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.evaluate.metrics import (
    aggregate_shift_table,
    batch_boundary_iou,
    batch_dice,
    batch_iou,
    boundary_iou,
    boundary_width,
    dice,
    iou,
    mask_to_boundary,
)

SCALAR = {"iou": iou, "dice": dice, "biou": boundary_iou}
BATCHED = {"iou": batch_iou, "dice": batch_dice, "biou": batch_boundary_iou}


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def ring(size: int, top: int, left: int, side: int) -> np.ndarray:
    """The one-pixel outer ring of a square."""
    return square(size, top, left, side) & ~square(size, top + 1, left + 1, side - 2)


# --------------------------------------------------------------------------- IoU and Dice


def test_iou_and_dice_of_overlapping_stripes():
    # 4×4: pred = rows 0-1 (8 px), target = rows 1-2 (8 px); they share row 1 (4 px).
    pred = np.zeros((4, 4), dtype=bool)
    pred[0:2] = True
    target = np.zeros((4, 4), dtype=bool)
    target[1:3] = True
    assert iou(pred, target) == pytest.approx(4 / 12)  # union = 8 + 8 - 4
    assert dice(pred, target) == pytest.approx(2 * 4 / 16)


def test_identical_and_disjoint_masks():
    a, b = square(6, 0, 0, 2), square(6, 3, 3, 2)
    for metric in SCALAR.values():
        assert metric(a, a) == 1.0
        assert metric(a, b) == 0.0


@pytest.mark.parametrize("name", SCALAR)
def test_empty_mask_rule(name):
    empty, some = np.zeros((8, 8), dtype=bool), square(8, 2, 2, 3)
    metric = SCALAR[name]
    assert metric(empty, empty) == 1.0  # nothing there, nothing predicted: perfect
    assert metric(empty, some) == 0.0
    assert metric(some, empty) == 0.0


@pytest.mark.parametrize("name", SCALAR)
def test_returns_python_float_for_numpy_and_torch(name):
    a, b = square(12, 1, 1, 6), square(12, 3, 2, 7)
    metric = SCALAR[name]
    from_numpy = metric(a, b)
    from_torch = metric(torch.from_numpy(a), torch.from_numpy(b))
    assert type(from_numpy) is float and type(from_torch) is float
    assert from_numpy == from_torch


def test_invalid_inputs_raise_value_error():
    a = np.zeros((4, 4), dtype=bool)
    with pytest.raises(ValueError, match="differ"):
        iou(a, np.zeros((4, 5), dtype=bool))
    with pytest.raises(ValueError, match="2-D"):
        dice(a[None], a[None])
    with pytest.raises(ValueError, match="boolean"):
        boundary_iou(a.astype(np.uint8), a)
    with pytest.raises(ValueError, match="3-D"):
        batch_iou(torch.from_numpy(a), torch.from_numpy(a))
    with pytest.raises(ValueError, match="boolean"):
        batch_dice(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))


# --------------------------------------------------------------------------- Boundary IoU


def test_boundary_width_follows_the_reference_formula():
    assert boundary_width(10, 10) == 1  # diag 14.14 · 0.02 = 0.28 → round 0 → at least 1
    assert boundary_width(100, 100) == 3  # diag 141.4 · 0.02 = 2.83 → 3
    assert boundary_width(10, 10, dilation_ratio=0.1) == 1  # 1.41 → 1
    assert boundary_width(10, 10, dilation_ratio=0.25) == 4  # 3.54 → 4


def test_boundary_of_a_square_is_its_ring():
    # 10×10, d = 1: the 5×5 square at rows/cols 2..6 erodes to 3×3 at 3..5,
    # so its boundary is the 16-pixel ring.
    band = mask_to_boundary(square(10, 2, 2, 5))
    assert np.array_equal(band, ring(10, 2, 2, 5))
    assert band.sum() == 25 - 9


def test_boundary_iou_of_shifted_squares():
    # 10×10, d = 1. A = rows/cols 2..6, B = rows/cols 3..7 (both 5×5, rings of 16 px).
    # Both rings lie in the overlap 3..6 only where A's ring (row 6 or col 6) meets B's ring
    # (row 3 or col 3): pixels (6, 3) and (3, 6). So |∩| = 2, |∪| = 16 + 16 - 2 = 30.
    a, b = square(10, 2, 2, 5), square(10, 3, 3, 5)
    assert boundary_iou(a, b) == pytest.approx(2 / 30)
    assert iou(a, b) == pytest.approx(16 / 34)  # interiors overlap far more than boundaries


def test_full_image_mask_has_its_border_as_boundary():
    # Outside the image is background, so the full 10×10 mask erodes to rows/cols 1..8:
    # its boundary is the 36 border pixels (100 - 64).
    full = np.ones((10, 10), dtype=bool)
    assert np.array_equal(mask_to_boundary(full), ring(10, 0, 0, 10))
    # The 8×8 square at 1..8 has the ring at rows/cols 1 and 8 (28 px): disjoint from the
    # border ring, although the masks' IoU is 64/100.
    inner = square(10, 1, 1, 8)
    assert boundary_iou(full, inner) == 0.0
    assert iou(full, inner) == pytest.approx(0.64)


def test_full_image_mask_with_wider_band():
    # 100×100: d = 3, so the band is the outer 3 pixels: 100² - 94² = 1164.
    assert mask_to_boundary(np.ones((100, 100), dtype=bool)).sum() == 100**2 - 94**2


def reference_mask_to_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Cheng et al.'s ``mask_to_boundary``, line for line (uint8 in, uint8 out)."""
    cv2 = pytest.importorskip("cv2")
    h, w = mask.shape
    img_diag = np.sqrt(h**2 + w**2)
    dilation = int(round(dilation_ratio * img_diag))
    if dilation < 1:
        dilation = 1
    new_mask = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    kernel = np.ones((3, 3), dtype=np.uint8)
    new_mask_erode = cv2.erode(new_mask, kernel, iterations=dilation)
    mask_erode = new_mask_erode[1 : h + 1, 1 : w + 1]
    return mask - mask_erode


def random_blobs(rng: np.random.Generator, batch: int, h: int, w: int) -> np.ndarray:
    """Blobby random masks (smoothed noise), so boundaries are not just salt and pepper."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.standard_normal((batch, h, w)), sigma=(0, 3, 3))
    return noise > rng.uniform(-0.1, 0.1, size=(batch, 1, 1))


@pytest.mark.parametrize("shape", [(10, 10), (37, 53), (120, 90)])
def test_boundary_matches_the_reference_code(shape):
    masks = random_blobs(np.random.default_rng(1), 4, *shape)
    masks[0] = True  # full image
    for mask in masks:
        expected = reference_mask_to_boundary(mask.astype(np.uint8)).astype(bool)
        assert np.array_equal(mask_to_boundary(mask), expected)


# --------------------------------------------------------------------------- batched


def mask_pairs(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Random blob pairs plus the edge cases: both empty, one empty, full vs blob."""
    rng = np.random.default_rng(7)
    pred, target = random_blobs(rng, 8, *shape), random_blobs(rng, 8, *shape)
    pred[0], target[0] = False, False
    pred[1] = False
    target[2] = False
    pred[3] = True
    return pred, target


def devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("shape", [(10, 10), (37, 53), (150, 150)])
@pytest.mark.parametrize("name", BATCHED)
def test_batched_equals_scalar(name, shape, device):
    pred, target = mask_pairs(shape)
    batched = BATCHED[name](torch.from_numpy(pred).to(device), torch.from_numpy(target).to(device))
    assert batched.shape == (len(pred),) and batched.dtype == torch.float64
    expected = [SCALAR[name](p, t) for p, t in zip(pred, target)]
    assert batched.cpu().tolist() == expected  # exact, not approximate
    assert expected[0] == 1.0 and expected[1] == 0.0 and expected[2] == 0.0


# --------------------------------------------------------------------------- aggregates


def hand_table() -> list[dict]:
    return [
        {"shift": "clean", "severity": 0, "miou": 0.8, "biou": 0.6},
        {"shift": "gaussian_noise", "severity": 1, "miou": 0.6, "biou": 0.4},
        {"shift": "gaussian_noise", "severity": 2, "miou": 0.4, "biou": 0.2},
        {"shift": "fog", "severity": 1, "miou": 0.7, "biou": 0.5},
        {"shift": "fog", "severity": 2, "miou": 0.5, "biou": 0.3},
    ]


def test_aggregate_shift_table_by_hand():
    pd = pytest.importorskip("pandas")
    out = aggregate_shift_table(pd.DataFrame(hand_table()))
    expected = {
        "clean/miou": 0.8,
        "shift/mean/miou": (0.6 + 0.4 + 0.7 + 0.5) / 4,  # 0.55
        "shift/relative/miou": 0.55 / 0.8,
        "shift/relative": 0.55 / 0.8,
        "shift/gaussian_noise/miou": 0.5,
        "shift/fog/miou": 0.6,
        "shift/s1/miou": 0.65,
        "shift/s2/miou": 0.45,
        "clean/biou": 0.6,
        "shift/mean/biou": 0.35,
        "shift/relative/biou": 0.35 / 0.6,
        "shift/gaussian_noise/biou": 0.3,
        "shift/fog/biou": 0.4,
        "shift/s1/biou": 0.45,
        "shift/s2/biou": 0.25,
    }
    assert out.keys() == expected.keys()
    assert out == pytest.approx(expected)
    assert all(type(v) is float for v in out.values())


def test_aggregate_accepts_columns_and_averages_repeated_cells():
    rows = hand_table()
    # a repeated fog/s1 cell (0.7 and 0.9 → 0.8) still weighs as one cell
    rows[3] = {**rows[3], "miou": 0.9}
    rows.append({"shift": "fog", "severity": 1, "miou": 0.7, "biou": 0.5})
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    out = aggregate_shift_table(columns)
    assert out["shift/fog/miou"] == pytest.approx((0.8 + 0.5) / 2)
    assert out["shift/mean/miou"] == pytest.approx((0.6 + 0.4 + 0.8 + 0.5) / 4)


def test_aggregate_rejects_malformed_tables():
    with pytest.raises(ValueError, match="severity"):
        aggregate_shift_table([{"shift": "fog", "severity": 0, "miou": 0.5}])
    with pytest.raises(ValueError, match="shift"):
        aggregate_shift_table([{"severity": 1, "miou": 0.5}])
    with pytest.raises(ValueError, match="metric"):
        aggregate_shift_table([{"shift": "fog", "severity": 1}])
