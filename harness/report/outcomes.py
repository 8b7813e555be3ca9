"""How every run of a method ended, and what its mean is with and without the failures.

A mean over the runs that happened to succeed flatters a method that often diverges, and an
n that counts runs the mean left out misstates the evidence. So each method's final runs are
counted by outcome, and two means stand side by side, each with its own n: over every run
that ended (failures at whatever score they measured) and over the successful runs only.
"""

from __future__ import annotations

import pandas as pd

from harness.report.collect import FAILED, KILLED, RUNNING, StudyData
from harness.report.document import Table
from harness.report.floor import Floor
from harness.report.stats import Estimate, mean_ci
from harness.tracking import schema

ENDED = (schema.STATUS_OK, schema.STATUS_DIVERGED, schema.STATUS_COLLAPSED, FAILED)
"""Outcomes that are a result of the method. A killed run was interrupted from outside and is
redone for the same seed, and a running one has no result yet: neither enters a mean."""


def _count(runs: pd.DataFrame, *outcomes: str) -> int:
    return int(runs["outcome"].isin(outcomes).sum())


def successful(data: StudyData, runs: pd.DataFrame, floor: Floor | None) -> pd.Series:
    """Finished runs that (when a box prior was recorded) scored above it."""
    return runs["ok"] & floor.above(data, runs) if floor else runs["ok"]


def _mean_text(est: Estimate) -> str:
    return "–" if est.n == 0 else f"{est.text(ci=est.has_ci)} (n={est.n})"


def outcome_table(data: StudyData, methods: list[str], floor: Floor | None) -> Table:
    rows, shown = [], []
    for method in methods:
        mine = data.runs[data.runs["method"] == method]
        final = mine[mine["phase"] == schema.PHASE_FINAL]
        tune = mine[mine["phase"] == schema.PHASE_TUNE]
        not_learned = (int((final["ok"] & floor.at_or_below(data, final)).sum()) if floor
                       else None)
        ended = final[final["outcome"].isin(ENDED)]
        every = mean_ci(data.column(ended, schema.TEST_MIOU))
        good = mean_ci(data.column(final[successful(data, final, floor)], schema.TEST_MIOU))
        row = {"method": method, "started": len(final),
               "finished": _count(final, schema.STATUS_OK),
               "diverged": _count(final, schema.STATUS_DIVERGED),
               "collapsed": _count(final, schema.STATUS_COLLAPSED),
               "did_not_learn": not_learned,
               "interrupted_or_running": _count(final, KILLED, RUNNING),
               "failed_other": _count(final, FAILED),
               "all_runs_miou": every.mean, "all_runs_ci_low": every.low,
               "all_runs_ci_high": every.high, "all_runs_n": every.n,
               "successful_miou": good.mean, "successful_ci_low": good.low,
               "successful_ci_high": good.high, "successful_n": good.n,
               "tune_started": len(tune),
               "tune_diverged": _count(tune, schema.STATUS_DIVERGED),
               "tune_collapsed": _count(tune, schema.STATUS_COLLAPSED)}
        rows.append(row)
        shown.append({
            "method": method, "started": str(row["started"]),
            "finished": str(row["finished"]), "diverged": str(row["diverged"]),
            "collapsed": str(row["collapsed"]),
            "did not learn": "–" if not_learned is None else str(not_learned),
            "interrupted / crashed": str(row["interrupted_or_running"] + row["failed_other"]),
            "test mIoU, all runs": _mean_text(every),
            "test mIoU, successful runs": _mean_text(good),
            "tuning runs (diverged, collapsed)":
                f"{len(tune)} ({row['tune_diverged']}, {row['tune_collapsed']})"})
    return Table("run_outcomes", pd.DataFrame(rows), pd.DataFrame(shown),
                 "Final runs by outcome, and test mIoU over all runs that ended vs over the "
                 "successful ones (each with its own n).")


def outcome_sentences(floor: Floor | None, basis: str) -> list[str]:
    """`basis`: the score that decides whether a run learned (`Floor.basis`)."""
    if floor:
        learned = f"above the box prior {floor.describe()} on {basis}"
        not_learned = f"those that did not learn ({basis} not above the box prior)"
    else:
        learned = "finished (no box prior was recorded, so whether a run learned is unchecked)"
        not_learned = "those that did not learn (not counted: no box prior was recorded)"
    return [
        ("Run outcomes count every final run a method started: finished, diverged (the loss "
         "or the weights became non-finite), collapsed (the loss did not drop as required), "
         "interrupted or crashed (killed runs are redone for the same seed), and, among the "
         f"finished, {not_learned}. Tuning runs are counted in the last column."),
        ("'All runs' averages every final run that ended — a failure at whatever test mIoU "
         "it measured; one that failed before being evaluated has none and is left out, which "
         f"its n shows. 'Successful runs' are those {learned}. Intervals are Student-t over "
         "the runs (none below 3)."),
    ]
