"""The one way to get a dataset: ``load_split(data_cfg, split)``.

Every consumer — the trial, the shift suite's domain cells, the benches — asks here, so a new
data format is one module plus one entry in :data:`SOURCES`. A source turns the study's
``data:`` section and a split name into a :class:`~harness.data.dataset.SegDataset`, and
names what is wrong with a ``data:`` section it cannot serve (config validation asks).

Sources: ``synthetic`` (procedural, :mod:`harness.data.synthetic`); ``folder`` (images + instance
label maps, :mod:`harness.data.folder`); ``coco`` (:mod:`harness.data.coco`); ``sa1b``
(:mod:`harness.data.sa1b`); ``builtin`` (nuclei, voc, arc shipped in installed packages,
:mod:`harness.data.builtin`). The real ones read ``data.path`` (and ``data.images``,
``data.categories`` for coco), split by ``data.split`` unless the files come split, transform
every image the Segment Anything way to ``data.image_size`` (:mod:`harness.data.transform`),
drop instances under ``data.min_area`` pixels (counted: ``SourceDataset.dropped``), and cache
the decoded split keyed by the files' paths, sizes and mtimes (:mod:`harness.data.collect`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.data import builtin, coco, folder, sa1b
from harness.data.dataset import SPLIT_OFFSETS, SegDataset, synthetic_split
from harness.data.label_noise import with_label_noise
from harness.data.synthetic import DOMAINS
from harness.errors import HarnessError
from harness.home import cache_dir as default_cache_dir

if TYPE_CHECKING:  # the data section's type lives with the rest of the config
    from harness.config import DataConfig

SPLITS = tuple(SPLIT_OFFSETS)


@dataclass(frozen=True)
class Source:
    load: Callable[["DataConfig", str, Path | None], SegDataset]
    problems: Callable[["DataConfig"], list[tuple[str, str]]]  # (key under data., message)
    describe: str


def _synthetic(data: "DataConfig", split: str, cache: Path | None) -> SegDataset:
    sizes = {"train": data.train_size, "val": data.val_size, "test": data.test_size}
    return synthetic_split(data.domain, split, sizes[split], data.image_size, data.seed,
                           data.max_objects, cache)


def _synthetic_problems(data: "DataConfig") -> list[tuple[str, str]]:
    out = []
    if data.domain not in DOMAINS:
        out.append(("domain", f"is {data.domain!r}; choose one of {', '.join(DOMAINS)}"))
    for key in ("image_size", "train_size", "val_size", "test_size", "max_objects"):
        if getattr(data, key) < 1:
            out.append((key, "must be ≥ 1"))
    if getattr(data, "path", None):  # a forgotten `source:` would train on synthetic shapes
        out.append(("path", f"is set but data.source is synthetic; set data.source to one of "
                            f"{', '.join(s for s in SOURCES if s != 'synthetic')}"))
    return out


SOURCES: dict[str, Source] = {
    "synthetic": Source(_synthetic, _synthetic_problems,
                        "procedural domains (data.domain: " + ", ".join(DOMAINS) + ")"),
    # real images; each is transformed the Segment Anything way to data.image_size
    # (harness.data.transform) and cached by content (harness.data.collect)
    "folder": Source(folder.load, folder.problems, folder.DESCRIBE),
    "coco": Source(coco.load, coco.problems, coco.DESCRIBE),
    "sa1b": Source(sa1b.load, sa1b.problems, sa1b.DESCRIBE),
    "builtin": Source(builtin.load, builtin.problems, builtin.DESCRIBE),
}


def load_split(data: "DataConfig", split: str, cache_dir: Path | None = None) -> SegDataset:
    """Split `split` (train, val, test) of the dataset `data` describes; cached under
    `cache_dir` (default: ``$HARNESS_HOME/cache``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if data.source not in SOURCES:
        raise HarnessError(f"unknown data source {data.source!r}; choose one of "
                           f"{', '.join(SOURCES)}")
    dataset = SOURCES[data.source].load(data, split, cache_dir or default_cache_dir())
    if split == "train":  # annotation noise is in what a model learns from, never what scores it
        dataset = with_label_noise(dataset, data.label_noise_boundary, data.label_noise_drop,
                                   seed=data.seed + 7919)
    return dataset.loosened(data.box_margin, data.box_margin_noise,
                            seed=data.seed + SPLIT_OFFSETS[split])


def load_splits(data: "DataConfig", splits=SPLITS,
                cache_dir: Path | None = None) -> dict[str, SegDataset]:
    return {split: load_split(data, split, cache_dir) for split in splits}


def domain_data(study_data: "DataConfig", domain: str) -> "DataConfig":
    """The ``data:`` section of a shift set named in ``evaluate.domains``: a synthetic domain
    name (made like the study's own data), or a dataset spec ``SOURCE:PATH`` of any source
    (``builtin:voc``, ``folder:/data/other-lab``), every image of which is a test image, at
    the study's image size."""
    source, sep, path = domain.partition(":")
    if not sep:
        return dataclasses.replace(study_data, domain=domain)
    return dataclasses.replace(study_data, source=source, path=path, split=[0.0, 0.0, 1.0],
                               images=None, categories=[], max_images=None)


def domain_problems(study_data: "DataConfig", domain: str) -> list[str]:
    """What is wrong with one ``evaluate.domains`` entry (empty if nothing)."""
    if ":" not in domain:
        return [] if domain in DOMAINS else [
            f"has {domain!r}; use a synthetic domain ({', '.join(DOMAINS)}) or SOURCE:PATH "
            f"with a source of {', '.join(SOURCES)}"]
    data = domain_data(study_data, domain)
    if data.source not in SOURCES:
        return [f"has {domain!r}: unknown source {data.source!r} (sources: "
                f"{', '.join(SOURCES)})"]
    return [f"has {domain!r}: data.{key} {message}"
            for key, message in SOURCES[data.source].problems(data)]
