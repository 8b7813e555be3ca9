"""Page 1 of the report, before the numbered sections — the answer: each method's mIoU clean
and under corruption next to the prompt-only priors and the zero-shot model, in one figure,
and three sentences with the numbers: the levels, the difference from AdamW, and what a model
scores without learning anything."""

from __future__ import annotations

import math

import pandas as pd

from harness.report import comparisons, style
from harness.report.collect import REFERENCE
from harness.report.document import FigureItem
from harness.report.figures import ci_lines, ci_whiskers, legend
from harness.report.floor import BOX_PRIORS
from harness.report.sections.base import CLEAN_MIOU, Context, run_values
from harness.report.sections.severity import curve
from harness.report.stats import MIN_CI_N, Estimate, mean_ci
from harness.tracking import schema

NAME = "answer"  # figures/answer.png
# reference runs are context lines in greys (priors lighter), not methods in colour
REFERENCE_COLOR = {schema.ROLE_BASELINE: "0.5", schema.ROLE_ZERO_SHOT: "0.1"}
REFERENCE_LINES = ("--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))


def _name(method: str) -> str:
    return style.display_name(method)


def _references(ctx: Context) -> pd.DataFrame:
    """The box priors and the zero-shot run (the point-disc prior answers another prompt)."""
    refs = ctx.data.references
    if refs.empty:
        return refs
    keep = (refs["role"] == schema.ROLE_ZERO_SHOT) | refs["method"].isin(BOX_PRIORS)
    return refs[keep]


def _value(est: Estimate) -> str:
    """`0.812 [0.801, 0.822]`, or the plain mean below 3 values (the sentence says why)."""
    return est.text(ci=est.has_ci)


def _levels(ctx: Context) -> str:
    """Sentence 1: each method's clean test mIoU, then clean → corrupted on the shift suite's
    images (the figure's first and later points)."""
    clean, shifted, point_only = [], [], False
    for method in ctx.methods:
        runs = ctx.data.final(method)
        if runs.empty:
            clean.append(f"{_name(method)} has no result ({ctx.data.failure(method)})")
            continue
        est = ctx.estimate(method, schema.TEST_MIOU)
        clean.append(f"{_name(method)} {_value(est)} (n={est.n})")
        before = mean_ci(ctx.data.column(runs, CLEAN_MIOU))
        after = mean_ci(run_values(ctx, runs, schema.SHIFT_MEAN_MIOU, False))
        if before.n and after.n:
            shifted.append(f"{_name(method)} {_value(before)} → {_value(after)}")
        point_only = point_only or not est.has_ci
    if not clean:
        return "No methods were selected."
    text = f"Clean test mIoU over final seeds: {', '.join(clean)}"
    if shifted:
        cells = len(ctx.cells())
        text += (f"; on the shift suite's images, clean → mean over {cells} corruption × "
                 f"severity cell{'s' if cells != 1 else ''}: {', '.join(shifted)}")
    return text + (f" (no interval below {MIN_CI_N} seeds)." if point_only else ".")


def _delta(est: Estimate, unpaired: bool) -> str:
    if unpaired:
        return f"{est.mean:+.3f} (difference of means: no common seeds)"
    if est.has_ci:
        return f"{est.text('+.3f')} over {est.n} paired seeds"
    return f"{est.mean:+.3f} (n = {est.n} paired seeds, too small for an interval)"


def _differences(ctx: Context) -> str:
    """Sentence 2: each method minus AdamW, paired by seed, with its interval."""
    others = [m for m in ctx.present if m != REFERENCE]
    if not ctx.reference_ok:
        return (f"Nothing is compared with {_name(REFERENCE)}: it has no successful final "
                "run.")
    if not others:
        return f"Only {_name(REFERENCE)} has results, so there is no difference to report."
    parts, marked = [], False
    for method in others:
        tests = {t.label: t for t in comparisons.summary_comparisons(ctx) if t.method == method}
        shown = []
        for label in (label for label, _ in comparisons.HEADLINE[:2] if label in tests):
            test = tests[label]
            shown.append(f"{label} {_delta(test.seed.diff, test.unpaired)}{test.mark}")
            marked = marked or bool(test.mark)
        parts.append(f"{_name(method)} − {_name(REFERENCE)}: {', '.join(shown) or 'none'}")
    mark = (f" ({comparisons.MARK}: sign-flip p < 0.05 after Holm over the summary's "
            "comparisons)" if marked else "")
    return (f"Difference from {_name(REFERENCE)}, paired by seed ({MIN_CI_N}+ seeds give a "
            f"95 % Student-t interval): {'; '.join(parts)}{mark}.")


def _context(ctx: Context) -> str:
    """Sentence 3: what the prompt alone, and the model before fine-tuning, score."""
    refs = _references(ctx)
    if refs.empty:
        return ("No prompt-only prior or zero-shot run was recorded, so nothing here says how "
                "much of this mIoU the prompt box alone gives.")
    kinds = {schema.ROLE_BASELINE: "prompt-only priors that never look at the image",
             schema.ROLE_ZERO_SHOT: "the pretrained model before fine-tuning (zero-shot)"}
    parts = []
    for _, run in refs.iterrows():
        one = refs.loc[[run.name]]
        clean = ctx.data.column(one, schema.TEST_MIOU).iloc[0]
        shifted = run_values(ctx, one, schema.SHIFT_MEAN_MIOU, False).iloc[0]
        text = f"{run['method']} {clean:.3f}" if math.isfinite(clean) else run["method"]
        if run["role"] == schema.ROLE_ZERO_SHOT and math.isfinite(shifted):
            text += f" ({shifted:.3f} under corruption)"
        parts.append(text)
    who = " and ".join(kinds[r] for r in kinds if (refs["role"] == r).any())
    return (f"For scale, {who} score (clean test mIoU, one deterministic run each): "
            f"{'; '.join(parts)}.")


def sentences(ctx: Context) -> list[str]:
    return [_levels(ctx), _differences(ctx), _context(ctx)]


def _xs(ctx: Context) -> list[int]:
    return [0, *ctx.severities()]


def _points(ctx: Context, runs: pd.DataFrame) -> list[Estimate]:
    """mIoU at severity 0 (clean) and each severity; the clean test split alone when the
    study recorded no corruption."""
    if ctx.cells():
        return curve(ctx, runs, ctx.cells(), ctx.severities())
    return [mean_ci(ctx.data.column(runs, schema.TEST_MIOU))]


def figure(ctx: Context):
    fig = style.new_figure()
    ax = fig.add_subplot()
    xs = _xs(ctx)
    series = {m: _points(ctx, ctx.data.final(m)) for m in ctx.present}
    ci_lines(ax, xs, series, ctx.colors)
    for method, estimates in series.items():  # whiskers too: a band at one x is invisible
        ci_whiskers(ax, xs, estimates, ctx.colors[method])
    refs = _references(ctx)
    for i in range(len(refs)):
        run = refs.iloc[[i]]
        name = run["method"].iloc[0]
        means = [e.mean for e in _points(ctx, run)]
        if any(math.isfinite(v) for v in means):
            color = REFERENCE_COLOR[run["role"].iloc[0]]
            ax.plot(xs, means, color=color, linewidth=1.2, marker=".",
                    linestyle=REFERENCE_LINES[i % len(REFERENCE_LINES)],
                    label=f"{name} (reference)")
            # named at the line's end too: greys are told apart by their dashes alone
            ax.annotate(name, (xs[-1], means[-1]), xytext=(4, 0), textcoords="offset points",
                        va="center", size=7, color=color)
    ax.set(xlabel=style.SEVERITY if ctx.cells() else "clean test split", ylabel=style.MIOU,
           xticks=xs, xlim=(-0.2, xs[-1] * 1.15 + 0.2) if len(xs) > 1 else (-1, 1.5))
    legend(ax, loc="best")
    return fig


def _caption(ctx: Context) -> str:
    small = [m for m in ctx.present if len(ctx.data.final(m)) < MIN_CI_N]
    bands = (f"Bands: 95 % Student-t interval over final seeds (none for "
             f"{', '.join(small)}: fewer than {MIN_CI_N} runs)." if small else
             "Bands: 95 % Student-t interval over final seeds.")
    if not ctx.cells():
        return ("No corruption was evaluated: clean test mIoU per method. " + bands)
    return (f"mIoU vs corruption severity (0 = clean, on the shift suite's "
            f"images; severity k: mean over {', '.join(ctx.corruptions())}). Solid: methods, "
            "mean over final seeds. Grey, broken: prompt-only box priors and the zero-shot "
            "model (one run each). " + bands)


def front_page(ctx: Context, notes: list[str]) -> FigureItem:
    """The answer as one page-sized figure; `notes` (when and from what it was made, the
    contents) go under the caption."""
    return FigureItem(NAME, figure(ctx), " ".join([_caption(ctx), *notes]))
