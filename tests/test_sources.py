"""Real data sources through `load_split`: folder, coco, sa1b, builtin.

Tiny fixtures of each format are written to tmp dirs; masks are checked pixel-exactly against
the drawn shapes after the Segment Anything transform (longest side to data.image_size, zero
pad bottom/right, nearest for masks). Shapes have even coordinates and the images shrink by
exactly 2, so the expected masks are the shapes with halved coordinates.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_utils

from harness.cli import cli
from harness.config import DataConfig, study_from_dict
from harness.data import SegDataset, SourceDataset, builtin, coco, files, folder
from harness.data.collect import quotas, split_of
from harness.data.sources import load_split
from harness.data.transform import transform_image, transform_nearest
from harness.errors import HarnessError

H, W = 32, 48  # fixture images; image_size 24 halves them to 16×24, padded to 24×24
SIZE = 24
# (y0, y1, x0, x1) on the full image: even, so halving is exact under nearest
RECTS = [(2, 12, 4, 20), (14, 30, 24, 44), (20, 22, 2, 4)]  # the last: 1 px after halving


def rect(y0, y1, x0, x1, shape=(H, W)):
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def expected(y0, y1, x0, x1, size=SIZE):
    """The rectangle after the transform: halved, padded to size × size."""
    return rect(y0 // 2, y1 // 2, x0 // 2, x1 // 2, (size, size))


def picture(seed=0, shape=(H, W)):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def label_map(values, dtype):
    labels = np.zeros((H, W), dtype=dtype)
    for value, r in zip(values, RECTS):
        labels[rect(*r)] = value
    return labels


def cfg(source, path, **kw):
    return DataConfig(source=source, path=str(path), image_size=SIZE, **kw)


def masks_of(ds: SegDataset, image_id: str) -> np.ndarray:
    return ds.masks[ds.owner == ds.image_ids.index(image_id)]


def assert_same_masks(got: np.ndarray, want: list[np.ndarray]) -> None:
    """Equal mask sets, pixel for pixel (instances come in label-value order)."""
    assert len(got) == len(want)
    key = lambda m: m.tobytes()
    for g, w in zip(sorted(got, key=key), sorted(want, key=key)):
        np.testing.assert_array_equal(g, w)


# ---------------------------------------------------------------- folder
@pytest.fixture
def flat_folder(tmp_path):
    """8-bit PNG, 16-bit PNG and 16-bit TIFF label maps; RGB, 16-bit gray and JPEG images."""
    root = tmp_path / "flat"
    save_png(root / "images" / "a.png", picture(0))
    save_png(root / "masks" / "a.png", label_map([1, 7, 9], np.uint8))
    gray16 = np.random.default_rng(1).integers(1000, 3000, (H, W), dtype=np.uint16)
    tifffile.imwrite(root / "images" / "b.tif", gray16)
    save_png(root / "masks" / "b.png", label_map([300, 40000, 5], np.uint16))  # I;16 PNG
    Image.fromarray(picture(2)).save(root / "images" / "c.JPG")
    tifffile.imwrite(root / "masks" / "c.tiff", label_map([65535, 2, 3], np.uint16))
    return root


def test_folder_masks_are_pixel_exact_after_transform(flat_folder, tmp_path):
    ds = load_split(cfg("folder", flat_folder, split=[1.0, 0.0, 0.0], min_area=4), "train",
                    tmp_path / "cache")
    assert isinstance(ds, SourceDataset) and isinstance(ds, SegDataset)
    assert ds.image_ids == ("a", "b", "c")
    assert ds.images.shape == (3, SIZE, SIZE, 3) and ds.masks.shape[1:] == (SIZE, SIZE)
    for image_id in ds.image_ids:  # the third rectangle is 1 px after halving: dropped
        assert_same_masks(masks_of(ds, image_id), [expected(*RECTS[0]), expected(*RECTS[1])])
    assert ds.dropped == 3 and ds.dropped_images == 0
    assert (ds.images[:, 16:] == 0).all()  # padded at the bottom
    np.testing.assert_array_equal(ds.images[0], transform_image(picture(0), SIZE))


def test_min_area_zero_keeps_small_instances(flat_folder):
    ds = load_split(cfg("folder", flat_folder, split=[1.0, 0.0, 0.0], min_area=0), "train",
                    None)
    assert_same_masks(masks_of(ds, "a"), [expected(*r) for r in RECTS])
    assert ds.dropped == 0


def test_sixteen_bit_and_gray_images_are_min_max_scaled():
    gray16 = np.array([[1000, 2000], [3000, 1000]], dtype=np.uint16)
    rgb = files.to_rgb_uint8(gray16)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[..., 0], [[0, 128], [255, 0]])
    assert (rgb[..., 0] == rgb[..., 2]).all()
    np.testing.assert_array_equal(files.to_rgb_uint8(np.full((2, 2), 7, np.uint16)), 0)
    rgba = np.full((2, 2, 4), [10, 20, 30, 40], np.uint8)
    np.testing.assert_array_equal(files.to_rgb_uint8(rgba)[0, 0], [10, 20, 30])


def test_transform_longest_side_then_pad():
    image = np.full((10, 40, 3), 200, np.uint8)
    out = transform_image(image, 20)
    assert out.shape == (20, 20, 3)
    assert (out[:5] == 200).all() and (out[5:] == 0).all()
    labels = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(transform_nearest(labels, 8)[:6], np.repeat(
        np.repeat(labels, 2, 0), 2, 1))  # upscaling repeats pixels
    assert (transform_nearest(labels, 8)[6:] == 0).all()


def test_folder_hash_split_is_stable_and_disjoint(tmp_path):
    root = tmp_path / "many"
    stems = [f"img{i:02d}" for i in range(30)]
    for stem in stems:
        save_png(root / "images" / f"{stem}.png", picture(1, (8, 8)))
        labels = np.zeros((8, 8), np.uint8)
        labels[2:6, 2:6] = 1
        save_png(root / "masks" / f"{stem}.png", labels)
    fractions = [0.5, 0.25, 0.25]
    data = DataConfig(source="folder", path=str(root), image_size=8, split=fractions,
                      min_area=1)
    got = {s: load_split(data, s, tmp_path / "cache").image_ids for s in ("train", "val",
                                                                        "test")}
    assert sorted(sum(got.values(), ())) == stems  # every image in exactly one split
    for split, ids in got.items():
        assert ids and all(split_of(stem, fractions) == split for stem in ids)
    data.max_images = 3
    capped = load_split(data, "train", tmp_path / "cache").image_ids
    assert len(capped) == 3 and set(capped) <= set(got["train"])


def test_folder_split_subfolders(tmp_path):
    root = tmp_path / "splits"
    for i, split in enumerate(("train", "val", "test")):
        for j in range(i + 1):
            save_png(root / split / "images" / f"{split}{j}.png", picture(i + j))
            save_png(root / split / "masks" / f"{split}{j}.png", label_map([1, 2], np.uint8))
    for i, split in enumerate(("train", "val", "test")):
        ds = load_split(cfg("folder", root), split, tmp_path / "cache")
        assert ds.image_ids == tuple(f"{split}{j}" for j in range(i + 1))
        np.testing.assert_array_equal(masks_of(ds, f"{split}0")[1], expected(*RECTS[1]))


def test_second_load_hits_the_cache_and_a_changed_file_misses(flat_folder, tmp_path,
                                                              monkeypatch):
    data = cfg("folder", flat_folder, split=[1.0, 0.0, 0.0])
    cache = tmp_path / "cache"
    first = load_split(data, "train", cache)
    assert len(list((cache / "data").glob("folder-*.npz"))) == 1

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although the split is cached")

    monkeypatch.setattr(files, "read_image", no_decoding)
    monkeypatch.setattr(folder, "read_image", no_decoding)
    second = load_split(data, "train", cache)
    assert second.fingerprint == first.fingerprint and second.image_ids == first.image_ids
    assert second.dropped == first.dropped
    monkeypatch.undo()
    save_png(flat_folder / "images" / "a.png", picture(9))  # new content: a new key
    third = load_split(data, "train", cache)
    assert third.fingerprint != first.fingerprint
    assert len(list((cache / "data").glob("folder-*.npz"))) == 2


_OPENED: list[str] = []
_WATCH: list[str] = []


def _audit(event, args):
    if event == "open" and _WATCH and isinstance(args[0], (str, bytes, Path)):
        path = str(args[0] if not isinstance(args[0], bytes) else args[0].decode())
        if path.startswith(_WATCH[0]):
            _OPENED.append(path)


sys.addaudithook(_audit)


def test_ten_thousand_files_index_in_seconds_without_opening_them(tmp_path):
    root = tmp_path / "big"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    buf = tmp_path / "one.png"
    save_png(buf, np.full((8, 8), 1, np.uint8))
    blob = buf.read_bytes()
    for i in range(10_000):
        (root / "images" / f"{i:05d}.png").write_bytes(blob)
        (root / "masks" / f"{i:05d}.png").write_bytes(blob)
    data = DataConfig(source="folder", path=str(root), image_size=8)
    _WATCH[:] = [str(root)]
    try:
        started = time.perf_counter()
        sizes = {s: len(folder.index(data, s)[0]) for s in ("train", "val", "test")}
        elapsed = time.perf_counter() - started
    finally:
        _WATCH.clear()
    assert _OPENED == []  # indexing lists names: no file is opened
    assert sum(sizes.values()) == 10_000 and 7_500 < sizes["train"] < 8_500
    assert elapsed < 20, f"indexing 10,000 files took {elapsed:.1f} s"


@pytest.mark.parametrize("make, needle", [
    ("garbage_image", "cannot read image {root}/images/a.png"),
    ("mask_size", "mask {root}/masks/a.png is 16×16 but its image {root}/images/a.png"),
    ("empty_mask", "mask {root}/masks/a.png has no instance"),
    ("colour_mask", "mask {root}/masks/a.png is a RGB image"),
    ("unmasked", "7 image(s) in {root}/images have no mask"),
    ("orphan_mask", "1 mask(s) in {root}/masks have no image"),
    ("two_stems", "several files with one stem: a.png / a.tif"),
    ("no_folder", "data.path {root}/nowhere is not a folder"),
    ("no_masks_dir", "has no masks/"),
])
def test_bad_folder_data_raises_naming_the_file(tmp_path, make, needle):
    root = tmp_path / "bad"
    save_png(root / "images" / "a.png", picture(0))
    save_png(root / "masks" / "a.png", label_map([1], np.uint8))
    path = root
    if make == "garbage_image":
        (root / "images" / "a.png").write_bytes(b"not a png at all")
    elif make == "mask_size":
        save_png(root / "masks" / "a.png", np.ones((16, 16), np.uint8))
    elif make == "empty_mask":
        save_png(root / "masks" / "a.png", np.zeros((H, W), np.uint8))
    elif make == "colour_mask":
        save_png(root / "masks" / "a.png", picture(0))
    elif make == "unmasked":
        for i in range(7):
            save_png(root / "images" / f"lonely{i}.png", picture(i))
    elif make == "orphan_mask":
        save_png(root / "masks" / "ghost.png", label_map([1], np.uint8))
    elif make == "two_stems":
        tifffile.imwrite(root / "images" / "a.tif", picture(0))
    elif make == "no_folder":
        path = root / "nowhere"
    elif make == "no_masks_dir":
        for f in (root / "masks").iterdir():
            f.unlink()
        (root / "masks").rmdir()
    with pytest.raises(HarnessError) as err:
        load_split(cfg("folder", path, split=[1.0, 0.0, 0.0]), "train", tmp_path / "cache")
    message = str(err.value)
    assert "\n" not in message
    assert needle.format(root=root) in message, message
    if make == "unmasked":  # the first few are named, the rest counted
        assert "lonely0.png, lonely1.png, lonely2.png, lonely3.png" in message
        assert "lonely4.png and 2 more" in message


def test_bad_folder_through_the_cli_exits_2(home, tmp_path, tiny_study_dict):
    root = tmp_path / "bad"
    save_png(root / "images" / "a.png", picture(0))
    save_png(root / "masks" / "a.png", np.ones((16, 16), np.uint8))
    tiny_study_dict["data"] = {"source": "folder", "path": str(root), "image_size": 32,
                               "split": [1.0, 0.0, 0.0]}
    tiny_study_dict["methods"].pop("asam")
    study = tmp_path / "bad-folder.yaml"
    study.write_text(yaml.safe_dump(tiny_study_dict))
    result = CliRunner().invoke(cli, ["study", "run", str(study), "--quiet", "--n-trials", "1"],
                                catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(root / "masks" / "a.png") in lines[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("data, key", [
    ({"source": "folder"}, "data.path"),
    ({"source": "folder", "path": "x", "split": [0.8, 0.3, 0.1]}, "data.split"),
    ({"source": "folder", "path": "x", "split": [0.5, 0.5]}, "data.split"),
    ({"source": "folder", "path": "x", "min_area": -1}, "data.min_area"),
    ({"source": "folder", "path": "x", "categories": ["cat"]}, "data.categories"),
    ({"source": "sa1b", "path": "x", "images": "y"}, "data.images"),
    ({"source": "coco"}, "data.path"),
    ({"source": "builtin", "path": "mnist"}, "data.path"),
    ({"source": "builtin", "path": "nuclei", "max_images": 0}, "data.max_images"),
    ({"domain": "shapes", "path": "/data/x"}, "data.path"),  # forgot `source:`
])
def test_config_names_the_wrong_data_key(tiny_study_dict, data, key):
    tiny_study_dict["data"] = data
    with pytest.raises(HarnessError, match=f"key '{key}'"):
        study_from_dict(tiny_study_dict, source="s.yaml")


def test_default_data_section_still_valid(tiny_study_dict):
    cfg_ = study_from_dict(tiny_study_dict)
    assert cfg_.data.source == "synthetic" and cfg_.data.path is None
    assert cfg_.data.split == [0.8, 0.1, 0.1] and cfg_.data.min_area == 16
    tiny_study_dict["data"] = {"source": "coco", "path": "ann.json", "images": "img",
                               "categories": ["cat"], "split": [1, 0, 0]}
    assert study_from_dict(tiny_study_dict).data.split == [1.0, 0.0, 0.0]


# ---------------------------------------------------------------- coco
def rle_json(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def polygon(y0, y1, x0, x1):  # pycocotools fills [x0, x1) × [y0, y1) for these corners
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


@pytest.fixture
def coco_set(tmp_path):
    root = tmp_path / "coco"
    save_png(root / "img" / "one.png", picture(3))
    save_png(root / "img" / "two.png", picture(4))
    anns = [
        {"id": 1, "image_id": 10, "category_id": 1, "segmentation": polygon(*RECTS[0])},
        {"id": 2, "image_id": 10, "category_id": 2, "segmentation": rle_json(rect(*RECTS[1]))},
        {"id": 3, "image_id": 10, "category_id": 1, "iscrowd": 1,
         "segmentation": rle_json(rect(0, 32, 0, 48))},
        {"id": 4, "image_id": 20, "category_id": 1,
         "segmentation": uncompressed_rle(rect(*RECTS[1]))},
        {"id": 5, "image_id": 20, "category_id": 2, "segmentation": polygon(*RECTS[2])},
    ]
    doc = {"images": [{"id": 10, "file_name": "one.png", "height": H, "width": W},
                      {"id": 20, "file_name": "two.png", "height": H, "width": W},
                      {"id": 30, "file_name": "unannotated.png", "height": H, "width": W}],
           "annotations": anns,
           "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "lid"}]}
    path = root / "annotations.json"
    path.write_text(json.dumps(doc))
    return path


def test_coco_polygon_rle_and_crowd(coco_set, tmp_path, monkeypatch):
    data = cfg("coco", coco_set, images=str(coco_set.parent / "img"), split=[1.0, 0.0, 0.0],
               min_area=4)
    ds = load_split(data, "train", tmp_path / "cache")
    assert ds.image_ids == ("one.png", "two.png")  # the unannotated image is not in it
    one, two = masks_of(ds, "one.png"), masks_of(ds, "two.png")
    assert len(one) == 2  # the crowd annotation is skipped
    np.testing.assert_array_equal(one[0], expected(*RECTS[0]))  # polygon
    np.testing.assert_array_equal(one[1], expected(*RECTS[1]))  # compressed RLE
    assert len(two) == 1 and ds.dropped == 1  # the 1-px polygon is below min_area
    np.testing.assert_array_equal(two[0], expected(*RECTS[1]))  # uncompressed RLE
    np.testing.assert_array_equal(ds.images[0], transform_image(picture(3), SIZE))

    def no_parsing(path):
        raise AssertionError("parsed the JSON although the split is cached")

    monkeypatch.setattr(coco, "load_json", no_parsing)
    warm = load_split(data, "train", tmp_path / "cache")  # neither JSON nor images read
    assert warm.fingerprint == ds.fingerprint and warm.image_ids == ds.image_ids


def test_coco_category_filter_and_per_split_files(coco_set, tmp_path):
    data = cfg("coco", coco_set, images=str(coco_set.parent / "img"), split=[1.0, 0.0, 0.0],
               categories=["lid"], min_area=0)
    ds = load_split(data, "train", None)
    assert ds.image_ids == ("one.png", "two.png") and len(ds) == 2
    np.testing.assert_array_equal(masks_of(ds, "two.png")[0], expected(*RECTS[2]))
    data.categories = ["zebra"]
    with pytest.raises(HarnessError, match="'zebra', not a category of .*annotations.json"):
        load_split(data, "train", None)
    # one JSON per split: {split} in data.path
    doc = json.loads(coco_set.read_text())
    for split in ("train", "val"):
        (coco_set.parent / f"ann_{split}.json").write_text(json.dumps(doc))
    per_split = cfg("coco", coco_set.parent / "ann_{split}.json",
                    images=str(coco_set.parent / "img"), min_area=0)
    assert load_split(per_split, "val", None).image_ids == ("one.png", "two.png")
    with pytest.raises(HarnessError, match="ann_test.json is not a file"):
        load_split(per_split, "test", None)


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.pop("annotations"), "lacks 'annotations'"),
    (lambda d: d["images"][0].pop("height"), "images[0] lacks 'height'"),
    (lambda d: d["annotations"][0].pop("segmentation"), "annotations[0] lacks 'segmentation'"),
    (lambda d: d["annotations"][0].update(image_id=99), "image_id 99, which is not in"),
    (lambda d: d["annotations"][1]["segmentation"].update(size=[5, 5]), "RLE of size [5, 5]"),
    (lambda d: d["images"][0].update(width=50), "one.png is 32×48 but"),
])
def test_bad_coco_raises_naming_the_json(coco_set, tmp_path, edit, needle):
    doc = json.loads(coco_set.read_text())
    edit(doc)
    coco_set.write_text(json.dumps(doc))
    data = cfg("coco", coco_set, images=str(coco_set.parent / "img"), split=[1.0, 0.0, 0.0])
    with pytest.raises(HarnessError) as err:
        load_split(data, "train", tmp_path / "cache")
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert str(coco_set) in str(err.value) or "one.png" in str(err.value)


def test_coco_not_json(tmp_path):
    bad = tmp_path / "ann.json"
    bad.write_text("{not json")
    with pytest.raises(HarnessError, match=f"{bad} is not valid JSON"):
        load_split(cfg("coco", bad), "train", None)


# ---------------------------------------------------------------- sa1b
@pytest.fixture
def sa1b_folder(tmp_path):
    root = tmp_path / "sa1b"
    for n, seed in ((1, 5), (2, 6)):
        save_png(root / f"sa_{n}.png", picture(seed))  # SA-1B ships JPEG; PNG keeps it exact
        anns = [{"id": i, "segmentation": rle_json(rect(*r)), "area": int(rect(*r).sum())}
                for i, r in enumerate(RECTS)]
        (root / f"sa_{n}.json").write_text(json.dumps(
            {"image": {"image_id": n, "width": W, "height": H, "file_name": f"sa_{n}.jpg"},
             "annotations": anns}))
    (root / "sub").mkdir()
    Image.fromarray(picture(7)).save(root / "sub" / "sa_3.jpg", quality=95)
    (root / "sub" / "sa_3.json").write_text(json.dumps(
        {"annotations": [{"segmentation": rle_json(rect(*RECTS[0]))}]}))
    return root


def test_sa1b_rle_masks(sa1b_folder, tmp_path):
    ds = load_split(cfg("sa1b", sa1b_folder, split=[1.0, 0.0, 0.0], min_area=4), "train",
                    tmp_path / "cache")
    assert ds.image_ids == ("sa_1", "sa_2", "sub/sa_3")
    for image_id in ("sa_1", "sa_2"):
        got = masks_of(ds, image_id)
        assert len(got) == 2
        np.testing.assert_array_equal(got[0], expected(*RECTS[0]))
        np.testing.assert_array_equal(got[1], expected(*RECTS[1]))
    np.testing.assert_array_equal(masks_of(ds, "sub/sa_3")[0], expected(*RECTS[0]))  # JPEG
    assert ds.dropped == 2
    np.testing.assert_array_equal(ds.images[0], transform_image(picture(5), SIZE))


@pytest.mark.parametrize("make, needle", [
    ("no_annotations", "sa_1.json lacks 'annotations'"),
    ("no_counts", "sa_1.json: annotations[0] lacks 'segmentation'"),
    ("no_json", "lack their image or JSON (sa_N.jpg + sa_N.json): sa_1.png"),
    ("wrong_size", "sa_1.json: annotations[0] is an RLE of size [8, 8]"),
])
def test_bad_sa1b_raises_naming_the_file(sa1b_folder, tmp_path, make, needle):
    js = sa1b_folder / "sa_1.json"
    if make == "no_annotations":
        js.write_text(json.dumps({"image": {}}))
    elif make == "no_counts":
        js.write_text(json.dumps({"annotations": [{"segmentation": {"size": [H, W]}}]}))
    elif make == "no_json":
        js.unlink()
    elif make == "wrong_size":
        js.write_text(json.dumps({"annotations": [{"segmentation": rle_json(
            np.ones((8, 8), bool))}]}))
    with pytest.raises(HarnessError) as err:
        load_split(cfg("sa1b", sa1b_folder, split=[1.0, 0.0, 0.0]), "train", None)
    assert needle in str(err.value), str(err.value)


# ---------------------------------------------------------------- builtin
def test_builtin_nuclei_splits_hold_disjoint_whole_nuclei(tmp_path):
    image, labels = builtin.nuclei_arrays()
    assert labels.shape == (512, 512) and len(np.unique(labels)) - 1 == 125
    fractions = [0.8, 0.1, 0.1]
    layout = builtin.nuclei_layout(fractions)
    assert layout["bands"] == {"train": (0, 384), "val": (384, 448), "test": (448, 512)}
    ids = {split: set(v) for split, v in layout["ids"].items()}
    crossing = set(layout["crossing"])
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"]
                or ids["val"] & ids["test"])
    assert sum(map(len, ids.values())) + len(crossing) == 125
    for value in crossing:  # really in two bands; every kept nucleus in one only
        rows = np.nonzero(labels == value)[0]
        assert rows.min() // 64 != rows.max() // 64
    crop = builtin.NUCLEI_CROP
    data = DataConfig(source="builtin", path="nuclei", image_size=crop, min_area=0,
                      split=fractions)
    counts = {}
    for split in ("train", "val", "test"):
        ds = load_split(data, split, tmp_path / "cache")
        seen = set()
        for i, image_id in enumerate(ds.image_ids):
            r, c = (int(x) for x in image_id.removeprefix("nuclei-r").split("c"))
            assert layout["bands"][split][0] <= r * crop < layout["bands"][split][1]
            window = (slice(r * crop, (r + 1) * crop), slice(c * crop, (c + 1) * crop))
            np.testing.assert_array_equal(ds.images[i], image[window])
            cut = np.where(np.isin(labels[window], list(crossing)), 0, labels[window])
            values = [v for v in np.unique(cut) if v]
            want = np.stack([cut == v for v in values])
            np.testing.assert_array_equal(ds.masks[ds.owner == i], want)
            seen.update(values)
        assert seen == ids[split]  # each split holds exactly its band's whole nuclei
        counts[split] = (len(ds.images), len(ds))
    assert counts["train"][0] <= 48 and counts["val"][0] <= 8 and counts["test"][0] <= 8
    assert counts == {"train": (48, 159), "val": (6, 13), "test": (7, 21)}


def test_builtin_nuclei_max_images_keeps_a_fixed_subset_of_crops(tmp_path):
    full = DataConfig(source="builtin", path="nuclei", image_size=64, min_area=0)
    capped = DataConfig(source="builtin", path="nuclei", image_size=64, min_area=0,
                        max_images=12)
    every = load_split(full, "train", tmp_path / "cache")
    some = load_split(capped, "train", tmp_path / "cache")  # same cache: a key of its own
    again = load_split(capped, "train", tmp_path / "other-cache")
    assert len(every.images) == 48 and len(some.images) == 12
    assert some.image_ids == again.image_ids  # fixed: the same crops from a fresh cache
    assert set(some.image_ids) < set(every.image_ids)
    for i, image_id in enumerate(some.image_ids):
        j = every.image_ids.index(image_id)
        np.testing.assert_array_equal(some.images[i], every.images[j])
        np.testing.assert_array_equal(some.masks[some.owner == i], every.masks[every.owner == j])


@pytest.mark.parametrize("name, shape, count", [("voc", (375, 500), 19),
                                                ("arc", (480, 640), 8)])
def test_builtin_photos_split_their_instances(name, shape, count, tmp_path):
    image, masks = builtin.photo_arrays(name)
    assert image.shape == (*shape, 3) and masks.shape == (count, *shape)
    size = max(shape)  # identity resize: masks compare directly
    data = DataConfig(source="builtin", path=name, image_size=size, min_area=0)
    got = [load_split(data, s, tmp_path / "cache") for s in ("train", "val", "test")]
    assert [len(d) for d in got] == quotas(count, [0.8, 0.1, 0.1])
    union = np.concatenate([d.masks[:, :shape[0], :shape[1]] for d in got])
    assert len({m.tobytes() for m in union}) == count  # disjoint, together every instance
    assert {m.tobytes() for m in union} == {m.tobytes() for m in masks}
    for d in got:
        np.testing.assert_array_equal(d.images[0, :shape[0]], image)
    shift_set = DataConfig(source="builtin", path=name, image_size=64, split=[0, 0, 1])
    assert len(load_split(shift_set, "test", tmp_path / "cache")) <= count
    with pytest.raises(HarnessError, match="no instances"):
        load_split(shift_set, "train", tmp_path / "cache")


def test_quotas():
    assert quotas(8, [0.8, 0.1, 0.1]) == [6, 1, 1]
    assert quotas(19, [0.8, 0.1, 0.1]) == [15, 2, 2]
    assert quotas(5, [0, 0, 1]) == [0, 0, 5]
    assert quotas(2, [0.8, 0.1, 0.1]) == [2, 0, 0]
