"""Datasets: synthetic domains, real sources (folder, coco, sa1b, builtin — see
`harness.data.sources.load_split`), the array dataset and its cache, prompts from masks."""

from harness.data.collect import SourceDataset
from harness.data.dataset import SPLIT_OFFSETS, SegDataset, synthetic_split
from harness.data.prompts import interior_points, jitter_boxes, mask_boxes
from harness.data.synthetic import DOMAINS

__all__ = [
    "DOMAINS", "SPLIT_OFFSETS", "SegDataset", "SourceDataset", "interior_points", "jitter_boxes",
    "mask_boxes", "synthetic_split",
]
