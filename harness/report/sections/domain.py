"""Domain shift (other synthetic domains) and prompt shift (noisy boxes, one point)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from harness.report import style
from harness.report.document import FigureItem, Section, Table
from harness.report.figures import ci_bars, ci_lines, legend
from harness.report.sections.base import CLEAN_MIOU, MIOU, Context, new_section, recorded_metrics
from harness.tracking.schema import (
    domain_metric,
    jitter_metric,
    parse_domain_metric,
    parse_jitter_metric,
    point_metric,
)

TITLE = "Domain and prompt shift"


def _recorded(ctx: Context, parse: Callable[[str], tuple | None]) -> set:
    """What `parse` names (a domain, a jitter level index) in the final runs' mIoU metrics."""
    return {parsed[0] for name in recorded_metrics(ctx.data.final())
            if (parsed := parse(name)) and parsed[-1] == MIOU}


def _jitter_levels(ctx: Context, indices: list[int]) -> list[float]:
    """Box-jitter levels (fraction of the box side) from the config; the index if unknown."""
    levels = (ctx.data.config.get("evaluate") or {}).get("box_jitter_levels") or []
    return [float(levels[i - 1]) if i - 1 < len(levels) else float(i) for i in indices]


def build(ctx: Context) -> Section:
    section = new_section(__name__)
    domains = (sorted(_recorded(ctx, parse_domain_metric), key=lambda s: (len(s), s))
               if ctx.shifts.domain else [])
    jitters = sorted(_recorded(ctx, parse_jitter_metric)) if ctx.shifts.prompt else []
    point = ctx.shifts.prompt and any(
        ctx.data.column(ctx.data.final(), point_metric(MIOU)).notna())
    if not ctx.present or not (domains or jitters or point):
        return section.say("No domain or prompt shifts were recorded for the final runs of "
                           "the methods shown (evaluate.shifts lacks domain / prompt, or "
                           "--shifts left them out).")
    cells = [("clean", CLEAN_MIOU)]
    cells += [(f"domain {d}", domain_metric(d, MIOU)) for d in domains]
    levels = _jitter_levels(ctx, jitters)
    cells += [(f"box jitter {lv:g}", jitter_metric(i, MIOU)) for i, lv in zip(jitters, levels)]
    if point:
        cells.append(("one point", point_metric(MIOU)))
    est = {m: [ctx.estimate(m, metric) for _, metric in cells] for m in ctx.present}
    rows = [{"method": m, "shift": label, "miou": e.mean, "ci_low": e.low, "ci_high": e.high,
             "n": e.n} for m in ctx.present for (label, _), e in zip(cells, est[m])]
    # methods as columns (few), shifts as rows (many): fits a page
    shown = [{"shift": "n", **{m: str(est[m][0].n) for m in est}}]
    shown += [{"shift": label, **{m: est[m][i].text() for m in est}}
              for i, (label, _) in enumerate(cells)]
    section.say(
        "Clean is the shift suite's images with tight boxes. Domains are the test split of "
        "other synthetic domains, made like the training domain's. Box jitter moves each "
        "box corner by Gaussian noise of the given fraction of the box side; one point "
        "replaces the box by a single positive click. Means over final seeds with 95 % CI.")
    for sentence in ctx.failed_sentences():
        section.say(sentence)
    section.add(Table("domain_prompt", pd.DataFrame(rows), pd.DataFrame(shown),
                      "Domain and prompt shift: mIoU mean [95 % CI]."))
    if ctx.draw:
        section.add(FigureItem("domain_prompt", _figure(ctx, cells, est, domains, levels,
                                                        point),
                               "Left: mIoU on other domains; middle: mIoU vs box-jitter level "
                               "(0 = tight box); right: box vs one-point prompt. Whiskers and "
                               "bands: 95 % Student-t CI over seeds (none below 3)."))
    return section


def _figure(ctx: Context, cells, est, domains, levels, point):
    fig = style.new_figure()
    axes = fig.subplots(1, 3, width_ratios=[max(2, len(domains) + 1), 3, 2], sharey=True)
    index = {label: i for i, (label, _) in enumerate(cells)}
    pick = lambda labels: {m: [est[m][index[lb]] for lb in labels] for m in est}  # noqa: E731
    dom_labels = ["clean", *(f"domain {d}" for d in domains)]
    ci_bars(axes[0], [lb.replace("domain ", "") for lb in dom_labels], pick(dom_labels),
            ctx.colors)
    axes[0].set(title="domain shift", xlabel="test domain", ylabel=style.MIOU)
    if levels:
        jit = ["clean", *(f"box jitter {lv:g}" for lv in levels)]
        ci_lines(axes[1], [0.0, *levels], pick(jit), ctx.colors)
        axes[1].set(title="prompt shift: box jitter",
                    xlabel="box jitter (std, fraction of box side)")
    else:
        style.note(axes[1], "no box-jitter shift recorded")
    if point:
        ci_bars(axes[2], ["tight box", "one point"], pick(["clean", "one point"]), ctx.colors)
        axes[2].set(title="prompt shift: point", xlabel="prompt type")
    else:
        style.note(axes[2], "no point-prompt shift recorded")
    legend(axes[0], loc="lower left")
    return fig
