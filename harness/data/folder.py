"""``data.source: folder`` — images with instance label maps, one pair per stem.

Layout (``data.path`` = ROOT)::

    ROOT/images/<stem>.{png,jpg,jpeg,tif,tiff}     the image (8/16-bit, gray or colour)
    ROOT/masks/<stem>.{png,tif,tiff}               its instance label map (8/16-bit):
                                                   0 background, each other value one instance

or the same under ``ROOT/train/``, ``ROOT/val/``, ``ROOT/test/`` (then those folders are the
splits and ``data.split`` is not used). Without split folders, the split comes from a stable
hash of the stem and ``data.split`` (see :mod:`harness.data.collect`).

Indexing lists the two folders (names only, nothing opened or stat'ed), so tens of thousands
of files index in well under a second; the split is then decoded, transformed and cached.
An image without a mask (or a mask without an image), two images with one stem, a file that
cannot be read, a mask whose size differs from its image, and a mask with no instance are
errors naming the files. Extensions are matched case-insensitively; hidden files and other
extensions are ignored.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from harness.data.collect import (
    SPLITS,
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
from harness.data.files import IMAGE_SUFFIXES, MASK_SUFFIXES, read_image, read_label_map
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.config import DataConfig

DESCRIBE = ("images + instance label maps (data.path: ROOT with images/ and masks/, "
            "optionally under train/ val/ test/)")


def problems(data: "DataConfig") -> list[tuple[str, str]]:
    return real_source_problems(data, needs_path="the folder holding images/ and masks/")


def list_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """stem → path of the files in `folder` with one of `suffixes` (directory entries only:
    no file is opened or stat'ed)."""
    out: dict[str, Path] = {}
    twice = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, dot, ext = entry.name.rpartition(".")
                if entry.name.startswith(".") or not dot or f".{ext.lower()}" not in suffixes:
                    continue
                if not entry.is_file():
                    continue
                if stem in out:
                    twice.append(" / ".join(sorted((out[stem].name, entry.name))))
                out[stem] = Path(entry.path)
    except OSError as exc:
        raise HarnessError(f"cannot list {folder}: {exc.strerror or exc}") from None
    if twice:
        raise HarnessError(f"{folder} holds several files with one stem: {name_list(twice)}")
    return out


def pair_files(folder: Path) -> list[Item]:
    """Every (image, mask) pair of `folder`/images and `folder`/masks as an item."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    for sub in (images_dir, masks_dir):
        if not sub.is_dir():
            raise HarnessError(f"folder dataset {folder} has no {sub.name}/ (expected "
                               "ROOT/images + ROOT/masks, or ROOT/{train,val,test}/images + "
                               "masks)")
    images = list_files(images_dir, IMAGE_SUFFIXES)
    masks = list_files(masks_dir, MASK_SUFFIXES)
    if not images:
        raise HarnessError(f"{images_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    unmasked = [images[s].name for s in images.keys() - masks.keys()]
    if unmasked:
        raise HarnessError(f"{len(unmasked)} image(s) in {images_dir} have no mask in "
                           f"{masks_dir}: {name_list(unmasked)}")
    orphans = [masks[s].name for s in masks.keys() - images.keys()]
    if orphans:
        raise HarnessError(f"{len(orphans)} mask(s) in {masks_dir} have no image in "
                           f"{images_dir}: {name_list(orphans)}")
    return [Item(stem, (images[stem], masks[stem]), partial(read_pair, images[stem],
                                                            masks[stem]))
            for stem in images]


def read_pair(image_path: Path, mask_path: Path) -> Decoded:
    image = read_image(image_path)
    labels = read_label_map(mask_path)
    if labels.shape != image.shape[:2]:
        raise HarnessError(f"mask {mask_path} is {labels.shape[0]}×{labels.shape[1]} but its "
                           f"image {image_path} is {image.shape[0]}×{image.shape[1]}")
    if not labels.any():
        raise HarnessError(f"mask {mask_path} has no instance (every pixel is 0, background)")
    return Decoded(image, labels=labels)


def split_folders(root: Path) -> list[str]:
    return [s for s in SPLITS if (root / s).is_dir()]


def index(data: "DataConfig", split: str) -> tuple[list[Item], bool]:
    """The items of `split` (capped by data.max_images) and whether split folders gave them."""
    root = resolve(data.path)
    if not root.is_dir():
        raise HarnessError(f"data.path {root} is not a folder")
    present = split_folders(root)
    if present:
        if (root / "images").is_dir():
            raise HarnessError(f"{root} has both images/ and {'/, '.join(present)}/; keep "
                               "either one folder or one folder per split")
        if split not in present:
            raise HarnessError(f"{root} has {'/, '.join(present)}/ but no {split}/ "
                               f"(split folders: {', '.join(SPLITS)})")
        return cap(pair_files(root / split), data.max_images), True
    return cap(hash_split(pair_files(root), split, data.split), data.max_images), False


def load(data: "DataConfig", split: str, cache_dir: Path | None):
    root = resolve(data.path)
    items, by_folder = index(data, split)
    settings = {"source": "folder", "root": str(root), "split": split,
                "fractions": None if by_folder else list(data.split),
                "max_images": data.max_images}
    what = (f"split folder {root / split}" if by_folder
            else f"split {split} of {root} (data.split = {list(data.split)})")
    return cached_split(cache_dir, f"folder-{safe_stem(root.name)}-{split}",
                        f"folder-{root.name}-{split}", items, settings, data, what)
