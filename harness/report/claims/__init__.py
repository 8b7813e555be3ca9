"""`harness claims`: test the statements of an article, one verdict per statement.

A claims file (:mod:`.spec`) names the statements and the arms — variants of one study — that
measure them. :func:`run_claims` runs (or resumes) every arm as its own study, measures each
statement (:mod:`.measures`), judges it (:mod:`.verdict`) and writes
``claims.{csv,md,tex,pdf}``: one row per statement with what was measured, the estimate and
its interval, the verdict and the rule that produced it, and what the test cost. The main
arm's full report is built too, and both log themselves on that arm's parent MLflow run.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from harness.report.claims.measures import Arms, Result, measure
from harness.report.claims.spec import ClaimsSpec, load_claims
from harness.report.claims.verdict import NOT_TESTED, VERDICTS, combine, range_text
from harness.report.claims.write import write_claims

__all__ = ["VERDICTS", "claims_table", "run_arms", "run_claims"]


def run_arms(spec: ClaimsSpec, storage_url: str | None = None, tracking_uri: str | None = None,
             progress: bool = True, echo=print) -> None:
    """Run (or resume) every arm; an arm already complete costs a look at its records."""
    from harness.experiment.study import run_study

    for arm in spec.arms:
        echo(f"arm {arm} ({spec.arm_name(arm)}): running or resuming")
        run_study(spec.arm_config(arm), storage_url, tracking_uri, progress)


def _estimate_text(result: Result) -> str:
    est = result.estimate
    if est is None:
        return "–"
    return est.text(".3g")


def _joined(texts: list[str]) -> str:
    """One cell for a statement's parts, labelled (a), (b), … (a "|" would split a Markdown
    cell); a part with nothing to say keeps its letter."""
    if len(texts) == 1:
        return texts[0]
    return " ".join(f"({chr(97 + i)}) {t}" for i, t in enumerate(texts) if t)


def claims_table(spec: ClaimsSpec, arms: Arms) -> pd.DataFrame:
    """One row per statement; a statement of several parts gets (a), (b), … in a cell."""
    rows = []
    for st in spec.statements:
        results = [measure(arms, part) for part in st.parts]
        used = list(dict.fromkeys(a for r in results for a in r.arms))
        verdict = combine([r.verdict for r in results])
        est = results[0].estimate if len(results) == 1 else None
        rows.append({
            "id": st.id,
            "statement": st.text,
            "measured": _joined([r.what for r in results]),
            "arms": ", ".join(spec.arm_name(a) for a in used),
            "metric": _joined([r.metric for r in results]),
            "n": _joined([str(r.estimate.n) if r.estimate is not None else "" for r in results]),
            "estimate": _joined([_estimate_text(r) for r in results]),
            "mean": est.mean if est is not None else math.nan,
            "ci_low": est.low if est is not None else math.nan,
            "ci_high": est.high if est is not None else math.nan,
            "claimed": _joined([range_text(*r.claimed) if r.claimed else "–" for r in results]),
            "verdict": verdict,
            "rule": _joined([f"{r.verdict}: {r.rule}" for r in results]),
            "tested_by": _joined([r.tested_by for r in results]),
            "runs": sum(arms.runs(a) for a in used),
            "train_minutes": round(sum(arms.train_minutes(a) for a in used), 2),
        })
    return pd.DataFrame(rows)


def run_claims(name_or_path: str, preset: str | None = None, out: str | Path | None = None,
               run: bool = True, storage_url: str | None = None,
               tracking_uri: str | None = None, progress: bool = True, echo=print,
               report: bool = True) -> tuple[Path, pd.DataFrame]:
    """Run the arms (unless `run` is False), judge every statement, write the files; returns
    the output folder and the table."""
    spec = load_claims(name_or_path, preset)
    if run:
        run_arms(spec, storage_url, tracking_uri, progress, echo)
    arms = Arms({a: spec.arm_name(a) for a in spec.arms}, preset, tracking_uri, storage_url)
    table = claims_table(spec, arms)
    key = f"{spec.name}@{preset}" if preset else spec.name
    folder = Path(out) if out is not None else Path("reports") / re.sub(r"[/\\]", "_", key)
    main = next(iter(spec.arms))
    if report:  # the full report of the main arm, logged on its parent run
        from harness.report import build_report

        build_report(spec.arm_name(main), preset, folder / "report", tracking_uri=tracking_uri,
                     storage_url=storage_url)
    write_claims(spec, table, folder, arms.data(main), key)
    untested = int((table["verdict"] == NOT_TESTED).sum())
    echo(f"claims of {key}: " + ", ".join(
        f"{(table['verdict'] == v).sum()} {v}" for v in VERDICTS if (table["verdict"] == v).any())
        + (f" ({untested} need another machine or preset)" if untested else ""))
    return folder, table
