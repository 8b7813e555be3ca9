"""Δ mIoU vs AdamW per method × corruption; a mark only where the corrected test allows it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.report import style
from harness.report.collect import REFERENCE
from harness.report.comparisons import (
    MARK,
    Comparison,
    adjust,
    family_sentences,
    per_seed,
    seed_test,
)
from harness.report.document import FigureItem, Section, Table
from harness.report.multiplicity import HOLM
from harness.report.sections.base import CLEAN_MIOU, Context, new_section

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
    return per_seed(runs, values)


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
    # every cell of the table (and of the figure, which shows the same cells) is one family
    family = adjust([Comparison(m, label, seed_test(_per_seed(ctx, m, what),
                                                     _per_seed(ctx, REFERENCE, what)))
                     for m in others for label, what in cols])
    tests = {(t.method, t.label): t for t in family}
    rows = [{"method": t.method, "shift": t.label, "delta_miou": t.seed.diff.mean,
             "ci_low": t.seed.diff.low, "ci_high": t.seed.diff.high, "n_pairs": t.seed.diff.n,
             "paired": not t.unpaired, "sign_flip_p": t.seed.p, "holm_p": t.seed_holm,
             "marks": t.mark} for t in family]
    shown = [{"method": t.method, "shift": t.label, "Δ mIoU [95 % CI]": t.seed_text(),
              "pairs": "unpaired" if t.unpaired else str(t.seed.diff.n),
              "sign-flip p (Holm)": t.p_text(), "mark": t.mark or "–"} for t in family]
    section.say(
        "Δ = method − AdamW, paired by seed (final runs with the same seed share data, "
        "initialisation and prompts), with the Student-t interval of the per-seed "
        "differences (none below 3 pairs); a method without seeds (an ensemble) gets the "
        "plain difference of means, without interval or test. Each corruption column "
        "averages its severities.")
    for sentence in family_sentences(family):
        section.say(sentence)
    for sentence in ctx.failed_sentences():
        section.say(sentence)
    section.add(Table("delta_vs_adamw", pd.DataFrame(rows), pd.DataFrame(shown),
                      f"Δ mIoU vs AdamW per method and shift (paired by seed; {HOLM} over "
                      "the table's cells)."))
    if ctx.draw:
        section.add(FigureItem("delta_heatmap", _figure(others, cols, tests),
                               "Δ mIoU vs AdamW (blue: better than AdamW, red: worse). "
                               f"{MARK} {HOLM}-adjusted sign-flip p < 0.05 over the figure's "
                               "cells (none possible with few seeds: see the text)."))
    return section


def _figure(methods: list[str], cols: list, tests: dict[tuple, Comparison]):
    labels = [label for label, _ in cols]
    grid = np.array([[tests[m, c].seed.diff.mean for c in labels] for m in methods], float)
    limit = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 0.0
    limit = limit or 0.01
    fig = style.new_figure((max(6.0, 0.6 * len(labels) + 3), 1.0 + 0.7 * len(methods) + 1.6))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu", vmin=-limit, vmax=limit,
                      aspect="equal")  # square cells: a one-row map stays a strip
    for i, m in enumerate(methods):
        for j, c in enumerate(labels):
            t = tests[m, c]
            mean = t.seed.diff.mean
            text = "n/a" if not math.isfinite(mean) else f"{mean:+.3f}{t.mark}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if abs(mean or 0) > 0.6 * limit else "black")
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
