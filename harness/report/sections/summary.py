"""One row per method — accuracy, robustness and cost, mean [95 % CI] with n — under the
reference rows every comparison needs (prompt-only priors, zero-shot); then how the runs
ended, each method against AdamW, and what differences the study could have detected."""

from __future__ import annotations

import pandas as pd

from harness.report import comparisons
from harness.report.collect import REFERENCE
from harness.report.document import Section, Table
from harness.report.outcomes import outcome_sentences, outcome_table
from harness.report.sections.base import Context, new_section, run_values
from harness.report.stats import MIN_CI_N, MIN_IMAGES, Estimate, mean_ci
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
         "relative robustness": "relative_robustness",
         "Boundary IoU": "boundary_iou", "train cost ×AdamW": "train_cost_x_adamw",
         "peak memory ×AdamW": "peak_memory_x_adamw",
         "inference cost ×AdamW": "inference_cost_x_adamw",
         "mIoU above box prior": "miou_above_box_prior"}
ABOVE = "mIoU above box prior"
BELOW_PRIOR = "—, at or below the prior"
REFERENCE_STATUS = {schema.ROLE_BASELINE: "prompt-only prior",
                    schema.ROLE_ZERO_SHOT: "zero-shot (no fine-tuning)"}


def headline(ctx: Context) -> list[str]:
    return comparisons.headline(ctx)


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
                   f"{'no interval' if len(runs) < MIN_CI_N else 'intervals over ensemble runs'}"
                   "; its training cost is the sum of its members'.")
    return out


def _relative(ctx: Context, runs: pd.DataFrame) -> tuple[Estimate, str | None]:
    """Relative robustness over the runs above the box prior, or why there is none."""
    est = mean_ci(comparisons.learned_values(ctx, runs, schema.SHIFT_RELATIVE))
    if est.n == 0 and ctx.floor is not None and run_values(
            ctx, runs, schema.SHIFT_RELATIVE, False).notna().any():
        return est, BELOW_PRIOR
    return est, None


def _cell(est: Estimate, spec: str, n: int) -> str:
    """The mean with its interval; below 3 values the plain mean (the n column and the caption
    say why there is no interval); "(n=k)" when fewer of the row's runs had the metric."""
    text = est.text(spec, ci=est.has_ci)
    return text + (f" (n={est.n})" if est.n and est.n != n else "")


def _above(ctx: Context, runs: pd.DataFrame) -> Estimate:
    if ctx.floor is None:
        return mean_ci([])
    return mean_ci(ctx.data.column(runs, schema.TEST_MIOU) - ctx.floor.test_miou)


def _estimates(ctx: Context, runs: pd.DataFrame) -> list[tuple[str, Estimate, str | None, str]]:
    """(column, estimate, why there is none, number format), in the table's order."""
    out = []
    for label, metric, relative in COLUMNS:
        if metric == schema.SHIFT_RELATIVE:
            est, why = _relative(ctx, runs)
        else:
            est, why = mean_ci(run_values(ctx, runs, metric, relative)), None
        out.append((label, est, why, ".2f" if relative else ".3f"))
        if metric == schema.TEST_MIOU:
            out.append((ABOVE, _above(ctx, runs), None, "+.3f"))
    return out


def _row(ctx: Context, name: str, runs: pd.DataFrame, role: str,
         status: str) -> tuple[dict, dict]:
    n = len(runs)
    row = {"method": name, "role": role, "status": status, "n": n}
    cells = {"method": name, "n": str(n)}
    for label, est, why, spec in _estimates(ctx, runs):
        key = SLUGS[label]
        row.update({key: est.mean, f"{key}_ci_low": est.low, f"{key}_ci_high": est.high})
        cells[label] = why or _cell(est, spec, n)
    cells["status"] = status
    return row, cells


def _table(ctx: Context) -> Table:
    numbers, shown = [], []
    for method in ctx.methods:
        runs = ctx.data.final(method)
        role = runs["role"].iloc[0] if len(runs) else schema.ROLE_TRIAL
        row, cells = _row(ctx, method, runs, role, "ok" if len(runs) else "failed")
        numbers.append(row)
        shown.append(cells)
    refs = ctx.data.references
    for i in range(len(refs)):
        run = refs.iloc[[i]]
        role = run["role"].iloc[0]
        row, cells = _row(ctx, run["method"].iloc[0], run, role, REFERENCE_STATUS[role])
        numbers.append(row)
        shown.append(cells)
    return Table("summary", pd.DataFrame(numbers), pd.DataFrame(shown),
                 f"Summary: mean [95 % Student-t CI] over final seeds; below {MIN_CI_N} runs "
                 "the plain mean (no interval); reference rows are single deterministic runs.")


