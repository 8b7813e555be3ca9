"""Measured cost next to what is commonly stated about it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.optim.methods import METHODS, Method
from harness.report import style
from harness.report.collect import REFERENCE
from harness.report.document import FigureItem, Section, Table
from harness.report.figures import ci_bars, legend
from harness.report.sections.base import Context, new_section, run_values
from harness.report.stats import Estimate, mean_ci
from harness.tracking import schema

TITLE = "Cost vs commonly stated claims"
KINDS = {"train": (schema.COST_TRAIN, "training time"),
         "memory": (schema.COST_MEMORY, "peak memory"),
         "inference": (schema.COST_INFER, "inference time per image")}


@dataclass(frozen=True)
class Claim:
    method: str
    kind: str  # train | memory | inference
    stated: str
    low: float  # the stated ratio to AdamW, as an interval
    high: float


# Published statements about one method (the ASAM article); each replaces that method's
# generic claim of the same kind, being the more specific one.
STATED = (
    Claim("asam", "train", "+20–30 %", 1.20, 1.30),
    Claim("asam", "memory", "+15 %", 1.15, 1.15),
    Claim("asam", "inference", "+0 % (same network)", 1.0, 1.0),
)
_COUNT = {1: "one", 2: "two", 3: "three", 4: "four"}


def _generic(method: Method) -> tuple[Claim, ...]:
    """What follows from a sharpness-aware method's passes per step: that many forward–
    backward passes per training step, and the unchanged network at inference."""
    n = method.passes
    return (Claim(method.name, "train",
                  f"×{n} ({_COUNT.get(n, n)} forward–backward passes per step)", float(n),
                  float(n)),
            Claim(method.name, "inference", "+0 % (same network)", 1.0, 1.0))


def _all_claims() -> tuple[Claim, ...]:
    stated = {(c.method, c.kind) for c in STATED}
    generic = [c for m in METHODS.values() if m.sharpness_aware for c in _generic(m)
               if (c.method, c.kind) not in stated]
    return (*STATED, *generic)


CLAIMS = _all_claims()


def _verdict(est: Estimate, low: float, high: float) -> str:
    if est.n == 0 or not math.isfinite(est.mean) or not math.isfinite(low):
        return "not measured"
    lo, hi = (est.low, est.high) if est.has_ci else (est.mean, est.mean)
    single = "" if est.has_ci else f" (n={est.n}, no CI)"
    if hi < low:
        return "lower than stated" + single
    if lo > high:
        return "higher than stated" + single
    return "consistent with the statement" + single


def _ratio_text(est: Estimate) -> str:
    if est.n == 0 or not math.isfinite(est.mean):
        return "–"
    text = f"×{est.mean:.2f} ({100 * (est.mean - 1):+.0f} %)"
    return f"{text} [{est.low:.2f}, {est.high:.2f}], n={est.n}" if est.has_ci else \
        f"{text}, n={est.n}"


def _claims(ctx: Context) -> list[tuple[Claim, Estimate]]:
    out = []
    for claim in CLAIMS:
        if claim.method in ctx.methods:
            metric = KINDS[claim.kind][0]
            runs = ctx.data.final(claim.method)
            out.append((claim, mean_ci(run_values(ctx, runs, metric, True))))
    for method in ctx.present:  # ensembles: K× training and K× inference
        runs = ctx.data.final(method)
        if not runs["role"].eq(schema.ROLE_ENSEMBLE).any():
            continue
        sizes = runs.get(schema.param_column(schema.PARAM_ENSEMBLE_SIZE))
        k = float(pd.to_numeric(sizes, errors="coerce").max()) if sizes is not None else math.nan
        k_text = f"×{k:g}" if math.isfinite(k) else "×K"
        vs_member = mean_ci(ctx.data.column(runs, schema.COST_INFER_RATIO))
        members = (runs[schema.param_column(schema.PARAM_MEMBERS)].iloc[0]
                   if schema.param_column(schema.PARAM_MEMBERS) in runs else "member")
        out.append((Claim(method, "inference vs one member", f"{k_text} (K members run)", k, k),
                    vs_member))
        out.append((Claim(method, "train", f"{k_text} (K {members} trainings)", k, k),
                    mean_ci(run_values(ctx, runs, KINDS["train"][0], True))))
    return out


def build(ctx: Context) -> Section:
    section = new_section(__name__)
    claims = _claims(ctx)
    rows = [{"method": c.method, "cost": c.kind, "stated": c.stated, "stated_low": c.low,
             "stated_high": c.high, "measured_ratio": e.mean, "ci_low": e.low,
             "ci_high": e.high, "n": e.n, "verdict": _verdict(e, c.low, c.high)}
            for c, e in claims]
    shown = [{"method": r["method"], "cost": KINDS.get(r["cost"], (0, r["cost"]))[1],
              "commonly stated": r["stated"], "measured ratio [95 % CI]": _ratio_text(e),
              "verdict": r["verdict"]} for r, (_, e) in zip(rows, claims)]
    section.say(
        "Ratios divide each final run's cost by the mean of the AdamW final runs of the same "
        "study (same data, steps and machine). Training time is wall-clock time of the "
        "training loop; peak memory is the CUDA allocator's peak on a GPU, or the process's "
        "resident memory sampled every 50 ms on a CPU; inference is test-set time per image. "
        "A claim is consistent when the measured 95 % CI overlaps the stated value.")
    if not ctx.reference_ok:
        section.say("No successful AdamW final runs: no ratio can be measured.")
    section.say(_noise_note(ctx))
    claimed = [m for m in METHODS if any(c.method == m for c in CLAIMS)]
    if not any(m in ctx.methods for m in claimed):
        section.say(_unchecked([style.display_name(m) for m in claimed]))
    if any(c.kind == "inference vs one member" for c, _ in claims):
        section.say("Every ratio is to AdamW's mean except an ensemble's inference, which is to "
                    "one of its own members timed alternately in the same process.")
    else:
        section.say("No SAM-E ensemble was recorded in this study, so the ×K inference claim "
                    "for ensembles is not checked here.")
    for sentence in ctx.failed_sentences():
        section.say(sentence)
    if rows:
        section.add(Table("cost_claims", pd.DataFrame(rows), pd.DataFrame(shown),
                          "Cost relative to AdamW: commonly stated vs measured."))
    section.add(_absolute(ctx))
    if ctx.draw and ctx.present and ctx.reference_ok:
        section.add(FigureItem("cost_ratios", _figure(ctx, claims),
                               "Measured cost relative to AdamW (bars, 95 % CI whiskers); "
                               "black ticks: the commonly stated value."))
    return section


def _unchecked(names: list[str]) -> str:
    """Says that no method with a stated claim is shown (`names`: those methods)."""
    if len(names) == 1:
        return f"{names[0]} is not among the methods shown; its claims are not checked."
    subject = (f"Neither {names[0]} nor {names[1]}" if len(names) == 2
               else f"None of {', '.join(names[:-1])} or {names[-1]}")
    return f"{subject} is among the methods shown; their claims are not checked."


def _noise_note(ctx: Context) -> str | None:
    """Same config, same machine: AdamW's seeds should take about as long as each other. When
    they do not, the machine was shared and time ratios between methods are unreliable."""
    times = ctx.data.column(ctx.data.final(REFERENCE), schema.COST_TRAIN).dropna()
    if len(times) < 2 or times.min() <= 0 or times.max() / times.min() < 1.5:
        return None
    return (f"AdamW's own final runs differ by ×{times.max() / times.min():.1f} in training "
            "time, so the machine's load changed while the study ran: treat the time ratios "
            "as rough, and measure the overhead side by side with `harness bench optimizers`.")


def _absolute(ctx: Context) -> Table | None:
    if not ctx.present:
        return None
    cols = {"train_seconds": (schema.COST_TRAIN, "training (s)"),
            "step_seconds": (schema.COST_STEP, "per step (s)"),
            "peak_memory_mib": (schema.COST_MEMORY, "peak memory (MiB)"),
            "infer_ms_per_image": (schema.COST_INFER, "inference (ms/image)")}
    rows, shown = [], []
    for m in ctx.present:
        est = {k: ctx.estimate(m, metric) for k, (metric, _) in cols.items()}
        rows.append({"method": m, "n": len(ctx.data.final(m)),
                     **{k: e.mean for k, e in est.items()},
                     **{f"{k}_ci_low": e.low for k, e in est.items()},
                     **{f"{k}_ci_high": e.high for k, e in est.items()}})
        shown.append({"method": m, "n": str(len(ctx.data.final(m))),
                      **{label: e.text("sig3") for (_, label), e in
                         zip(cols.values(), est.values())}})
    return Table("cost_absolute", pd.DataFrame(rows), pd.DataFrame(shown),
                 "Measured cost per final run: mean [95 % CI].")


def _figure(ctx: Context, claims):
    fig = style.new_figure()
    ax = fig.add_subplot()
    groups = list(KINDS)
    series = {m: [mean_ci(run_values(ctx, ctx.data.final(m), KINDS[k][0], True))
                  for k in groups] for m in ctx.present}
    ci_bars(ax, [KINDS[k][1] for k in groups], series, ctx.colors)
    shown = [m for m, est in series.items() if any(e.n for e in est)]
    width = 0.8 / max(1, len(shown))
    first = True
    for claim, _ in claims:
        if claim.kind in groups and claim.method in shown and math.isfinite(claim.low):
            x = groups.index(claim.kind) - 0.4 + width * (shown.index(claim.method) + 0.5)
            for y in {claim.low, claim.high}:
                ax.hlines(y, x - width / 2, x + width / 2, color="black", linewidth=2,
                          label="commonly stated" if first else None)
                first = False
    ax.axhline(1.0, color="0.5", linewidth=0.8, linestyle="--")
    ax.set(ylabel=style.RATIO, xlabel="cost")
    legend(ax, loc="upper right")
    return fig
