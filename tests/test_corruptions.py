"""Corrupted evaluation sets: every corruption works, is deterministic, and is cached."""

from __future__ import annotations

import numpy as np
import pytest

from harness.data import corruptions
from harness.data.corruptions import (
    CORRUPTION_GROUPS,
    array_fingerprint,
    build_corruption_cache,
    cache_path,
    corrupt_images,
    corrupted_images,
    corruption_cells,
    resolve_corruptions,
)
from harness.errors import HarnessError

ALL_CELLS = corruption_cells("all")


def make_images(n: int = 3, height: int = 32, width: int = 32) -> np.ndarray:
    """A gradient with a bright square and mild noise: every corruption has something to do."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 200 / width, y * 200 / height, (x + y) * 100 / (height + width)], -1)
    base[height // 4 : height // 2, width // 4 : width // 2] = 230
    noise = rng.normal(0, 8, size=(n, height, width, 3))
    return np.clip(base + noise + 20, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return make_images()


@pytest.fixture(scope="module")
def pool_grid(images, tmp_path_factory) -> dict:
    """The full 19 × 5 grid, built once through a 2-process spawn pool."""
    cache_dir = tmp_path_factory.mktemp("pool-cache")
    return build_corruption_cache(
        images, array_fingerprint(images), ALL_CELLS, cache_dir, workers=2, progress=False
    )


@pytest.fixture
def generations(monkeypatch) -> list:
    """Records every in-process generation of a corrupted batch."""
    calls = []
    real = corruptions.corrupt_images

    def counting(images, corruption, severity, seed=0, start=0):
        calls.append((corruption, severity, seed, start))
        return real(images, corruption, severity, seed, start=start)

    monkeypatch.setattr(corruptions, "corrupt_images", counting)
    return calls


# --------------------------------------------------------------------------- names


def test_groups_match_the_library():
    library = pytest.importorskip("imagecorruptions")
    assert list(CORRUPTION_GROUPS["common"]) == library.get_corruption_names("common")
    assert list(CORRUPTION_GROUPS["extra"]) == library.get_corruption_names("validation")
    assert list(CORRUPTION_GROUPS["all"]) == library.get_corruption_names("all")
    for family in ("noise", "blur", "weather", "digital"):
        assert list(CORRUPTION_GROUPS[family]) == library.get_corruption_names(family)
    assert len(CORRUPTION_GROUPS["common"]) == 15 and len(CORRUPTION_GROUPS["all"]) == 19


def test_resolve_corruptions_expands_groups_in_order_without_duplicates():
    assert resolve_corruptions("noise") == ["gaussian_noise", "shot_noise", "impulse_noise"]
    assert resolve_corruptions("fog, noise,shot_noise") == [
        "fog", "gaussian_noise", "shot_noise", "impulse_noise"
    ]
    assert resolve_corruptions(["extra", "saturate"]) == list(CORRUPTION_GROUPS["extra"])
    assert len(ALL_CELLS) == 19 * 5


@pytest.mark.parametrize(
    "spec", ["gaussian_noize", ["fog", "gaussian_noize"], "noise,gaussian_noize"]
)
def test_unknown_corruption_is_a_harness_error_naming_it(spec):
    with pytest.raises(HarnessError, match="gaussian_noize"):
        resolve_corruptions(spec)


def test_bad_cells_are_harness_errors(images, tmp_path):
    with pytest.raises(HarnessError, match="gaussian_noize"):
        corrupted_images(images, "fp", "gaussian_noize", 1, tmp_path)
    with pytest.raises(HarnessError, match="severity"):
        corrupted_images(images, "fp", "fog", 6, tmp_path)
    with pytest.raises(HarnessError):
        resolve_corruptions("")


# --------------------------------------------------------------------------- the full grid


@pytest.mark.slow
def test_every_corruption_and_severity_through_the_pool(images, pool_grid):
    assert list(pool_grid) == ALL_CELLS
    for (name, severity), out in pool_grid.items():
        assert out.shape == images.shape and out.dtype == np.uint8, (name, severity)
    for name in CORRUPTION_GROUPS["all"]:
        changed = sum(not np.array_equal(pool_grid[name, s], images) for s in range(1, 6))
        assert changed >= 4, f"{name} left the images unchanged at {5 - changed} severities"


@pytest.mark.slow
def test_pool_and_in_process_give_identical_bytes(images, pool_grid):
    for (name, severity), out in pool_grid.items():
        assert np.array_equal(corrupt_images(images, name, severity), out), (name, severity)


# --------------------------------------------------------------------------- determinism


# glass_blur and impulse_noise take their own seed; the rest draw from np.random
RANDOM_ONES = ["gaussian_noise", "glass_blur", "impulse_noise", "frost", "fog", "elastic_transform"]


@pytest.mark.parametrize("name", RANDOM_ONES)
def test_same_seed_same_bytes_other_seed_other_bytes(images, name):
    first = corrupt_images(images, name, 3, seed=0)
    assert np.array_equal(first, corrupt_images(images, name, 3, seed=0))
    assert not np.array_equal(first, corrupt_images(images, name, 3, seed=1))


def test_noise_depends_on_the_image_index_not_on_batching(images):
    whole = corrupt_images(images, "gaussian_noise", 2)
    tail = corrupt_images(images[1:], "gaussian_noise", 2, start=1)
    assert np.array_equal(whole[1:], tail)
    # the same image at another index draws other noise
    assert not np.array_equal(whole[0], corrupt_images(images[:1], "gaussian_noise", 2, start=1)[0])


def test_callers_global_rng_is_left_alone(images):
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    corrupt_images(images[:1], "shot_noise", 1)
    assert np.array_equal(np.random.rand(3), expected)


def test_images_smaller_than_32_px_are_padded_and_cropped_back():
    small = make_images(n=2, height=20, width=28)
    for name in ("zoom_blur", "frost", "gaussian_noise", "pixelate"):
        out = corrupt_images(small, name, 5)
        assert out.shape == small.shape and out.dtype == np.uint8
        assert not np.array_equal(out, small)


# --------------------------------------------------------------------------- caching


def test_cache_is_reused_and_a_new_fingerprint_misses_it(images, tmp_path, generations):
    first = corrupted_images(images, "fp-a", "gaussian_noise", 2, tmp_path)
    path = cache_path(tmp_path, "fp-a", "gaussian_noise", 2)
    assert path.is_file() and len(generations) == 1
    mtime = path.stat().st_mtime_ns

    again = corrupted_images(images, "fp-a", "gaussian_noise", 2, tmp_path)
    assert len(generations) == 1 and path.stat().st_mtime_ns == mtime
    assert np.array_equal(first, again)

    corrupted_images(images, "fp-b", "gaussian_noise", 2, tmp_path)  # "changed dataset"
    assert len(generations) == 2
    assert cache_path(tmp_path, "fp-b", "gaussian_noise", 2).is_file()
    corrupted_images(images, "fp-a", "gaussian_noise", 2, tmp_path, seed=1)
    assert len(generations) == 3

    leftovers = [p.name for p in (tmp_path / "corrupt").iterdir() if p.suffix != ".npy"]
    assert leftovers == []  # no temporary files left behind


def test_build_generates_only_missing_cells_and_batches_agree(images, tmp_path, generations):
    cells = [("fog", 1), ("contrast", 4)]
    build_corruption_cache(images, "fp", cells[:1], tmp_path, workers=1, progress=False)
    out = build_corruption_cache(
        images, "fp", cells, tmp_path, workers=1, progress=False, batch_size=2
    )
    # fog/1 came from the cache; contrast/4 was made in two batches (images 0-1, then 2)
    assert generations == [("fog", 1, 0, 0), ("contrast", 4, 0, 0), ("contrast", 4, 0, 2)]
    assert np.array_equal(out["contrast", 4], corrupt_images(images, "contrast", 4))


def test_a_cache_file_of_another_shape_is_a_miss(images, tmp_path, generations):
    corrupted_images(images, "fp", "brightness", 1, tmp_path)
    out = corrupted_images(images[:2], "fp", "brightness", 1, tmp_path)
    assert out.shape == images[:2].shape and len(generations) == 2


def test_array_fingerprint_tracks_content_and_shape(images):
    assert array_fingerprint(images) == array_fingerprint(images.copy())
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    assert array_fingerprint(changed) != array_fingerprint(images)
    assert array_fingerprint(images.reshape(3, 16, 64, 3)) != array_fingerprint(images)
