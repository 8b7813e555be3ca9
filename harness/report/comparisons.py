"""Each method against AdamW, at two levels, with the family's Holm correction applied.

- Seed level: Δ per seed (runs with the same seed share data, initialisation and prompts),
  its Student-t interval, and the exact sign-flip p. This is the question a reader asks —
  would the method win again with other training seeds? — and the only level that earns a
  significance mark.
- Mask level (clean test mIoU only): the per-mask IoU of each method averaged over its runs,
  differenced mask by mask, with a bootstrap over test images. It answers a narrower question
  — do these trained models differ beyond the luck of the test images? — and ignores
  seed-to-seed variation, so it is reported without a mark.

Every table of such tests is one family: its p-values are Holm-adjusted together (per level),
and a mark (*) means a Holm-adjusted seed-level p < 0.05.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from harness.report.collect import REFERENCE
from harness.report.multiplicity import HOLM, can_mark, holm, no_mark_sentence
from harness.report.power import POWER, mask_mdd, seed_mdd
from harness.report.sections.base import Context, run_values
from harness.report.stats import (
    ALPHA,
    ClusterTest,
    Estimate,
    PairedTest,
    cluster_bootstrap,
    mean_ci,
    paired,
)
from harness.tracking import schema

MARK = "*"


@dataclass(frozen=True)
class Comparison:
    method: str
    label: str  # what is compared (a metric, a shift cell)
    seed: PairedTest  # n = 1 without a p when nothing pairs: the difference of means
    mask: ClusterTest | None = None
    seed_holm: float = math.nan
    mask_holm: float = math.nan

    @property
    def unpaired(self) -> bool:
        """A difference without a test: nothing paired by seed (see `seed_test`)."""
        return self.seed.diff.n > 0 and math.isnan(self.seed.p)

    @property
    def mark(self) -> str:
        return MARK if self.seed_holm < ALPHA else ""

    def seed_text(self, spec: str = "+.3f") -> str:
        if self.unpaired:
            return f"{self.seed.diff.mean:{spec}} (difference of means)"
        return self.seed.diff.text(spec) + self.mark

    def p_text(self) -> str:
        return _p_pair(self.seed.p, self.seed_holm)

    def mask_text(self) -> str:
        if self.mask is None:
            return "–"
        diff = self.mask.diff
        if diff.has_ci or not math.isfinite(diff.mean):
            return diff.text("+.3f")
        return f"{diff.mean:+.3f} (no CI: {self.mask.images} images)"


def _p_pair(raw: float, adjusted: float) -> str:
    return "–" if not math.isfinite(raw) else f"{raw:.3g} ({adjusted:.3g})"


def per_seed(runs: pd.DataFrame, values: pd.Series) -> dict:
    return dict(zip(runs["seed"], values))


UNPAIRED = "no common seeds: difference of means"


def seed_test(mine: dict, ref: dict) -> PairedTest:
    """Paired by seed when seeds match; otherwise (an ensemble has no seed) the plain
    difference of means as one value, without an interval or a p."""
    test = paired(mine, ref)
    if test.diff.n:
        return test
    a, b = mean_ci(mine.values()), mean_ci(ref.values())
    if not (a.n and b.n):
        return test
    return PairedTest(Estimate(a.mean - b.mean, math.nan, math.nan, 1, UNPAIRED), math.nan)


def mask_test(ctx: Context, method: str) -> ClusterTest | None:
    """Per-mask clean test IoU of `method` minus AdamW's (each averaged over its final runs),
    bootstrapped over test images; None when either lacks per-mask scores or they differ in
    the masks scored."""
    mine, ref = ctx.mask_scores(method), ctx.mask_scores(REFERENCE)
    if mine is None or ref is None or len(mine) != len(ref) or not np.array_equal(
            mine["image"], ref["image"]):
        return None
    return cluster_bootstrap(mine["iou"] - ref["iou"], mine["image"])


def adjust(tests: list[Comparison]) -> list[Comparison]:
    """The family `tests` with Holm applied over its seed-level and its mask-level p."""
    seed = holm([t.seed.p for t in tests])
    mask = holm([t.mask.p if t.mask else math.nan for t in tests])
    return [replace(t, seed_holm=s, mask_holm=m) for t, s, m in zip(tests, seed, mask)]


def family_sentences(tests: list[Comparison], what: str = "cell") -> list[str]:
    """Which correction was applied, and, when no cell could reach a mark, why not."""
    out = []
    paired_tests = [t for t in tests if math.isfinite(t.seed.p)]
    if paired_tests:
        out.append(f"p-values: exact two-sided sign-flip test over the paired seeds (all 2^n "
                   f"sign patterns), then {HOLM} over the {len(paired_tests)} seed-level "
                   f"{what}s of this table (shown in brackets); {MARK} marks a "
                   f"{HOLM}-adjusted p < {ALPHA}.")
        if not can_mark([t.seed.min_p for t in paired_tests]):
            out.append(no_mark_sentence([t.seed.diff.n for t in paired_tests], what))
    masked = [t for t in tests if t.mask is not None and math.isfinite(t.mask.p)]
    if masked:
        out.append(f"Per-mask bootstrap p-values (twice the smaller share of resampled Δ on "
                   f"either side of 0) get their own {HOLM} over the {len(masked)} per-mask "
                   f"tests, in brackets; they carry no mark.")
    return out


# --------------------------------------------------------------------------- the summary's

# (label, metric) of the headline comparisons
HEADLINE = (("clean mIoU", schema.TEST_MIOU), ("mean shifted mIoU", schema.SHIFT_MEAN_MIOU),
            ("relative robustness", schema.SHIFT_RELATIVE))


def learned_values(ctx: Context, runs: pd.DataFrame, metric: str) -> pd.Series:
    """`metric` per run; relative robustness only where the run beat the box prior (a ratio
    of a run that learned nothing describes the box, not the model)."""
    values = run_values(ctx, runs, metric, False)
    if metric == schema.SHIFT_RELATIVE and ctx.floor is not None:
        values = values.where(ctx.floor.above(ctx.data, runs))
    return values


def summary_comparisons(ctx: Context) -> list[Comparison]:
    """Every shown method vs AdamW on the headline metrics, Holm-adjusted as one family."""
    return ctx.cached("summary_comparisons", lambda: _summary_comparisons(ctx))


def _summary_comparisons(ctx: Context) -> list[Comparison]:
    tests = []
    if ctx.reference_ok:
        ref_runs = ctx.data.final(REFERENCE)
        for method in (m for m in ctx.present if m != REFERENCE):
            runs = ctx.data.final(method)
            for label, metric in HEADLINE:
                test = seed_test(per_seed(runs, learned_values(ctx, runs, metric)),
                                 per_seed(ref_runs, learned_values(ctx, ref_runs, metric)))
                mask = mask_test(ctx, method) if metric == schema.TEST_MIOU else None
                if test.diff.n or mask is not None:
                    tests.append(Comparison(method, label, test, mask))
    return adjust(tests)


def delta_table_rows(tests: list[Comparison]) -> tuple[list[dict], list[dict]]:
    rows = [{"method": t.method, "metric": t.label, "delta": t.seed.diff.mean,
             "ci_low": t.seed.diff.low, "ci_high": t.seed.diff.high, "n_seeds": t.seed.diff.n,
             "paired": not t.unpaired, "sign_flip_p": t.seed.p, "holm_p": t.seed_holm,
             "mark": t.mark,
             "mask_delta": t.mask.diff.mean if t.mask else math.nan,
             "mask_ci_low": t.mask.diff.low if t.mask else math.nan,
             "mask_ci_high": t.mask.diff.high if t.mask else math.nan,
             "masks": t.mask.masks if t.mask else 0, "images": t.mask.images if t.mask else 0,
             "mask_p": t.mask.p if t.mask else math.nan, "mask_holm_p": t.mask_holm}
            for t in tests]
    shown = [{"method": t.method, "metric": t.label,
              "Δ over seeds [95 % CI]": t.seed_text(),
              "seeds": "unpaired" if t.unpaired else str(t.seed.diff.n),
              "sign-flip p (Holm)": t.p_text(),
              "Δ per mask [95 % CI over images]": t.mask_text(),
              "masks / images": f"{t.mask.masks} / {t.mask.images}" if t.mask else "–",
              "bootstrap p (Holm)": _p_pair(t.mask.p, t.mask_holm) if t.mask else "–"}
             for t in tests]
    return rows, shown


def power_rows(ctx: Context, tests: list[Comparison]) -> tuple[list[dict], list[dict]]:
    """Minimum detectable clean-mIoU difference per method vs AdamW at both levels."""
    rows, shown = [], []
    for t in (t for t in tests if t.label == HEADLINE[0][0]):
        runs, ref = ctx.data.final(t.method), ctx.data.final(REFERENCE)
        mine = per_seed(runs, ctx.data.column(runs, schema.TEST_MIOU))
        theirs = per_seed(ref, ctx.data.column(ref, schema.TEST_MIOU))
        d = np.array([mine[s] - theirs[s] for s in mine if s in theirs], float)
        d = d[np.isfinite(d)]
        sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
        seed = seed_mdd(sd, len(d))
        mask = mask_mdd(t.mask.se, t.mask.images) if t.mask else math.nan
        rows.append({"method": t.method, "n_seeds": len(d), "seed_sd": sd, "seed_mdd": seed,
                     "masks": t.mask.masks if t.mask else 0,
                     "images": t.mask.images if t.mask else 0,
                     "mask_sd": t.mask.sd if t.mask else math.nan,
                     "mask_se": t.mask.se if t.mask else math.nan, "mask_mdd": mask})
        shown.append({"method": t.method, "seeds": str(len(d)), "SD of Δ per seed":
                      _num(sd), "detectable over seeds": _mdd(seed, len(d)),
                      "masks / images": f"{t.mask.masks} / {t.mask.images}" if t.mask else "–",
                      "SD of Δ per mask": _num(t.mask.sd) if t.mask else "–",
                      "detectable per mask": _num(mask)})
    return rows, shown


def _num(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "–"


def _mdd(value: float, n: int) -> str:
    if value == math.inf:
        return f"none: {n} seeds cannot give p < {ALPHA}"
    return _num(value)


def power_sentence() -> str:
    return (f"Minimum detectable difference: the smallest true Δ clean mIoU each comparison "
            f"would find with {POWER:.0%} power at two-sided α = {ALPHA} — over seeds, a "
            "paired t approximation from the SD of the per-seed differences and n (none when "
            "n seeds cannot give a sign-flip p below α at all: n ≤ 5); per mask, from the SD "
            "of the per-mask differences and the number of masks and images, with masks of "
            "one image treated as correlated (cluster-robust standard error, df = images − 1).")


def headline(ctx: Context) -> list[str]:
    """One sentence per method: its Δ vs AdamW on the headline numbers, and its cost."""
    tests = summary_comparisons(ctx)
    out = []
    for method in (m for m in ctx.present if m != REFERENCE):
        parts = []
        for t in (t for t in tests if t.method == method):
            part = f"{t.label} Δ {t.seed_text()}"
            if math.isfinite(t.seed.p):
                part += f" (sign-flip p {t.seed.p:.3g}, Holm {t.seed_holm:.3g})"
            if t.mask is not None:
                part += f"; per mask Δ {t.mask_text()}"
                if t.mask.diff.has_ci:
                    part += f" over {t.mask.masks} masks in {t.mask.images} images"
            parts.append(part)
        cost = mean_ci(run_values(ctx, ctx.data.final(method), schema.COST_TRAIN, True))
        if cost.n:
            parts.append(f"training time ×{cost.mean:.2f} AdamW's")
        n = len(ctx.data.final(method))
        out.append(f"{method} vs AdamW ({n} final run{'s' if n != 1 else ''}): "
                   f"{'; '.join(parts) or 'no comparable numbers'}.")
    return out
