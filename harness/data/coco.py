"""``data.source: coco`` — a COCO instance-segmentation annotation file and its images.

``data.path`` is the annotation JSON, ``data.images`` the image folder (default: the JSON's
folder); an image's ``file_name`` is taken relative to it. Polygons, uncompressed RLE and
compressed RLE segmentations are decoded with ``pycocotools``; crowd annotations
(``iscrowd: 1``) are skipped; ``data.categories`` (names) keeps only those categories. Images
left with no annotation are not part of the dataset.

Splits: by default one JSON holds everything and the split comes from a stable hash of each
image's ``file_name`` with ``data.split``. A JSON per split is also supported: put
``{split}`` in ``data.path`` (and in ``data.images`` if the folders differ too), e.g.
``annotations/instances_{split}.json`` + ``images/{split}`` — then every image of the split's
file belongs to the split and ``data.split`` is not used.

Required keys: top level ``images`` and ``annotations`` (and ``categories`` when filtering);
each image ``id``, ``file_name``, ``height``, ``width``; each annotation ``image_id`` and
``segmentation`` (and ``category_id`` when filtering). A missing key, an annotation of an
unknown image, an RLE of another size, and an image file of a size other than the JSON says
are errors naming the JSON (and the image).

The parsed index of a split is cached (keyed by the JSON's path, size and mtime), so loading
a split again reads neither the JSON nor the images when nothing changed.
"""

from __future__ import annotations

import json
import warnings
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.atomic import atomic_write
from harness.data.collect import (
    MASK_CHUNK,
    Decoded,
    Item,
    build_items,
    cached,
    cap,
    digest,
    file_stamps,
    hash_split,
    real_source_problems,
    resolve,
    safe_stem,
)
from harness.data.files import one_line, read_image
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.config import DataConfig

DESCRIBE = ("COCO instance annotations (data.path: the JSON, or one per split with {split}; "
            "data.images: the image folder; data.categories: optional filter)")
SPLIT_FIELD = "{split}"


def problems(data: "DataConfig") -> list[tuple[str, str]]:
    out = real_source_problems(data, needs_path="the annotation JSON",
                               reads=("images", "categories"))
    if data.path and data.images and SPLIT_FIELD in data.images and SPLIT_FIELD not in data.path:
        out.append(("images", "has {split} but data.path does not; put {split} in the "
                              "annotation file's name too (one JSON per split)"))
    return out


