"""Evaluation under distribution shift: every shifted cell of a test set in one long table.

A *shift spec* (``evaluate.shifts`` in a study) names what to shift:

- corruption names and groups of :data:`harness.data.corruptions.CORRUPTION_GROUPS`
  (``gaussian_noise``, ``noise``, ``common``, ``all``, ...), each evaluated at every severity
  of ``evaluate.severities``. ``all`` means the 19 corruptions, nothing else;
- ``domain``: the same model on the test split of other synthetic domains
  (``evaluate.domains``, minus the training domain);
- ``prompt``: the clean images with worse prompts: tight boxes jittered at each level of
  ``evaluate.box_jitter_levels``, and a single positive point instead of a box.

:func:`evaluate_shifts` returns one row per cell (plus the ``clean`` reference row);
:func:`shift_metrics` flattens that table into MLflow metric names.

Every cell is scored on the same images as the clean row: the first ``evaluate.shift_images``
test images (all when None), so a drop from the clean row is the shift's doing and not a
different sample. Corrupted sets are generated once, in parallel, and cached on disk
(see :mod:`harness.data.corruptions`); a second evaluation only reads them back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from harness.data import SegDataset
from harness.data.corruptions import build_corruption_cache, corruption_cells
from harness.data.shifts import SHIFT_GROUPS, resolve_shifts
from harness.data.sources import domain_data, load_split
from harness.evaluate.metrics import CLEAN, METRICS, aggregate_shift_table
from harness.evaluate.score_cache import ScoreCache
from harness.evaluate.segment import mean_scores, predict_dataset, score_masks
from harness.tracking import schema

if TYPE_CHECKING:  # evaluation reads a config; the config module imports the registries here
    from harness.config import StudyConfig

KINDS = (CLEAN, "corruption", "domain", "prompt")
"""Values of the table's ``kind`` column."""

COLUMNS = ("shift", "kind", "severity", "level", *METRICS, "n_masks")
"""Columns of the table :func:`evaluate_shifts` returns, in order."""

CELL_METRICS = ("miou", "biou")
"""Metrics :func:`shift_metrics` reports per cell; means over cells cover all of METRICS."""


# --------------------------------------------------------------------------- the spec


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class _Cell:
    """One row to compute: which data (built when evaluated) and which prompts."""
    shift: str
    kind: str
    severity: int
    data: Callable[[], SegDataset]
    prompt: str = "box"
    box_jitter: float = 0.0
    level: float = math.nan


def _constant(dataset: SegDataset) -> SegDataset:
    return dataset


def _corrupted(clean: SegDataset, images: np.ndarray, name: str) -> SegDataset:
    # The cache hands out read-only memory maps; torch refuses to wrap non-writable arrays
    # without a warning, and one cell's copy in memory at a time is cheap.
    return clean.with_images(np.array(images), name)


def _domain_test(cfg: StudyConfig, domain: str, cache_dir: Path) -> SegDataset:
    """Another domain's test split, made like the study's own and cut like the clean row."""
    split = load_split(domain_data(cfg.data, domain), "test", cache_dir)
    return split.first_images(cfg.evaluate.shift_images)


def _plan(cfg: StudyConfig, clean: SegDataset, plan: dict, cache_dir: Path,
          progress: bool) -> list[_Cell]:
    """Every cell of the plan, clean first; generates the missing corrupted sets up front."""
    ev = cfg.evaluate
    cells = [_Cell(CLEAN, CLEAN, 0, partial(_constant, clean))]
    grid = corruption_cells(plan["corruptions"], ev.severities) if plan["corruptions"] else []
    if grid:
        # one call for all missing cells: the worker pool is started once and kept busy
        corrupted = build_corruption_cache(
            clean.images, fingerprint=clean.fingerprint, cells=grid, cache_dir=cache_dir,
            seed=cfg.data.seed, workers=ev.workers, progress=progress,
        )
        cells += [
            _Cell(name, "corruption", severity,
                  partial(_corrupted, clean, corrupted[name, severity],
                          f"{clean.name}-{name}-s{severity}"))
            for name, severity in grid
        ]
    if plan["domain"]:
        cells += [_Cell(f"domain:{domain}", "domain", 0, partial(_domain_test, cfg, domain,
                                                                 cache_dir))
                  for domain in dict.fromkeys(ev.domains) if domain != cfg.data.domain]
    if plan["prompt"]:
        cells += [_Cell("prompt:box_jitter", "prompt", index, partial(_constant, clean),
                        box_jitter=level, level=float(level))
                  for index, level in enumerate(ev.box_jitter_levels, start=1)]
        cells.append(_Cell("prompt:point", "prompt", 0, partial(_constant, clean),
                           prompt="point"))
    return cells


def _cell_scores(model: torch.nn.Module, cell: _Cell, data: SegDataset, cfg: StudyConfig,
                 cache: ScoreCache | None) -> dict[str, np.ndarray]:
    """Per-mask scores of one cell: read back when these weights scored this cell before."""
    batch_size = cfg.train.eval_batch_size
    device = next(model.parameters()).device.type
    identity = (f"{data.fingerprint}|{data.boxes_digest}|{cell.prompt}|{cell.box_jitter!r}|"
                f"{cfg.data.seed}|{batch_size}|{device}")
    scores = cache.get(identity) if cache is not None else None
    if scores is None:
        pred = predict_dataset(model, data, cell.prompt, cell.box_jitter, seed=cfg.data.seed,
                               batch_size=batch_size)
        scores = score_masks(pred, data)
        if cache is not None:
            cache.put(identity, scores)
    return scores