def _sentences(ctx: Context) -> list[str]:
    out = [
        "Each cell is the mean over a method's finished final runs with its 95 % Student-t "
        "confidence interval (t with n − 1 degrees of freedom over the n runs) in brackets. "
        f"Below {MIN_CI_N} runs there is no interval — two values cannot say how far the "
        "next seed may land — and the cell holds the plain mean."]
    small = [m for m in ctx.present if len(ctx.data.final(m)) < MIN_CI_N]
    if small:
        out.append(f"Here {', '.join(small)} {'has' if len(small) == 1 else 'have'} fewer "
                   f"than {MIN_CI_N} final runs, so {'its' if len(small) == 1 else 'their'} "
                   "numbers are point values only.")
    out.append(
        "clean mIoU and Boundary IoU are on the whole test split. Mean shifted mIoU is the mean "
        "over every corruption × severity cell of the shift suite"
        + (" selected with --shifts" if ctx.shifts.filtered else "")
        + "; relative robustness is that mean divided by the clean mIoU of the same images. "
        "Cost columns divide each run by the mean of the AdamW final runs "
        "(wall-clock training time, peak memory, test-set inference time per image).")
    if ctx.floor is not None:
        out.append(
            f"{ABOVE}: test mIoU minus that of the box prior {ctx.floor.describe()}, the best "
            "box prior recorded (a box filled, or an ellipse inscribed in it, with no look at "
            "the image). Relative robustness is averaged only over runs above that prior on "
            f"{ctx.floor.basis(ctx.data, ctx.data.final())}; '{BELOW_PRIOR}' means no run "
            "was, and (n=k) how many were when not all.")
    else:
        out.append(f"No box prior was recorded for this study, so '{ABOVE}' is empty and "
                   "whether a run learned anything beyond its prompt box is not checked.")
    if len(ctx.data.references):
        out.append("Reference rows (one deterministic run each, n = 1, no interval): "
                   "prompt-only priors segment from the prompt alone; zero-shot is the "
                   "pretrained model before any fine-tuning.")
    return out


def build(ctx: Context) -> Section:
    section = new_section(__name__)
    for sentence in headline(ctx):
        section.say(sentence)
    section.add(_table(ctx))
    for sentence in _sentences(ctx) + ensemble_sentences(ctx):
        section.say(sentence)
    if not ctx.reference_ok:
        section.say("There are no successful AdamW final runs, so the ×AdamW columns are "
                    "empty.")
    for sentence in ctx.failed_sentences():
        section.say(sentence)
    if not ctx.methods:
        section.say("No methods were selected.")
    section.add(outcome_table(ctx.data, ctx.methods, ctx.floor))
    basis = ctx.floor.basis(ctx.data, ctx.data.final()) if ctx.floor else ""
    for sentence in outcome_sentences(ctx.floor, basis):
        section.say(sentence)
    _comparisons(ctx, section)
    return section


def _comparisons(ctx: Context, section: Section) -> None:
    tests = comparisons.summary_comparisons(ctx)
    if not tests:
        return
    rows, shown = comparisons.delta_table_rows(tests)
    section.add(Table("delta_summary", pd.DataFrame(rows), pd.DataFrame(shown),
                      f"Each method − {REFERENCE} at two levels: over seeds (paired) and per "
                      "test mask (bootstrap over images)."))
    section.say(
        "Δ over seeds pairs final runs with the same seed (same data, initialisation and "
        "prompts) and gives the Student-t interval of the per-seed differences; relative "
        "robustness pairs only seeds where both runs beat the box prior. Δ per mask averages "
        "each mask's IoU over a method's runs, subtracts AdamW's, and resamples whole test "
        "images (their masks share the image's difficulty; an interval needs at least "
        f"{MIN_IMAGES} images); it conditions on the trained runs, ignores seed-to-seed "
        "variation, and so earns no mark.")
    for sentence in comparisons.family_sentences(tests, "comparison"):
        section.say(sentence)
    rows, shown = comparisons.power_rows(ctx, tests)
    if rows:
        section.add(Table("detectable_difference", pd.DataFrame(rows), pd.DataFrame(shown),
                          "Minimum detectable Δ clean mIoU vs AdamW (80 % power, two-sided "
                          "α = 0.05)."))
        section.say(comparisons.power_sentence())