def load_json(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except OSError as exc:
        raise HarnessError(f"cannot read COCO annotations {path}: "
                           f"{exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path} is not valid JSON: {one_line(exc)}") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: a COCO file is a JSON object with images and annotations")
    return data


def _require(record, keys, json_path: Path, where: str) -> None:
    if not isinstance(record, dict):
        raise HarnessError(f"{json_path}: {where} is not an object")
    for key in keys:
        if key not in record:
            raise HarnessError(f"{json_path}: {where} lacks '{key}'")


def parse(json_path: Path, categories: list[str]) -> tuple[dict, dict[int, list], int]:
    """(image id → image record, image id → its kept annotations, crowd annotations skipped)."""
    data = load_json(json_path)
    _require(data, ("images", "annotations") + (("categories",) if categories else ()),
             json_path, "the file")
    for key in ("images", "annotations"):
        if not isinstance(data[key], list):
            raise HarnessError(f"{json_path}: '{key}' must be a list")
    keep_ids = None
    if categories:
        by_name = {}
        for i, cat in enumerate(data["categories"]):
            _require(cat, ("id", "name"), json_path, f"categories[{i}]")
            by_name[cat["name"]] = cat["id"]
        unknown = [c for c in categories if c not in by_name]
        if unknown:
            raise HarnessError(f"data.categories has {', '.join(map(repr, unknown))}, not a "
                               f"category of {json_path} (it has: "
                               f"{', '.join(sorted(by_name)[:20])})")
        keep_ids = {by_name[c] for c in categories}
    images = {}
    for i, image in enumerate(data["images"]):
        _require(image, ("id", "file_name", "height", "width"), json_path, f"images[{i}]")
        images[image["id"]] = image
    anns: dict[int, list] = {}
    crowd = 0
    for i, ann in enumerate(data["annotations"]):
        _require(ann, ("image_id", "segmentation") + (("category_id",) if keep_ids else ()),
                 json_path, f"annotations[{i}]")
        if ann["image_id"] not in images:
            raise HarnessError(f"{json_path}: annotations[{i}] is of image_id "
                               f"{ann['image_id']!r}, which is not in its images")
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        if keep_ids is not None and ann["category_id"] not in keep_ids:
            continue
        anns.setdefault(ann["image_id"], []).append(ann)
    return images, anns, crowd


def rle_of(segmentation, height: int, width: int, where: str):
    """A pycocotools RLE of one segmentation (polygons, uncompressed or compressed RLE) of an
    image of height × width; None for an empty polygon list. `where` names it in errors."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if not polygons:
            return None
        try:
            return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        except (TypeError, ValueError) as exc:
            raise HarnessError(f"{where} has a bad polygon: {one_line(exc)}") from None
    if isinstance(segmentation, dict) and {"size", "counts"} <= segmentation.keys():
        if list(segmentation["size"]) != [height, width]:
            raise HarnessError(f"{where} is an RLE of size {list(segmentation['size'])}, not "
                               f"the image's [{height}, {width}]")
        if isinstance(segmentation["counts"], list):  # uncompressed RLE
            return mask_utils.frPyObjects(segmentation, height, width)
        return {"size": [height, width], "counts": segmentation["counts"]}
    raise HarnessError(f"{where}: segmentation must be polygons or an RLE with size and counts")


def decode_rles(rles: list, height: int, width: int, source: Path):
    """Chunks (H, W, n) of decoded masks (None → an empty mask)."""
    from pycocotools import mask as mask_utils

    for start in range(0, len(rles), MASK_CHUNK):
        chunk = rles[start:start + MASK_CHUNK]
        real = [r for r in chunk if r is not None]
        try:
            with warnings.catch_warnings():  # pycocotools' own __array__ under NumPy 2
                warnings.simplefilter("ignore", DeprecationWarning)
                decoded = mask_utils.decode(real) if real else None
        except (TypeError, ValueError) as exc:
            raise HarnessError(f"{source}: cannot decode an RLE: {one_line(exc)}") from None
        out = np.zeros((height, width, len(chunk)), dtype=np.uint8)
        j = 0
        for i, r in enumerate(chunk):
            if r is not None:
                out[..., i] = decoded[..., j]
                j += 1
        yield out


def read_image_anns(image_path: Path, record: dict, anns: list, json_path: Path) -> Decoded:
    height, width = int(record["height"]), int(record["width"])
    image = read_image(image_path)
    if image.shape[:2] != (height, width):
        raise HarnessError(f"image {image_path} is {image.shape[0]}×{image.shape[1]} but "
                           f"{json_path} gives {height}×{width}")
    rles = [rle_of(a["segmentation"], height, width,
                   f"{json_path}: annotation {a.get('id', '?')} (image_id {a['image_id']})")
            for a in anns]
    return Decoded(image, masks=partial(decode_rles, rles, height, width, json_path),
                   count=len(rles))


def _paths(data: "DataConfig", split: str) -> tuple[Path, Path, bool]:
    per_split = SPLIT_FIELD in data.path
    json_path = resolve(data.path.replace(SPLIT_FIELD, split))
    images = (resolve(data.images.replace(SPLIT_FIELD, split)) if data.images
              else json_path.parent)
    return json_path, images, per_split


def items_of(data: "DataConfig", split: str) -> list[Item]:
    """The split's images (with their annotations) as items, capped by data.max_images."""
    json_path, image_dir, per_split = _paths(data, split)
    records, anns, _ = parse(json_path, list(data.categories))
    items = [Item(str(records[i]["file_name"]),
                  (image_dir / str(records[i]["file_name"]),),
                  partial(read_image_anns, image_dir / str(records[i]["file_name"]),
                          records[i], anns[i], json_path))
             for i in records if i in anns]
    if not per_split:
        items = hash_split(items, split, data.split)
    return cap(items, data.max_images)


def load(data: "DataConfig", split: str, cache_dir: Path | None):
    json_path, image_dir, per_split = _paths(data, split)
    if not json_path.is_file():
        raise HarnessError(f"data.path {json_path} is not a file (the COCO annotation JSON)")
    settings = {"source": "coco", "split": split, "images": str(image_dir),
                "categories": list(data.categories), "max_images": data.max_images,
                "fractions": None if per_split else list(data.split),
                "json": file_stamps([json_path])}
    stem = f"coco-{safe_stem(json_path.stem)}-{split}"
    name = f"coco-{json_path.stem}-{split}"
    what = (f"{json_path}" if per_split
            else f"split {split} of {json_path} (data.split = {list(data.split)})")
    # the split's file list, so that a warm load neither parses the JSON nor decodes images
    index_path = None if cache_dir is None else (
        Path(cache_dir) / "data" / "index" / f"{stem}-{digest(settings)}.json")
    files = None
    if index_path is not None and index_path.is_file():
        try:
            files = [Path(p) for p in json.loads(index_path.read_text())]
        except (OSError, ValueError):
            files = None
    items = None
    if files is None:
        items = items_of(data, split)
        files = [path for item in items for path in item.files]
        if index_path is not None:
            with atomic_write(index_path) as f:
                f.write(json.dumps([str(p) for p in files]).encode())
    if not files:
        raise HarnessError(f"{what} holds no annotated images")
    key = {"settings": settings, "image_size": data.image_size, "min_area": data.min_area,
           "files": file_stamps(files)}

    def build():
        todo = items if items is not None else items_of(data, split)
        return build_items(name, todo, data.image_size, data.min_area, what)

    return cached(cache_dir, stem, key, name, build)
