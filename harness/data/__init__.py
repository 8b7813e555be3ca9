"""Datasets: synthetic domains, the array dataset and its cache, prompts from masks."""

from harness.data.dataset import SPLIT_OFFSETS, SegDataset, synthetic_split
from harness.data.prompts import interior_points, jitter_boxes, mask_boxes
from harness.data.synthetic import DOMAINS

__all__ = [
    "DOMAINS", "SPLIT_OFFSETS", "SegDataset", "interior_points", "jitter_boxes", "mask_boxes",
    "synthetic_split",
]
