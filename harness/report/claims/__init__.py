"""`harness claims`: test the statements of an article, one verdict per statement.

A claims file (:mod:`.spec`) names the statements and the arms — variants of one study — that
measure them. `harness claims` runs each arm as its own study (the study runner; the report
never trains); :func:`judge_claims` then reads every arm, measures each statement
(:mod:`.measures`), judges it (:mod:`.verdict`) and writes
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

__all__ = ["VERDICTS", "claims_table", "judge_claims", "load_claims"]


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


def judge_claims(spec: ClaimsSpec, out: str | Path | None = None,
                 storage_url: str | None = None, tracking_uri: str | None = None,
                 echo=print, report: bool = True) -> tuple[Path, pd.DataFrame]:
    """Judge every statement of `spec` on its recorded arms (run them first: `harness
    claims` does, through the study runner) and write the files; the output folder and the
    table. Never trains."""
    preset = spec.preset
    arms = Arms({a: spec.arm_name(a) for a in spec.arms}, preset, tracking_uri, storage_url)
    table = claims_table(spec, arms)
    key = f"{spec.name}@{preset}" if preset else spec.name
    folder = Path(out) if out is not None else Path("reports") / re.sub(r"[/\\]", "_", key)
    main = spec.main_arm
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
