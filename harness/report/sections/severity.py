"""mIoU against corruption severity (0 = clean), overall and per corruption family."""

from __future__ import annotations

import pandas as pd

from harness.report import style
from harness.report.document import FigureItem, Section, Table
from harness.report.figures import ci_lines, legend
from harness.report.sections.base import CLEAN_MIOU, FAMILIES, Context, family_of, new_section
from harness.report.stats import Estimate, mean_ci

TITLE = "mIoU vs corruption severity"


def curve(ctx: Context, runs: pd.DataFrame, cells: list[tuple[str, int]],
          severities: list[int]) -> list[Estimate]:
    """Estimates at severity 0 (clean, same images) and each severity, over `runs`."""
    out = [mean_ci(ctx.data.column(runs, CLEAN_MIOU))]
    for s in severities:
        out.append(mean_ci(ctx.cell_mean(runs, [c for c in cells if c[1] == s])))
    return out


def build(ctx: Context) -> Section:
    section = new_section(__name__)
    cells, severities = ctx.cells(), ctx.severities()
    if not cells or not ctx.present:
        return section.say("No corruption shifts were recorded for the final runs of the "
                           "methods shown (the study's evaluate.shifts lists no corruption, "
                           "or --shifts selected none), so there is nothing to plot.")
    xs = [0, *severities]
    overall = {m: curve(ctx, ctx.data.final(m), cells, severities) for m in ctx.present}
    families = [f for f in FAMILIES if any(family_of(c) == f for c, _ in cells)]
    per_family = {f: {m: curve(ctx, ctx.data.final(m),
                               [c for c in cells if family_of(c[0]) == f], severities)
                      for m in ctx.present} for f in families}

    rows, shown = [], []
    for scope, curves in [("all corruptions", overall), *per_family.items()]:
        for method, estimates in curves.items():
            for sev, est in zip(xs, estimates):
                rows.append({"scope": scope, "method": method, "severity": sev,
                             "miou": est.mean, "ci_low": est.low, "ci_high": est.high,
                             "n": est.n})
            if scope == "all corruptions":
                shown.append({"method": method, "n": str(estimates[0].n),
                              **{f"s{s}": e.text() for s, e in zip(xs, estimates)}})
    section.say(
        f"Severity 0 is the clean mIoU on the shift suite's images; severity k is the mean over "
        f"the {len(ctx.corruptions())} corruptions evaluated ({', '.join(ctx.corruptions())}). "
        "Lines are means over final seeds, bands their 95 % Student-t CI (none below 3 seeds).")
    size = (ctx.data.config.get("data") or {}).get("image_size")
    # a blur radius or a zoom factor means something else on a 64-px image than on 224 px
    section.say("Corruption parameters are ImageNet-C's, calibrated for 224-px images "
                "(the imagecorruptions package) and not rescaled"
                + (f": on these {size}-px images, pixel-sized effects (blur radii, glass-blur "
                   "displacements, motion length) are relatively stronger" if size and size < 224
                   else (f" for these {size}-px images" if size else "")) + ".")
    for sentence in ctx.failed_sentences():
        section.say(sentence)
    section.add(Table("miou_by_severity", pd.DataFrame(rows), pd.DataFrame(shown),
                      "mIoU by corruption severity (s0 = clean), all corruptions: "
                      "mean [95 % CI]."))
    if ctx.draw:
        section.add(FigureItem("miou_vs_severity", _figure(ctx, xs, overall, per_family),
                               "mIoU vs severity: left, all corruptions; right, one panel per "
                               "corruption family. Bands: 95 % Student-t CI over seeds."))
    return section


def _figure(ctx: Context, xs, overall: dict, per_family: dict):
    fig = style.new_figure()
    n = len(per_family)
    cols = 2 if n > 1 else 1
    rows = max(1, -(-n // cols))
    grid = fig.add_gridspec(rows, 2 + cols)
    main = fig.add_subplot(grid[:, :2])
    ci_lines(main, xs, overall, ctx.colors)
    main.set(title="all corruptions", xlabel=style.SEVERITY, ylabel=style.MIOU, xticks=xs)
    legend(main, loc="lower left")
    for i, (family, curves) in enumerate(per_family.items()):
        ax = fig.add_subplot(grid[i // cols, 2 + i % cols], sharey=main)
        ci_lines(ax, xs, curves, ctx.colors, marker=".")
        ax.set(title=family, xticks=xs, xlabel="severity", ylabel="mIoU (fraction)")
    return fig
