"""Δ mIoU vs AdamW per method × corruption, with paired-seed significance marks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.report import style
from harness.report.collect import REFERENCE
from harness.report.document import FigureItem, Section, Table
from harness.report.sections.base import CLEAN_MIOU, Context, new_section
from harness.report.stats import WILCOXON_MIN_N, Estimate, PairedTest, mean_ci, paired

TITLE = "Change in mIoU vs AdamW per corruption"
CLEAN = "clean (shift images)"  # the shift suite's subset, not the whole test split


def _columns(ctx: Context) -> list[tuple[str, list[tuple[str, int]] | str]]:
    """(label, what): a metric name, or the corruption cells to average per run."""
    cells = ctx.cells()
    cols: list = [(CLEAN, CLEAN_MIOU), ("all corruptions", cells)]
    cols += [(c, [x for x in cells if x[0] == c]) for c in ctx.corruptions()]
    return cols


def _per_seed(ctx: Context, method: str, what) -> dict:
    runs = ctx.data.final(method)
    values = ctx.data.column(runs, what) if isinstance(what, str) else ctx.cell_mean(runs, what)
    return dict(zip(runs["seed"], values))


def compare(mine: dict, ref: dict) -> PairedTest:
    """Paired by seed when the seeds match; otherwise (an ensemble has no seed) the plain
    difference of means, as one value without an interval or marks."""
    test = paired(mine, ref)
    if test.diff.n:
        return test
    a = mean_ci(list(mine.values()))
    b = mean_ci(list(ref.values()))
    if not (a.n and b.n):
        return test
    return PairedTest(Estimate(a.mean - b.mean, math.nan, math.nan, 1), math.nan)


def _unpaired(test: PairedTest) -> bool:
    return test.diff.n == 1 and not test.diff.has_ci


def build(ctx: Context) -> Section:
    section = new_section(__name__)
    others = [m for m in ctx.present if m != REFERENCE]
    if not ctx.reference_ok:
        return section.say("There are no successful AdamW final runs, so no Δ vs AdamW can "
                           "be computed.")
    if not others:
        return section.say("No method other than AdamW has successful final runs among the "
                           "methods shown; there is nothing to compare.")
    if not ctx.cells():
        return section.say("No corruption shifts were recorded for the methods shown (or "
                           "--shifts selected none); the clean Δ is in the summary.")
    cols = _columns(ctx)
    tests = {(m, label): compare(_per_seed(ctx, m, what), _per_seed(ctx, REFERENCE, what))
             for m in others for label, what in cols}
    rows = [{"method": m, "shift": label, "delta_miou": t.diff.mean, "ci_low": t.diff.low,
             "ci_high": t.diff.high, "n_pairs": t.diff.n, "wilcoxon_p": t.wilcoxon_p,
             "marks": t.marks} for (m, label), t in tests.items()]
    shown = [{"method": m, "shift": label,
              "Δ mIoU [95 % CI]": t.diff.text("+.3f") if not _unpaired(t) else
              f"{t.diff.mean:+.3f} (difference of means)",
              "pairs": "unpaired" if _unpaired(t) else str(t.diff.n),
              "Wilcoxon p": f"{t.wilcoxon_p:.3g}" if math.isfinite(t.wilcoxon_p) else "–",
              "marks": t.marks or "–"} for (m, label), t in tests.items()]
    section.say(
        "Δ = method − AdamW, paired by seed (final runs with the same seed share data, "
        "initialisation and prompts); a method without seeds (an ensemble) gets the plain "
        "difference of means. Each corruption column averages its severities. "
        "* : the 95 % paired-bootstrap CI of Δ excludes 0. † : Wilcoxon signed-rank "
        f"p < 0.05, computed only with n ≥ {WILCOXON_MIN_N} pairs. Unpaired methods (e.g. one "
        "ensemble run) have no marks.")
    if min((t.diff.n for t in tests.values()), default=0) < WILCOXON_MIN_N:
        section.say("With fewer than 6 pairs the percentile bootstrap cannot give an interval "
                    "wider than the range of the differences, so * mostly says that every "
                    "seed moved in the same direction: read it as descriptive.")
    for sentence in ctx.failed_sentences():
        section.say(sentence)
    section.add(Table("delta_vs_adamw", pd.DataFrame(rows), pd.DataFrame(shown),
                      "Δ mIoU vs AdamW per method and shift (paired by seed)."))
    if ctx.draw:
        section.add(FigureItem("delta_heatmap", _figure(others, cols, tests),
                               "Δ mIoU vs AdamW (blue: better than AdamW, red: worse). "
                               "* paired-bootstrap CI excludes 0; † Wilcoxon p < 0.05."))
    return section


def _figure(methods: list[str], cols: list, tests: dict[tuple, PairedTest]):
    labels = [label for label, _ in cols]
    grid = np.array([[tests[m, c].diff.mean for c in labels] for m in methods], float)
    limit = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 0.0
    limit = limit or 0.01
    fig = style.new_figure((max(6.0, 0.6 * len(labels) + 3), 1.0 + 0.7 * len(methods) + 1.6))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu", vmin=-limit, vmax=limit,
                      aspect="equal")  # square cells: a one-row map stays a strip
    for i, m in enumerate(methods):
        for j, c in enumerate(labels):
            t = tests[m, c]
            text = "n/a" if not math.isfinite(t.diff.mean) else f"{t.diff.mean:+.3f}{t.marks}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if abs(t.diff.mean or 0) > 0.6 * limit else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(methods)), methods)
    ax.set(xlabel="shift (corruptions: mean over severities)", ylabel="method")
    ax.grid(False)
    # a strip of a few rows reads best with the colour scale under it
    horizontal = len(methods) <= 3
    fig.colorbar(image, ax=ax, label=style.DELTA_MIOU, shrink=0.5 if horizontal else 0.8,
                 orientation="horizontal" if horizontal else "vertical",
                 location="bottom" if horizontal else "right")
    return fig
