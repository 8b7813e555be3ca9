"""Does sharpness predict generalisation? Kendall τ of each probe against each gap
over every run that has both, laid out like the rank-correlation table of the ASAM paper."""

from __future__ import annotations

import math

import pandas as pd

from harness.report import style
from harness.report.document import FigureItem, Section, Table
from harness.report.sections.base import Context, new_section, recorded_metrics
from harness.report.stats import kendall
from harness.tracking import schema

TITLE = "Sharpness vs generalisation"
GAPS = {schema.GAP_TRAIN_TEST: "train − test mIoU",
        schema.GAP_CLEAN_SHIFT: "clean − shifted mIoU"}
PROBE_PREFIX = schema.PROBE_PREFIX
PROBE_NAMES = {schema.PROBE_SHARPNESS: "sharpness (ρ-ball)",
               schema.PROBE_ASAM_SHARPNESS: "adaptive sharpness",
               schema.PROBE_AVG_SHARPNESS: "average sharpness",
               schema.PROBE_HESSIAN_TRACE: "Hessian trace",
               schema.PROBE_LANDSCAPE_RISE: "1-D slice max rise", schema.PROBE_LOSS: "loss at w"}


def _probes(runs: pd.DataFrame) -> list[str]:
    names = [n for n in recorded_metrics(runs)
             if n.startswith(PROBE_PREFIX) and not n.endswith("_stderr")]
    known = list(PROBE_NAMES)
    return sorted(names, key=lambda n: (known.index(n) if n in known else len(known), n))


def label(probe: str) -> str:
    return PROBE_NAMES.get(probe, probe.removeprefix(PROBE_PREFIX).replace("hessian_eig",
                                                                           "Hessian λ"))


def unit(probe: str) -> str:
    """Loss rises are in loss units; curvatures in loss per squared parameter step."""
    return ("loss / param²" if probe.startswith(f"{PROBE_PREFIX}hessian")
            else "loss, unitless")


def build(ctx: Context) -> Section:
    section = new_section(__name__)
    shown_methods = ctx.data.runs["method"].isin(ctx.methods)
    runs = ctx.data.runs[ctx.data.runs["ok"] & shown_methods]
    probes = _probes(runs)
    gaps = [g for g in GAPS if g in recorded_metrics(runs)]
    if not probes or not gaps:
        return section.say("No sharpness probes (or no generalisation gaps) were recorded for "
                           "the methods shown; enable `probes:` in the study to fill this "
                           "section.")
    corr = {(p, g): kendall(ctx.data.column(runs, p), ctx.data.column(runs, g))
            for p in probes for g in gaps}
    rows = [{"probe": p, "gap": g, "kendall_tau": c.tau, "p_value": c.p, "n": c.n}
            for (p, g), c in corr.items()]
    shown = [{"probe": label(p), **{f"τ vs {GAPS[g]}": corr[p, g].text() for g in gaps}}
             for p in probes]
    n_runs = len(runs.dropna(subset=[schema.metric_column(probes[0])]))
    section.say(
        f"Every successful run with probes ({n_runs} runs, all methods pooled) contributes "
        "one point. Kendall's τ-b between a probe and a generalisation gap, with its "
        "two-sided p-value: τ > 0 means sharper minima came with larger gaps. Gaps are "
        "train − test mIoU (train images scored like the test set) and clean − mean "
        "corrupted mIoU. With few runs, |τ| needs to be large to be meaningful.")
    section.add(Table("sharpness_kendall", pd.DataFrame(rows), pd.DataFrame(shown),
                      "Rank correlation (Kendall τ) between sharpness probes and "
                      "generalisation gaps."))
    if ctx.draw:
        section.add(FigureItem("sharpness_vs_gap", _figure(ctx, runs, probes, gaps, corr),
                               "Each probe (x) against each generalisation gap (y), one point "
                               "per run, coloured by method; τ and p in each panel title."))
    return section


def _figure(ctx: Context, runs, probes, gaps, corr):
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fig = style.new_figure()
    axes = fig.subplots(len(gaps), len(probes), squeeze=False, sharey="row", sharex="col")
    for i, g in enumerate(gaps):
        for j, p in enumerate(probes):
            ax = axes[i][j]
            for method in ctx.methods:
                group = runs[runs["method"] == method]
                if len(group):
                    ax.scatter(ctx.data.column(group, p), ctx.data.column(group, g), s=16,
                               color=ctx.colors[method], label=method)
            c = corr[p, g]
            tau = "τ n/a" if not math.isfinite(c.tau) else f"τ={c.tau:+.2f}, p={c.p:.2g}"
            ax.set_title(tau, fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(3))
            # no shared "1e-5" offset: it would collide with the axis label
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
            ax.tick_params(labelsize=6)
            if i == len(gaps) - 1:
                ax.set_xlabel(f"{label(p)}\n({unit(p)})", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{GAPS[g]}\n(mIoU, fraction)", fontsize=8)
    axes[0][0].legend(loc="best", fontsize=7)
    return fig
