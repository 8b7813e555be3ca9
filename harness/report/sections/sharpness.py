"""Does sharpness predict generalisation? Kendall τ of each probe against each gap within each
method across its runs, the partial τ given clean mIoU, and a bootstrap interval."""

from __future__ import annotations

import math

import pandas as pd

from harness.report import style
from harness.report.correlation import CI_MIN_N, MIN_N, Correlation, within_method
from harness.report.document import FigureItem, Section, Table
from harness.report.figures import legend
from harness.report.multiplicity import HOLM, holm
from harness.report.sections.base import Context, new_section, recorded_metrics
from harness.report.stats import ALPHA, mean_ci
from harness.tracking import schema

TITLE = "Sharpness vs generalisation"
GAPS = {schema.GAP_TRAIN_TEST: "train − test mIoU",
        schema.GAP_CLEAN_SHIFT: "clean − shifted mIoU"}
CONTROL = schema.TEST_MIOU  # a better model may be both flatter and less brittle
PROBE_PREFIX = schema.PROBE_PREFIX
# how a probe ran, not what it measured
DIAGNOSTICS = (schema.PROBE_LANCZOS_CONVERGED, schema.PROBE_LANCZOS_ITERATIONS)
# Adaptive (scale-invariant) sharpness first: plain ρ-ball sharpness and curvature change under
# reparametrisations that leave the function unchanged (Dinh et al. 2017; Kwon et al. 2021).
PROBE_NAMES = {schema.PROBE_ASAM_SHARPNESS: "adaptive sharpness",
               schema.PROBE_SHARPNESS: "sharpness (ρ-ball)",
               schema.PROBE_AVG_SHARPNESS: "average sharpness",
               schema.PROBE_HESSIAN_TRACE: "Hessian trace",
               schema.PROBE_LANDSCAPE_RISE: "1-D slice max rise", schema.PROBE_LOSS: "loss at w"}


def _probes(runs: pd.DataFrame) -> list[str]:
    names = [n for n in recorded_metrics(runs)
             if n.startswith(PROBE_PREFIX) and not n.endswith(("_stderr", "_residual"))
             and n not in DIAGNOSTICS]
    known = list(PROBE_NAMES)
    return sorted(names, key=lambda n: (known.index(n) if n in known else len(known), n))


def label(probe: str) -> str:
    return PROBE_NAMES.get(probe, probe.removeprefix(PROBE_PREFIX).replace("hessian_eig",
                                                                           "Hessian λ"))


def unit(probe: str) -> str:
    """Loss rises are in loss units; curvatures in loss per squared parameter step."""
    return ("loss / param²" if probe.startswith(f"{PROBE_PREFIX}hessian")
            else "loss, unitless")


def _correlations(ctx: Context, runs: pd.DataFrame, methods: list[str], probes: list[str],
                  gaps: list[str]) -> dict[tuple[str, str, str], Correlation]:
    out = {}
    for method in methods:
        mine = runs[runs["method"] == method]
        control = ctx.data.column(mine, CONTROL)
        for p in probes:
            for g in gaps:
                out[method, p, g] = within_method(ctx.data.column(mine, p),
                                                  ctx.data.column(mine, g), control)
    return out


def _with_probes(corr: dict, method: str) -> int:
    """How many of `method`'s runs have a probe, a gap and clean mIoU (the most over pairs)."""
    return max(c.n for (m, _, _), c in corr.items() if m == method)


def _panels(corr: dict, methods: list[str], probes: list[str],
            gaps: list[str]) -> dict[tuple[str, str], list[str]]:
    """(probe, gap) → the methods with enough runs to show a relation in that scatter panel;
    pairs no method can support are left out."""
    out = {}
    for g in gaps:
        for p in probes:
            shown = [m for m in methods if corr[m, p, g].n >= MIN_N]
            if shown:
                out[p, g] = shown
    return out


def _left_out(corr: dict, panels: dict, methods: list[str], probes: list[str],
              gaps: list[str]) -> str:
    counts = ", ".join(f"{m} {_with_probes(corr, m)}" for m in methods)
    if not panels:
        return (f"No rank correlation and no scatter plot: every method has fewer than "
                f"{MIN_N} runs with probes ({counts}), too few to show whether sharpness and "
                "a generalisation gap move together within a method (pooling methods would "
                "only say that the methods differ). The probe values are in the table below.")
    missing = [f"{m}: {label(p)} vs {GAPS[g]}" for g in gaps for p in probes for m in methods
               if m not in panels.get((p, g), [])]
    if not missing:
        return ""
    return (f"Scatter panels show only methods with at least {MIN_N} runs with both values "
            f"({counts} runs with probes); left out: {'; '.join(missing)}.")


