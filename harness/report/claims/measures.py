"""What each kind of statement is measured by: one registry, ``MEASURES``, name → measure.

A measure reads the recorded runs of one or two arms (:class:`Arms`) and returns a
:class:`Result`: what was measured, the estimate with its interval, and the verdict of
:mod:`~harness.report.claims.verdict`. Pairing follows the design: runs of one arm are paired
by seed (same data, same initialisation); runs of different arms by seed too where the
estimate is a per-seed difference of differences, else compared as independent groups
(Welch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from harness.errors import HarnessError
from harness.report.collect import StudyData, load_study_data
from harness.report.floor import box_floor
from harness.report.stats import MIN_CI_N, Estimate, mean_ci, paired, slope_ci, welch_ci
from harness.report.claims.verdict import CONTRADICTED, INCONCLUSIVE, NOT_TESTED, SUPPORTED, \
    judge, range_text
from harness.tracking import schema
from harness.tracking.schema import tag_column


@dataclass
class Result:
    what: str  # the measured quantity, in words
    verdict: str
    rule: str  # the rule as applied to this estimate
    estimate: Estimate | None = None
    claimed: tuple[float, float] | None = None
    arms: tuple[str, ...] = ()
    metric: str = ""
    tested_by: str = ""  # for "not tested here": the preset (or machine) that tests it


@dataclass
class Arms:
    """The recorded arms of one claims file, read once each."""
    names: dict[str, str]  # arm → recorded study name
    preset: str | None
    tracking_uri: str | None = None
    storage_url: str | None = None
    _data: dict = field(default_factory=dict)

    def data(self, arm: str) -> StudyData:
        if arm not in self._data:
            self._data[arm] = load_study_data(self.names[arm], self.preset, self.tracking_uri,
                                              self.storage_url)
        return self._data[arm]

    def by_seed(self, arm: str, method: str, metric: str) -> dict:
        return {s: v for s, v in self.data(arm).by_seed(method, metric).items()
                if math.isfinite(v)}

    def runs(self, arm: str) -> int:
        """Runs recorded in the arm, whatever their outcome (what the test cost)."""
        return len(self.data(arm).runs)

    def train_minutes(self, arm: str) -> float:
        data = self.data(arm)
        return float(data.column(data.runs, schema.COST_TRAIN).fillna(0).sum()) / 60


def _per_seed(values: dict) -> Estimate:
    return mean_ci(list(values.values()))


def _judged(what: str, est: Estimate, claimed: tuple[float, float], arms: tuple[str, ...],
            metric: str) -> Result:
    verdict, rule = judge(est, *claimed)
    return Result(what, verdict, rule, est, claimed, arms, metric)


# ------------------------------------------------------------------ the measures
def _other_device(arms: Arms, p: dict) -> Result | None:
    """A "not tested here" result when the part needs runs on `device` and the arm's ran
    elsewhere (CPU peak memory is the process's resident set, cached data and memory kept
    from earlier runs included: too coarse for a 15 % difference)."""
    if not p.get("device"):
        return None
    data = arms.data(p["arm"])
    column = data.runs.get(tag_column(schema.DEVICE))
    ran = set(column.dropna()) if column is not None else set()
    if ran == {p["device"]}:
        return None
    where = ", ".join(sorted(ran)) or "an unrecorded device"
    why = p.get("why") or "the measurement means little there"
    return Result(f"{p['method']} ÷ {p['reference']} {p['metric']}", NOT_TESTED,
                  f"needs runs on {p['device']}; these ran on {where}: {why}",
                  arms=(p["arm"],), metric=p["metric"],
                  tested_by=f"the same arm on a {p['device']} machine")


def ratio(arms: Arms, p: dict) -> Result:
    """Per seed, `method`'s metric ÷ `reference`'s (same arm, same seed): a cost ratio."""
    if (elsewhere := _other_device(arms, p)) is not None:
        return elsewhere
    mine = arms.by_seed(p["arm"], p["method"], p["metric"])
    ref = arms.by_seed(p["arm"], p["reference"], p["metric"])
    ratios = {s: mine[s] / ref[s] for s in mine if s in ref and ref[s] > 0}
    return _judged(f"{p['method']} ÷ {p['reference']} {p['metric']}, per seed",
                   _per_seed(ratios), p["claimed"], (p["arm"],), p["metric"])


def delta(arms: Arms, p: dict) -> Result:
    """`method`@`arm` − `versus`@`versus_arm` on `metric`: paired by seed within one arm,
    independent groups (Welch) across arms."""
    other_arm = p["versus_arm"] or p["arm"]
    a = arms.by_seed(p["arm"], p["method"], p["metric"])
    b = arms.by_seed(other_arm, p["versus"], p["metric"])
    if len(b) == 1 and len(a) > 1:  # an ensemble: one run, its value taken as fixed
        only = next(iter(b.values()))
        est = _per_seed({s: v - only for s, v in a.items()})
        how = f"{p['versus']}'s one run taken as fixed"
    elif other_arm == p["arm"]:
        est = paired(a, b).diff
        how = "paired by seed"
    else:
        est = welch_ci(list(a.values()), list(b.values()))
        how = "independent arms, Welch"
    where = p["arm"] if other_arm == p["arm"] else f"{p['arm']} vs {other_arm}"
    return _judged(f"{p['method']} − {p['versus']} {p['metric']} ({where}; {how})", est,
                   p["claimed"], tuple(dict.fromkeys((p["arm"], other_arm))), p["metric"])


def interaction(arms: Arms, p: dict) -> Result:
    """How much more `arm` (a changed setting) moves `method` than `versus`, per seed:
    (method@arm − method@baseline) − (versus@arm − versus@baseline)."""
    base = p["baseline_arm"]
    cells = [arms.by_seed(arm, m, p["metric"]) for arm in (p["arm"], base)
             for m in (p["method"], p["versus"])]
    seeds = set.intersection(*(set(c) for c in cells))
    values = {s: (cells[0][s] - cells[2][s]) - (cells[1][s] - cells[3][s]) for s in seeds}
    return _judged(f"({p['method']} − {p['versus']}) change of {p['metric']} from "
                   f"{base} to {p['arm']}, per seed", _per_seed(values), p["claimed"],
                   (p["arm"], base), p["metric"])


def above_prior(arms: Arms, p: dict) -> Result:
    """Per final run, test mIoU minus the best box prior's (the model beat the image-blind
    answer)."""
    data = arms.data(p["arm"])
    floor = box_floor(data)
    if floor is None:
        return Result(f"{p['method']} test mIoU above the box prior", INCONCLUSIVE,
                      "no box prior recorded in the arm", arms=(p["arm"],))
    values = data.column(data.final(p["method"]), schema.TEST_MIOU) - floor.test_miou
    return _judged(f"{p['method']} test mIoU − {floor.name} ({floor.test_miou:.3f})",
                   mean_ci(values), p["claimed"], (p["arm"],), schema.TEST_MIOU)


def spread_ratio(arms: Arms, p: dict) -> Result:
    """Seed-to-seed SD of `method`@`arm` ÷ that of `method`@`versus_arm`, with the F
    interval (normal runs; each arm needs 3 seeds)."""
    a = np.array(list(arms.by_seed(p["arm"], p["method"], p["metric"]).values()))
    b = np.array(list(arms.by_seed(p["versus_arm"], p["method"], p["metric"]).values()))
    n = min(len(a), len(b))
    what = f"SD over seeds of {p['method']} {p['metric']}: {p['arm']} ÷ {p['versus_arm']}"
    if n < MIN_CI_N:
        sd_b = b.std(ddof=1) if len(b) >= 2 else 0.0
        point = float(a.std(ddof=1) / sd_b) if len(a) >= 2 and sd_b > 0 else math.nan
        est = Estimate(point, math.nan, math.nan, n,
                       f"n = {len(a)} and {len(b)}: an SD ratio needs {MIN_CI_N} per arm")
    else:
        f = a.var(ddof=1) / b.var(ddof=1) if b.var(ddof=1) > 0 else math.inf
        lo = f / stats.f.ppf(0.975, len(a) - 1, len(b) - 1)
        hi = f / stats.f.ppf(0.025, len(a) - 1, len(b) - 1)
        est = Estimate(math.sqrt(f), math.sqrt(lo), math.sqrt(hi), n)
    return _judged(what, est, p["claimed"], (p["arm"], p["versus_arm"]), p["metric"])


def ensemble_cost(arms: Arms, p: dict) -> Result:
    """An ensemble's inference time ÷ one member's, timed alternately in one process,
    divided by its size K: 1 means "K× the cost"."""
    data = arms.data(p["arm"])
    runs = data.final(p["ensemble"])
    size = pd.to_numeric(runs.get(schema.param_column(schema.PARAM_ENSEMBLE_SIZE)),
                         errors="coerce") if len(runs) else pd.Series(dtype=float)
    values = data.column(runs, schema.COST_INFER_RATIO) / size if len(runs) else []
    return _judged(f"{p['ensemble']} inference ÷ one member's, ÷ K", mean_ci(values),
                   p["claimed"], (p["arm"],), schema.COST_INFER_RATIO)


def divergence(arms: Arms, p: dict) -> Result:
    """Over a grid of `param` (every run of the arm, tuning and final): does some value
    destabilise training (diverged or collapsed), and does `start` train?"""
    data = arms.data(p["arm"])
    runs = data.runs[data.runs["method"] == p["method"]]
    col = schema.param_column(p["param"])
    if col not in runs or runs.empty:
        return Result(f"{p['method']} runs over {p['param']}", INCONCLUSIVE,
                      f"no runs of {p['method']} with param {p['param']}", arms=(p["arm"],))
    values = pd.to_numeric(runs[col], errors="coerce")
    broke = runs["outcome"].isin([schema.STATUS_DIVERGED, schema.STATUS_COLLAPSED])
    grid = sorted(values.dropna().unique())
    failed = sorted(values[broke].dropna().unique())
    at_start = broke[np.isclose(values, p["start"])]
    text = (f"{p['param']} grid {', '.join(f'{v:g}' for v in grid)}: destabilised at "
            f"{', '.join(f'{v:g}' for v in failed) or 'none'}")
    what = f"{p['method']} runs over {p['param']} (outcome per run)"
    if at_start.empty:
        return Result(what, INCONCLUSIVE, f"{text}; {p['param']} = {p['start']:g} not run",
                      arms=(p["arm"],), metric=p["param"])
    if at_start.any():
        return Result(what, CONTRADICTED, f"{text}, including the suggested "
                      f"{p['start']:g}", arms=(p["arm"],), metric=p["param"])
    if failed:
        return Result(what, SUPPORTED, f"{text}; {p['param']} = {p['start']:g} trained in "
                      f"all {len(at_start)} run(s)", arms=(p["arm"],), metric=p["param"])
    return Result(what, INCONCLUSIVE, f"{text}: no value in the grid broke training",
                  arms=(p["arm"],), metric=p["param"])


def savings_bracket(rungs: list[tuple[int, Estimate]], full: int,
                    tolerance: float) -> tuple[Estimate, str]:
    """The fraction of labels a method saves, bracketed on a ladder of training-set sizes.

    ``rungs``: (training images, estimate of method@size − reference@``full``) per rung.
    The method *matches* at a size when the difference is ≥ −``tolerance``. Assuming more
    labels never hurt, a rung whose interval lies above −tolerance (with every larger rung)
    bounds the savings from below; the largest rung whose interval lies below −tolerance
    bounds them from above. The point is the smallest size whose mean matches (and every
    larger rung's). Returns the estimate (savings = 1 − size / ``full``) and the grid in words.
    """
    rungs = sorted(rungs, key=lambda r: r[0])
    sizes = [n for n, _ in rungs]

    def saved(n: int) -> float:
        return 1 - n / full

    def first_from(ok) -> int | None:  # smallest rung from which every larger one is ok
        index = None
        for i in range(len(rungs) - 1, -1, -1):
            if not ok(rungs[i][1]):
                break
            index = i
        return index

    n = min((est.n for _, est in rungs), default=0)
    words = ", ".join(f"{size}: {est.text('.3f')}" for size, est in rungs)
    if not rungs or any(not math.isfinite(est.mean) for _, est in rungs):
        return Estimate(math.nan, math.nan, math.nan, 0, "a rung has no runs"), words
    point = first_from(lambda e: e.mean >= -tolerance)
    mean = saved(sizes[point]) if point is not None else 0.0
    if any(not est.has_ci for _, est in rungs):
        return Estimate(mean, math.nan, math.nan, n,
                        f"n = {n} on a rung: no interval below {MIN_CI_N} runs"), words
    sure = first_from(lambda e: e.low >= -tolerance)
    failing = [size for size, est in rungs if est.high < -tolerance]
    # no rung surely matching: savings of 0 or less are not excluded (0 is the bound a
    # claimed saving is judged against)
    low = saved(sizes[sure]) if sure is not None else 0.0
    high = saved(max(failing)) if failing else 1.0
    return Estimate(mean, low, min(max(high, low), 1.0), n), words


def label_savings(arms: Arms, p: dict) -> Result:
    """Labels `method` needs to match `versus` trained on all of them (`versus_arm`), over
    the ladder `arms` (each the study with fewer training images), as the fraction saved."""
    ref_data = arms.data(p["versus_arm"])
    full = _train_size(ref_data, p["versus"])
    reference = arms.by_seed(p["versus_arm"], p["versus"], p["metric"])
    used = tuple(dict.fromkeys([*p["arms"], p["versus_arm"]]))
    rungs = []
    for arm in used:
        if p["method"] not in arms.data(arm).all_methods:
            continue
        mine = arms.by_seed(arm, p["method"], p["metric"])
        est = (paired(mine, reference).diff if arm == p["versus_arm"]
               else welch_ci(list(mine.values()), list(reference.values())))
        rungs.append((_train_size(arms.data(arm), p["method"]), est))
    est, words = savings_bracket(rungs, full, p["tolerance"])
    what = (f"labels {p['method']} needs to come within {p['tolerance']:g} {p['metric']} of "
            f"{p['versus']} on all {full}, as the fraction saved (rungs, {p['method']} − "
            f"{p['versus']}: {words})")
    verdict, rule = judge(est, *p["claimed"])
    rule += ("; savings bracketed on the ladder's sizes, assuming more labels never hurt; "
             "intervals per rung, not corrected across rungs"
             + (f"; a lower bound of 0: no rung surely matches, so {p['method']} may save "
                "nothing" if est.has_ci and est.low == 0 else ""))
    return Result(what, verdict, rule, est, p["claimed"], used, p["metric"])


def _train_size(data: StudyData, method: str) -> int:
    """The training images the final runs of `method` saw (a recorded param)."""
    finals = data.final(method)
    values = pd.to_numeric(finals.get(schema.param_column("data.train_size")),
                           errors="coerce").dropna().unique() if len(finals) else []
    if len(values) != 1:
        raise HarnessError(f"study {data.name}: the final runs of {method} record "
                           f"{len(values)} training-set sizes; a label ladder needs one")
    return int(values[0])


def size_trend(arms: Arms, p: dict) -> Result:
    """How `method`'s gain over `versus` (per seed, paired within an arm) changes per
    doubling of the model's parameters across the arms of a model-size ladder: the
    least-squares slope, every seed of every arm one point."""
    xs, ys, words = [], [], []
    for arm in p["arms"]:
        data = arms.data(arm)
        sizes = data.column(data.final(p["method"]), schema.MODEL_PARAMS).dropna().unique()
        if len(sizes) != 1:
            raise HarnessError(f"study {data.name}: the final runs of {p['method']} record "
                               f"{len(sizes)} model sizes; a size ladder needs one per arm")
        mine = arms.by_seed(arm, p["method"], p["metric"])
        other = arms.by_seed(arm, p["versus"], p["metric"])
        gains = paired(mine, other)
        for seed in sorted(mine.keys() & other.keys()):
            xs.append(math.log2(sizes[0]))
            ys.append(mine[seed] - other[seed])
        words.append(f"{sizes[0] / 1e6:.2f} M: {gains.diff.text('.3f')}")
    est = slope_ci(xs, ys)
    what = (f"change of {p['method']} − {p['versus']} {p['metric']} per doubling of model "
            f"parameters (per arm: {'; '.join(words)})")
    return _judged(what, est, p["claimed"], tuple(p["arms"]), p["metric"])


def untested(arms: Arms, p: dict) -> Result:
    return Result(p["measure"], NOT_TESTED, p["reason"], tested_by=p["tested_by"])


@dataclass(frozen=True)
class Measure:
    run: Callable[[Arms, dict], Result]
    required: tuple[str, ...]
    optional: dict = field(default_factory=dict)  # key → default
    arm_keys: tuple[str, ...] = ("arm",)


MEASURES: dict[str, Measure] = {
    "ratio": Measure(ratio, ("arm", "method", "metric", "claimed"),
                     {"reference": "adamw", "device": None, "why": None}),
    "delta": Measure(delta, ("arm", "method", "versus", "metric", "claimed"),
                     {"versus_arm": None}, ("arm", "versus_arm")),
    "interaction": Measure(interaction, ("arm", "baseline_arm", "method", "versus", "metric",
                                         "claimed"), {}, ("arm", "baseline_arm")),
    "above_prior": Measure(above_prior, ("arm", "method"), {"claimed": [0, None]}),
    "spread_ratio": Measure(spread_ratio, ("arm", "versus_arm", "method", "claimed"),
                            {"metric": schema.TEST_MIOU}, ("arm", "versus_arm")),
    "ensemble_cost": Measure(ensemble_cost, ("arm", "ensemble"), {"claimed": [0.8, 1.2]}),
    "divergence": Measure(divergence, ("arm", "method", "param", "start")),
    "size_trend": Measure(size_trend, ("arms", "method", "versus", "claimed"),
                          {"metric": schema.TEST_MIOU}, ("arms",)),
    "label_savings": Measure(label_savings, ("arms", "method", "versus", "versus_arm",
                                             "claimed"),
                             {"metric": schema.TEST_MIOU, "tolerance": 0.02},
                             ("arms", "versus_arm")),
    "untested": Measure(untested, ("measure", "reason", "tested_by"), {}, ()),
}


def claimed_range(value, source: str, key: str) -> tuple[float, float]:
    """`claimed: [low, high]` (either may be null: unbounded)."""
    if not (isinstance(value, list) and len(value) == 2):
        raise HarnessError(f"{source}: key '{key}' must be [low, high] (null for an open end)")
    low = -math.inf if value[0] is None else value[0]
    high = math.inf if value[1] is None else value[1]
    if not all(isinstance(v, (int, float)) for v in (low, high)) or low > high:
        raise HarnessError(f"{source}: key '{key}' is {value!r}; need numbers with low ≤ high")
    return float(low), float(high)


def check_part(part: dict, arms: dict, source: str, where: str) -> None:
    """Complete `part` with its measure's defaults, in place; a one-line error naming the
    key for an unknown measure, a missing or unknown key, or an arm not defined."""
    def fail(key: str, message: str) -> None:
        raise HarnessError(f"{source}: key '{where}.{key}' {message}")

    if not isinstance(part, dict) or "test" not in part:
        fail("test", f"is required (one of {', '.join(MEASURES)})")
    name = part["test"]
    if name not in MEASURES:
        fail("test", f"is {name!r}; choose one of {', '.join(MEASURES)}")
    measure = MEASURES[name]
    allowed = ("test", *measure.required, *measure.optional)
    for key in part:
        if key not in allowed:
            fail(key, f"is not a key of test {name} (keys: {', '.join(allowed[1:])})")
    for key in measure.required:
        if key not in part:
            fail(key, f"is required by test {name}")
    for key, default in measure.optional.items():
        part.setdefault(key, default)
    for key in measure.arm_keys:
        value = part.get(key)
        if key == "arms" and not isinstance(value, list):  # a ladder of one, written bare
            part[key] = value = [value]
        for arm in (value if isinstance(value, list) else [] if value is None else [value]):
            if arm not in arms:
                fail(key, f"names arm {arm!r}, which is not defined (arms: "
                     f"{', '.join(arms)})")
    if "claimed" in part:
        part["claimed"] = claimed_range(part["claimed"], source, f"{where}.claimed")


def measure(arms: Arms, part: dict) -> Result:
    return MEASURES[part["test"]].run(arms, part)


__all__ = ["MEASURES", "Arms", "Result", "check_part", "measure", "range_text"]
