"""The box prior as a floor: what a model must beat to have learned anything from the image.

A prior that fills (or inscribes an ellipse in) the prompt box scores well on blob-like
objects with tight boxes, so a fine-tuned run at or below it has not learned to segment: its
robustness ratio would describe the box, not the model. The floor is the best box prior the
study recorded (by test mIoU); the point-disc prior answers another prompt and is not one.
Whether a run *learned* is decided on validation mIoU (the split that chose its
hyperparameters), so the test split never selects which runs are reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.evaluate.priors import BoxFill, EllipseInBox
from harness.report.collect import StudyData
from harness.tracking import schema

BOX_PRIORS = (BoxFill.name, EllipseInBox.name)


@dataclass(frozen=True)
class Floor:
    name: str  # the box prior used
    test_miou: float
    val_miou: float
    candidates: dict[str, float]  # every box prior recorded → its test mIoU

    def describe(self) -> str:
        """"ellipse-in-box (test mIoU 0.662; box-fill 0.611)"."""
        others = "; ".join(f"{n} {v:.3f}" for n, v in self.candidates.items() if n != self.name)
        return f"{self.name} (test mIoU {self.test_miou:.3f}{f'; {others}' if others else ''})"

    def split(self, data: StudyData, runs: pd.DataFrame) -> str:
        """The metric `learned` compares: validation mIoU where the prior and the runs have
        it, else test mIoU."""
        val = data.column(runs, schema.VAL_MIOU)
        return schema.VAL_MIOU if math.isfinite(self.val_miou) and val.notna().any() else \
            schema.TEST_MIOU

    def basis(self, data: StudyData, runs: pd.DataFrame) -> str:
        """`split` in words."""
        return {schema.VAL_MIOU: "validation mIoU", schema.TEST_MIOU: "test mIoU"}[
            self.split(data, runs)]

    def learned(self, data: StudyData, runs: pd.DataFrame) -> pd.Series:
        """Per run: scored above the prior (True), at or below it (False), or unknown (NA)
        for a run without the score (one that failed before being evaluated)."""
        metric = self.split(data, runs)
        floor = self.val_miou if metric == schema.VAL_MIOU else self.test_miou
        values = data.column(runs, metric)
        return (values > floor).astype("boolean").where(values.notna(), pd.NA)

    def above(self, data: StudyData, runs: pd.DataFrame) -> pd.Series:
        """Runs known to have learned (bool; unknown counts as not)."""
        return self.learned(data, runs).fillna(False).astype(bool)

    def at_or_below(self, data: StudyData, runs: pd.DataFrame) -> pd.Series:
        """Runs known not to have learned (bool; unknown counts as not)."""
        return (~self.learned(data, runs)).fillna(False).astype(bool)


def box_floor(data: StudyData) -> Floor | None:
    """The best box prior recorded by the study, or None when it recorded none."""
    refs = data.references
    if refs.empty:
        return None
    priors = refs[(refs["role"] == schema.ROLE_BASELINE) & refs["method"].isin(BOX_PRIORS)]
    test = data.column(priors, schema.TEST_MIOU)
    candidates = {m: float(v) for m, v in zip(priors["method"], test) if math.isfinite(v)}
    if not candidates:
        return None
    best = max(candidates, key=candidates.get)
    row = priors[priors["method"] == best]
    return Floor(best, candidates[best], float(data.column(row, schema.VAL_MIOU).iloc[0]),
                 candidates)