def _values_table(ctx: Context, runs: pd.DataFrame, methods: list[str], probes: list[str],
                  gaps: list[str]) -> Table:
    """Each probe and gap per method: mean [95 % CI] over its runs with the value."""
    rows, shown = [], []
    for name in probes + gaps:
        row = {"quantity": GAPS.get(name, label(name)),
               "unit": "mIoU, fraction" if name in GAPS else unit(name)}
        for m in methods:
            est = mean_ci(ctx.data.column(runs[runs["method"] == m], name))
            rows.append({"quantity": name, "method": m, "mean": est.mean, "ci_low": est.low,
                         "ci_high": est.high, "n": est.n})
            row[m] = est.text("sig3")
        shown.append(row)
    return Table("sharpness_probes", pd.DataFrame(rows), pd.DataFrame(shown),
                 "Sharpness probes and generalisation gaps per method: mean [95 % CI] over "
                 "its successful runs with the value (no interval below 3).")


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
    # an ensemble has no weights of its own to probe: rows of "n = 0" would only be noise
    probed = pd.concat([ctx.data.column(runs, p).notna() for p in probes], axis=1).any(axis=1)
    methods = [m for m in ctx.methods if (probed & (runs["method"] == m)).any()]
    corr = _correlations(ctx, runs, methods, probes, gaps)
    adjusted = dict(zip(corr, holm(c.p for c in corr.values())))
    panels = _panels(corr, methods, probes, gaps)
    if not panels:
        section.say(_left_out(corr, panels, methods, probes, gaps))
        return section.add(_values_table(ctx, runs, methods, probes, gaps))
    section.say(
        "Kendall's τ-b between a probe and a generalisation gap, computed within each method "
        "across its successful runs with probes (never pooled: runs of different methods "
        "differ in both, so a pooled τ would only say that the methods differ). τ > 0 means "
        "sharper minima came with larger gaps. Gaps are train − test mIoU (train images "
        "scored like the test set) and clean − mean corrupted mIoU. Partial τ removes what "
        "probe and gap share with clean test mIoU. Intervals: percentile bootstrap over runs "
        f"(from {CI_MIN_N} runs); p: two-sided (exact for small n), then {HOLM} over the "
        f"{sum(math.isfinite(c.p) for c in corr.values())} τ of this table, shown in brackets.")
    section.say(_verdict(corr, adjusted, methods))
    section.say(_left_out(corr, panels, methods, probes, gaps))
    rows = [{"method": m, "probe": p, "gap": g, "kendall_tau": c.tau, "ci_low": c.low,
             "ci_high": c.high, "p_value": c.p, "holm_p": adjusted[m, p, g],
             "partial_tau": c.partial, "partial_ci_low": c.partial_low,
             "partial_ci_high": c.partial_high, "n": c.n}
            for (m, p, g), c in corr.items()]
    shown = [{"method": m, "probe": label(p),
              **{f"τ vs {GAPS[g]}": corr[m, p, g].text(adjusted[m, p, g]) for g in gaps},
              **{f"partial τ vs {GAPS[g]}": corr[m, p, g].partial_text() for g in gaps}}
             for m in methods for p in probes]
    section.add(Table("sharpness_kendall", pd.DataFrame(rows), pd.DataFrame(shown),
                      "Rank correlation (Kendall τ) between sharpness probes and "
                      "generalisation gaps, within each method."))
    section.add(_values_table(ctx, runs, methods, probes, gaps))
    if ctx.draw:
        section.add(FigureItem("sharpness_vs_gap", _figure(ctx, runs, panels),
                               "Each probe (x) against each generalisation gap (y), one point "
                               f"per run, coloured by method (methods with at least {MIN_N} "
                               "runs with both values); τ within each method is in the table "
                               "(the cloud of all methods together is not a test)."))
    return section


def _verdict(corr: dict, adjusted: dict, methods: list[str]) -> str:
    """Plain words: which τ, if any, is distinguishable from 0."""
    tested = {k: c for k, c in corr.items() if math.isfinite(c.tau)}
    if not tested:
        counts = ", ".join(f"{m} {_with_probes(corr, m)}" for m in methods)
        return (f"No τ can be computed: each method has fewer than {MIN_N} runs with probes "
                f"({counts}) or values that do not vary. Sharpness and generalisation cannot "
                "be related within a method here, and pooling methods would not answer the "
                "question.")
    found = [f"{m}: {label(p)} vs {GAPS[g]} (τ {c.tau:+.2f}, Holm p {adjusted[m, p, g]:.2g})"
             for (m, p, g), c in tested.items() if adjusted[m, p, g] < ALPHA]
    if not found:
        return (f"Every τ that could be computed (from {MIN_N} runs of a method) is "
                f"indistinguishable from 0 (no {HOLM}-adjusted p below {ALPHA}): "
                "these runs give no evidence that sharpness predicts the generalisation gap "
                "within a method.")
    return "τ distinguishable from 0 after correction: " + "; ".join(found) + "."


def _figure(ctx: Context, runs, panels: dict[tuple[str, str], list[str]]):
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    probes = list(dict.fromkeys(p for p, _ in panels))
    gaps = list(dict.fromkeys(g for _, g in panels))
    fig = style.new_figure()
    axes = fig.subplots(len(gaps), len(probes), squeeze=False, sharey="row", sharex="col")
    for i, g in enumerate(gaps):
        for j, p in enumerate(probes):
            ax = axes[i][j]
            if (p, g) not in panels:
                style.note(ax, f"fewer than {MIN_N} runs\nof any method")
                continue
            for method in panels[p, g]:
                group = runs[runs["method"] == method]
                ax.scatter(ctx.data.column(group, p), ctx.data.column(group, g), s=16,
                           color=ctx.colors[method], label=method)
            ax.xaxis.set_major_locator(MaxNLocator(3))
            # no shared "1e-5" offset: it would collide with the axis label
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
            ax.tick_params(labelsize=6)
            if i == len(gaps) - 1:
                ax.set_xlabel(f"{label(p)}\n({unit(p)})", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{GAPS[g]}\n(mIoU, fraction)", fontsize=8)
    legend(axes[0][0], loc="best", fontsize=7)
    return fig