def evaluate_shifts(model: torch.nn.Module, cfg: StudyConfig, test: SegDataset,
                    cache_dir: Path, shifts: list[str] | None = None,
                    progress: bool = True, reuse_scores: bool = True) -> pd.DataFrame:
    """Evaluate ``model`` on ``test`` clean and under every shift of ``shifts``.

    ``shifts`` defaults to ``cfg.evaluate.shifts`` (see :func:`resolve_shifts`). Returns one
    row per cell with the columns of :data:`COLUMNS`:

    ========== ===============================================================================
    shift      ``clean``, a corruption name, ``domain:<name>``, ``prompt:box_jitter`` or
               ``prompt:point``
    kind       ``clean`` | ``corruption`` | ``domain`` | ``prompt``
    severity   0 for clean, domain and point rows; 1..5 for corruptions; the 1-based level
               index for box jitter
    level      the box jitter level (a fraction of the box side); NaN on other rows
    miou ...   mean IoU, Dice and Boundary IoU over the cell's masks
    n_masks    how many masks the cell scored
    ========== ===============================================================================

    Prompts are the dataset's boxes (tight, or loose per ``data.box_margin``) except on the
    prompt rows, which jitter those boxes or click the mask. Every box-jitter level draws the same
    noise (seeded with ``cfg.data.seed``) scaled by its level, so levels differ by the noise
    size alone. Same model, config and data → the same table, bit for bit.

    With ``reuse_scores`` a cell these exact weights already scored is read back from
    ``cache_dir/scores`` (see :mod:`harness.evaluate.score_cache`) instead of recomputed.
    """
    from tqdm.auto import tqdm

    plan = resolve_shifts(cfg.evaluate.shifts if shifts is None else shifts)
    clean = test.first_images(cfg.evaluate.shift_images)
    cache = ScoreCache(cache_dir, model) if reuse_scores else None
    rows = []
    for cell in tqdm(_plan(cfg, clean, plan, Path(cache_dir), progress), desc="shifts",
                     unit="cell", disable=not progress):
        data = cell.data()
        scores = mean_scores(_cell_scores(model, cell, data, cfg, cache))
        rows.append({"shift": cell.shift, "kind": cell.kind, "severity": cell.severity,
                     "level": cell.level, **{m: scores[m] for m in METRICS},
                     "n_masks": len(data)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


# --------------------------------------------------------------------------- metric names

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. ]")


def _cell_metric_name(kind: str, shift: str, severity: int) -> Callable[[str], str]:
    """metric → its MLflow name for one cell (names from :mod:`harness.tracking.schema`)."""
    detail = _UNSAFE.sub("_", shift.partition(":")[2])  # domain:lesions → lesions
    if kind == "corruption":
        return partial(schema.corruption_metric, shift, severity)
    if kind == "domain":
        return partial(schema.domain_metric, detail)
    if detail == "box_jitter":
        return partial(schema.jitter_metric, severity)
    return schema.point_metric


def shift_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Flatten an :func:`evaluate_shifts` table into MLflow metrics (a pure function).

    - ``shift/clean/<m>`` and the corruption summaries of
      :func:`~harness.evaluate.metrics.aggregate_shift_table`: ``shift/mean/<m>``,
      ``shift/relative/<m>``, ``shift/relative`` (mean corrupted mIoU / clean mIoU),
      ``shift/<corruption>/<m>`` (mean over severities), ``shift/s<k>/<m>`` (mean over
      corruptions), for every metric column present;
    - per cell, for ``m`` in :data:`CELL_METRICS`: ``shift/<corruption>/s<k>/<m>``,
      ``shift/domain/<name>/<m>``, ``shift/prompt/box_jitter/l<k>/<m>`` (k = level index),
      ``shift/prompt/point/<m>``;
    - ``shift/domain/<name>/relative``: the domain's mIoU / clean mIoU (NaN if clean is 0).

    Rows repeating a cell are averaged first, as the aggregate does.
    """
    metrics = [m for m in METRICS if m in table.columns]
    cells = table.groupby(["kind", "shift", "severity"], as_index=False, sort=False)[
        metrics].mean()

    summary = aggregate_shift_table(cells[cells["kind"].isin([CLEAN, "corruption"])])
    # "clean/miou" alone would read as the study's test score; it is the shift subset's
    out = {(f"shift/{key}" if key.startswith(f"{CLEAN}/") else key): value
           for key, value in summary.items()}
    clean_miou = summary.get(f"{CLEAN}/miou")

    for cell in cells[cells["kind"] != CLEAN].itertuples(index=False):
        name = _cell_metric_name(cell.kind, cell.shift, int(cell.severity))
        for m in CELL_METRICS:
            if m in metrics:
                out[name(m)] = float(getattr(cell, m))
        if cell.kind == "domain" and clean_miou is not None and "miou" in metrics:
            out[name("relative")] = cell.miou / clean_miou if clean_miou else math.nan
    return out


__all__ = [
    "CELL_METRICS", "COLUMNS", "KINDS", "SHIFT_GROUPS", "evaluate_shifts",
    "resolve_shifts", "shift_metrics",
]
