"""What every section builder gets (`Context`) and the helpers they share.

A section builder is `build(ctx) -> Section`. It must never raise on missing data: a study
with a failed method, no shifts, no probes or no ensemble is a valid study, and the section
says what is missing in a sentence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import pandas as pd

from harness.data.corruptions import CORRUPTION_GROUPS
from harness.report.collect import REFERENCE, StudyData
from harness.report.document import Section
from harness.report.floor import Floor, box_floor
from harness.report.loaders import artifact_tables
from harness.report.stats import Estimate, mean_ci
from harness.tracking import schema
from harness.tracking.schema import (
    corruption_metric,
    metric_column,
    parse_corruption_metric,
    shift_metric,
)

FAMILIES = ("noise", "blur", "weather", "digital", "extra")
ALL_CORRUPTIONS = CORRUPTION_GROUPS["all"]
MIOU = "miou"  # the score every shift section shows per cell
CLEAN_MIOU = shift_metric("clean", MIOU)  # the shift suite's own images, unshifted
_METRIC_PREFIX = metric_column("")
T = TypeVar("T")


def new_section(module_name: str) -> Section:
    """The empty section of module `module_name`, numbered by its place in `sections.ORDER`
    so that reordering the sections renumbers them."""
    from harness.report.sections import ORDER  # the package imports this module

    index = [m.__name__ for m in ORDER].index(module_name)
    return Section(index + 1, ORDER[index].TITLE)


def recorded_metrics(runs: pd.DataFrame) -> list[str]:
    """Names of the metrics that at least one run of `runs` recorded."""
    return [c.removeprefix(_METRIC_PREFIX) for c in runs.columns
            if c.startswith(_METRIC_PREFIX) and runs[c].notna().any()]


@dataclass
class ShiftFilter:
    """Which shifts the report shows (`--shifts`); None fields mean "all recorded"."""
    corruptions: tuple[str, ...] | None = None
    domain: bool = True
    prompt: bool = True

    @classmethod
    def parse(cls, spec: list[str] | None) -> "ShiftFilter":
        if not spec:
            return cls()
        from harness.evaluate.shifts import resolve_shifts

        plan = resolve_shifts(spec)  # HarnessError naming an unknown shift
        return cls(tuple(plan["corruptions"]), plan["domain"], plan["prompt"])

    @property
    def filtered(self) -> bool:
        return self.corruptions is not None


@dataclass
class Context:
    data: StudyData
    colors: dict[str, str]
    shifts: ShiftFilter
    draw: bool  # figures wanted (pdf or png); tables are always built
    # what is read or computed once per report (several sections and the title page ask)
    _cache: dict = field(default_factory=dict, repr=False)

    def cached(self, key: Hashable, compute: Callable[[], T]) -> T:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    @property
    def floor(self) -> Floor | None:
        """The best box prior the study recorded, or None."""
        return self.cached("floor", lambda: box_floor(self.data))

    def mask_scores(self, method: str) -> pd.DataFrame | None:
        """Per test mask (rows in the study's mask order): its image and its IoU averaged
        over the method's final runs; None when a run lacks the artifact or the runs do not
        score the same masks (then nothing pairs)."""
        return self.cached(("masks", method),
                           lambda: _mean_scores(self.data, self.data.final(method)))

    @property
    def methods(self) -> list[str]:
        return self.data.methods

    @property
    def present(self) -> list[str]:
        """Shown methods that have at least one successful final run."""
        return [m for m in self.methods if len(self.data.final(m))]

    @property
    def reference_ok(self) -> bool:
        return len(self.data.final(REFERENCE)) > 0

    def values(self, method: str, metric: str) -> pd.Series:
        runs = self.data.final(method)
        return self.data.column(runs, metric)

    def estimate(self, method: str, metric: str) -> Estimate:
        return mean_ci(self.values(method, metric))

    def cells(self) -> list[tuple[str, int]]:
        """(corruption, severity) cells recorded for some final run, in ImageNet-C order."""
        found = set()
        for name in recorded_metrics(self.data.final()):
            cell = parse_corruption_metric(name)
            if cell and cell[2] == MIOU and cell[0] in ALL_CORRUPTIONS:
                found.add(cell[:2])
        if self.shifts.filtered:
            found = {c for c in found if c[0] in self.shifts.corruptions}
        return sorted(found, key=lambda c: (ALL_CORRUPTIONS.index(c[0]), c[1]))

    def corruptions(self) -> list[str]:
        return list(dict.fromkeys(c for c, _ in self.cells()))

    def severities(self) -> list[int]:
        return sorted({s for _, s in self.cells()})

    def cell_mean(self, runs: pd.DataFrame, cells: list[tuple[str, int]]) -> pd.Series:
        """Per run, the mean mIoU over `cells` (NaN for a run that has none of them)."""
        cols = [corruption_metric(c, s, MIOU) for c, s in cells]
        if not cols:
            return pd.Series(math.nan, index=runs.index)
        return pd.concat([self.data.column(runs, c) for c in cols], axis=1).mean(axis=1)

    def failed_sentences(self) -> list[str]:
        out = []
        for method in self.methods:
            reason = self.data.failure(method)
            if reason:
                out.append(f"Method {method} failed: {reason}. It has no final runs, so it "
                           f"appears with n = 0 and no values.")
        return out


def _mean_scores(data: StudyData, runs: pd.DataFrame) -> pd.DataFrame | None:
    if runs.empty:
        return None
    tables = artifact_tables(data, runs, schema.scores_artifact("test"))
    if tables.empty or tables["run_id"].nunique() != len(runs):
        return None
    first = tables[tables["run_id"] == runs["run_id"].iloc[0]]
    per_run = [t.reset_index(drop=True) for _, t in tables.groupby("run_id", sort=False)]
    if any(len(t) != len(first) or not np.array_equal(t["image"], first["image"])
           for t in per_run):
        return None
    return pd.DataFrame({"mask": first["mask"].to_numpy(), "image": first["image"].to_numpy(),
                         "iou": np.mean([t["iou"].to_numpy(float) for t in per_run], axis=0)})


def run_values(ctx: Context, runs: pd.DataFrame, metric: str, relative: bool) -> pd.Series:
    """Per run of `runs`: the metric, or its ratio to AdamW's mean over its final seeds.
    With --shifts the shifted mean (and its ratio to clean) is over the selected cells."""
    if ctx.shifts.filtered and metric in (schema.SHIFT_MEAN_MIOU, schema.SHIFT_RELATIVE):
        shifted = ctx.cell_mean(runs, ctx.cells())
        if metric == schema.SHIFT_MEAN_MIOU:
            return shifted
        return shifted / ctx.data.column(runs, CLEAN_MIOU)
    values = ctx.data.column(runs, metric)
    if not relative:
        return values
    ref = ctx.data.column(ctx.data.final(REFERENCE), metric).mean()
    return values / ref if ref and math.isfinite(ref) else values * math.nan


def family_of(corruption: str) -> str:
    for family in FAMILIES:
        if corruption in CORRUPTION_GROUPS[family]:
            return family
    return "other"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
