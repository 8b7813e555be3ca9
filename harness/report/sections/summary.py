"""One row per method — accuracy, robustness and cost, mean [95 % CI] with n."""

from __future__ import annotations

import math

import pandas as pd

from harness.report.collect import REFERENCE
from harness.report.document import Section, Table
from harness.report.sections.base import CLEAN_MIOU, Context, new_section
from harness.report.stats import mean_ci, paired
from harness.tracking import schema

TITLE = "Summary"

# (column, metric, relative to AdamW?)
COLUMNS = (
    ("clean mIoU", schema.TEST_MIOU, False),
    ("mean shifted mIoU", schema.SHIFT_MEAN_MIOU, False),
    ("relative robustness", schema.SHIFT_RELATIVE, False),
    ("Boundary IoU", schema.split_metric("test", "biou"), False),
    ("train cost ×AdamW", schema.COST_TRAIN, True),
    ("peak memory ×AdamW", schema.COST_MEMORY, True),
    ("inference cost ×AdamW", schema.COST_INFER, True),
)
SLUGS = {"clean mIoU": "clean_miou", "mean shifted mIoU": "shifted_miou",
         "relative robustness": "relative_robustness", "Boundary IoU": "boundary_iou",
         "train cost ×AdamW": "train_cost_x_adamw", "peak memory ×AdamW": "peak_memory_x_adamw",
         "inference cost ×AdamW": "inference_cost_x_adamw"}


def run_values(ctx: Context, method: str, metric: str, relative: bool) -> pd.Series:
    """Per final run of `method`: the metric, or its ratio to AdamW's mean over its seeds."""
    runs = ctx.data.final(method)
    if ctx.shifts.filtered and metric in (schema.SHIFT_MEAN_MIOU, schema.SHIFT_RELATIVE):
        # --shifts: the shifted mean is over the selected corruption cells only
        shifted = ctx.cell_mean(runs, ctx.cells())
        if metric == schema.SHIFT_MEAN_MIOU:
            return shifted
        return shifted / ctx.data.column(runs, CLEAN_MIOU)
    values = ctx.data.column(runs, metric)
    if not relative:
        return values
    ref = ctx.data.column(ctx.data.final(REFERENCE), metric).mean()
    return values / ref if ref and math.isfinite(ref) else values * math.nan


HEADLINE = (("clean mIoU", schema.TEST_MIOU), ("mean shifted mIoU", schema.SHIFT_MEAN_MIOU),
            ("relative robustness", schema.SHIFT_RELATIVE))


def headline(ctx: Context) -> list[str]:
    """One sentence per method: its paired Δ vs AdamW on the headline numbers, and its cost."""
    if not ctx.reference_ok:
        return []
    out = []
    for method in (m for m in ctx.present if m != REFERENCE):
        parts = []
        for label, metric in HEADLINE:
            mine = dict(zip(ctx.data.final(method)["seed"], run_values(ctx, method, metric,
                                                                        False)))
            ref = dict(zip(ctx.data.final(REFERENCE)["seed"],
                           run_values(ctx, REFERENCE, metric, False)))
            test = paired(mine, ref)
            if test.diff.n:
                parts.append(f"{label} Δ {test.diff.text('+.3f')}{test.marks}")
            else:  # nothing to pair (e.g. one ensemble run): state both means
                a, b = mean_ci(list(mine.values())), mean_ci(list(ref.values()))
                if a.n and b.n:
                    parts.append(f"{label} {a.text(ci=False)} vs {b.text(ci=False)}")
        cost = mean_ci(run_values(ctx, method, schema.COST_TRAIN, True))
        if cost.n:
            parts.append(f"training time ×{cost.mean:.2f} AdamW's")
        n = len(ctx.data.final(method))
        out.append(f"{method} vs AdamW ({n} final run{'s' if n != 1 else ''}): "
                   f"{'; '.join(parts) or 'no comparable numbers'}.")
    return out


def ensemble_sentences(ctx: Context) -> list[str]:
    out = []
    for method in ctx.present:
        runs = ctx.data.final(method)
        if not runs["role"].eq(schema.ROLE_ENSEMBLE).any():
            continue
        run = runs.iloc[0]
        members, k = (run.get(schema.param_column(schema.PARAM_MEMBERS)),
                      run.get(schema.param_column(schema.PARAM_ENSEMBLE_SIZE)))
        aggregation = run.get(schema.param_column(schema.PARAM_AGGREGATION))
        out.append(f"{method} is an ensemble of {k or 'K'} {members or 'member'} final runs"
                   f"{f' ({aggregation})' if isinstance(aggregation, str) else ''}: "
                   f"{len(runs)} ensemble run{'s' if len(runs) != 1 else ''}, so "
                   f"{'no interval' if len(runs) == 1 else 'intervals over ensemble runs'}; "
                   "its training cost is the sum of its members'.")
    return out


def build(ctx: Context) -> Section:
    section = new_section(__name__)
    for sentence in headline(ctx):
        section.say(sentence)
    numbers, shown = [], []
    for method in ctx.methods:
        n = len(ctx.data.final(method))
        row = {"method": method, "status": "ok" if n else "failed", "n": n}
        cells = {"method": method, "n": str(n)}
        for label, metric, relative in COLUMNS:
            est = mean_ci(run_values(ctx, method, metric, relative))
            key = SLUGS[label]
            row.update({key: est.mean, f"{key}_ci_low": est.low, f"{key}_ci_high": est.high})
            cells[label] = est.text(".2f" if relative else ".3f")
        cells["status"] = row["status"]
        numbers.append(row)
        shown.append(cells)
    section.say(
        "Each cell is the mean over the final seeds of a method with its 95 % percentile-"
        "bootstrap confidence interval in brackets (9999 resamples, fixed seed); n is the "
        "number of final runs. n = 1 (e.g. one ensemble) has no interval.")
    section.say(
        "clean mIoU and Boundary IoU are on the whole test split. Mean shifted mIoU is the mean "
        "over every corruption × severity cell of the shift suite"
        + (" selected with --shifts" if ctx.shifts.filtered else "")
        + "; relative robustness is that mean divided by the clean mIoU of the same images. "
        "Cost columns divide each run by the mean of the AdamW final runs "
        "(wall-clock training time, peak memory, test-set inference time per image).")
    for sentence in ensemble_sentences(ctx):
        section.say(sentence)
    if not ctx.reference_ok:
        section.say("There are no successful AdamW final runs, so the ×AdamW columns are "
                    "empty.")
    for sentence in ctx.failed_sentences():
        section.say(sentence)
    if not ctx.methods:
        section.say("No methods were selected.")
    return section.add(Table("summary", pd.DataFrame(numbers), pd.DataFrame(shown),
                             "Summary: mean [95 % bootstrap CI] over final seeds."))
