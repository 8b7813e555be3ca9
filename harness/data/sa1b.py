"""``data.source: sa1b`` — the SA-1B layout: ``sa_123.jpg`` beside ``sa_123.json``.

``data.path`` is the folder the SA-1B tar files were extracted into (sub-folders, e.g. one
per tar, are searched too). Each JSON holds ``annotations``, a list whose entries carry a
``segmentation`` RLE (``size`` [h, w] and compressed ``counts``), decoded with pycocotools.
Only names are listed to index (no JSON is read until a split is decoded); the split comes
from a stable hash of the file's path relative to data.path without its suffix (e.g.
``sa_123``) with ``data.split``. An image without a JSON or a JSON without an image, a JSON
without ``annotations`` or with an annotation lacking ``segmentation.size/counts``, and an
RLE whose size is not the image's are errors naming the file.

SA-1B images hold ~100 overlapping masks (whole objects and their parts); each is one
instance here. Cap the images per split with ``data.max_images``.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from harness.data.coco import decode_rles, rle_of
from harness.data.collect import (
    Decoded,
    Item,
    cached_split,
    cap,
    hash_split,
    name_list,
    real_source_problems,
    resolve,
    safe_stem,
)
from harness.data.files import IMAGE_SUFFIXES, one_line, read_image
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.config import DataConfig

DESCRIBE = "SA-1B image + per-image JSON of RLE masks (data.path: the folder)"


def problems(data: "DataConfig") -> list[tuple[str, str]]:
    return real_source_problems(data, needs_path="the folder of sa_*.jpg + sa_*.json")


def pairs(root: Path) -> list[Item]:
    """(image, JSON) pairs under `root` by stem, from directory entries only."""
    items, unpaired = [], []
    stack = [root]
    while stack:
        folder = stack.pop()
        images, jsons = {}, {}
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir():
                        stack.append(Path(entry.path))
                        continue
                    stem, dot, ext = entry.name.rpartition(".")
                    if not dot:
                        continue
                    if f".{ext.lower()}" in IMAGE_SUFFIXES:
                        images[stem] = Path(entry.path)
                    elif ext.lower() == "json":
                        jsons[stem] = Path(entry.path)
        except OSError as exc:
            raise HarnessError(f"cannot list {folder}: {exc.strerror or exc}") from None
        unpaired += [str(p.relative_to(root)) for s, p in images.items() if s not in jsons]
        unpaired += [str(p.relative_to(root)) for s, p in jsons.items() if s not in images]
        for stem in images.keys() & jsons.keys():
            rel = (folder / stem).relative_to(root).as_posix()
            items.append(Item(rel, (images[stem], jsons[stem]),
                              partial(read_pair, images[stem], jsons[stem])))
    if unpaired:
        raise HarnessError(f"{len(unpaired)} file(s) under {root} lack their image or JSON "
                           f"(sa_N.jpg + sa_N.json): {name_list(unpaired)}")
    if not items:
        raise HarnessError(f"{root} holds no image + JSON pairs (SA-1B layout)")
    return items


def read_pair(image_path: Path, json_path: Path) -> Decoded:
    try:
        data = json.loads(json_path.read_bytes())
    except OSError as exc:
        raise HarnessError(f"cannot read {json_path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{json_path} is not valid JSON: {one_line(exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise HarnessError(f"{json_path} lacks 'annotations' (a list of masks)")
    image = read_image(image_path)
    height, width = image.shape[:2]
    rles = []
    for i, ann in enumerate(data["annotations"]):
        seg = ann.get("segmentation") if isinstance(ann, dict) else None
        if not isinstance(seg, dict) or not {"size", "counts"} <= seg.keys():
            raise HarnessError(f"{json_path}: annotations[{i}] lacks 'segmentation' with "
                               "'size' and 'counts' (an RLE)")
        if list(seg["size"]) != [height, width]:
            raise HarnessError(f"{json_path}: annotations[{i}] is an RLE of size "
                               f"{list(seg['size'])} but {image_path} is {height}×{width}")
        rles.append(rle_of(seg, height, width, f"{json_path}: annotations[{i}]"))
    if not rles:
        raise HarnessError(f"{json_path} has no annotation")
    return Decoded(image, masks=partial(decode_rles, rles, height, width, json_path),
                   count=len(rles))


def load(data: "DataConfig", split: str, cache_dir: Path | None):
    root = resolve(data.path)
    if not root.is_dir():
        raise HarnessError(f"data.path {root} is not a folder")
    items = cap(hash_split(pairs(root), split, data.split), data.max_images)
    settings = {"source": "sa1b", "root": str(root), "split": split,
                "fractions": list(data.split), "max_images": data.max_images}
    return cached_split(cache_dir, f"sa1b-{safe_stem(root.name)}-{split}",
                        f"sa1b-{root.name}-{split}", items, settings, data,
                        f"split {split} of {root} (data.split = {list(data.split)})")
