"""The claims table as files — CSV (numbers), Markdown, LaTeX, PDF — logged on the main arm's
parent MLflow run under ``claims/``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages

from harness.report.collect import StudyData
from harness.report.document import Table, table_latex, table_markdown
from harness.report.pdf import HEAD_PT, SMALL_PT, Pager
from harness.report.provenance import now
from harness.report.style import report_style
from harness.tracking.mlflow_log import replace_artifacts

ARTIFACT_DIR = "claims"
RULE = ("Verdict rule: a statement claims a range for what is measured. Supported: the 95 % "
        "interval lies inside the claimed range; contradicted: it lies outside; inconclusive: "
        "it overlaps the range's edge, or there is no interval (fewer than 3 runs per group). "
        "A statement of several parts is supported only when every part is. Intervals are "
        "Student-t over seeds (paired by seed within an arm, Welch across arms); they are "
        "not corrected for the number of statements.")


def _display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "#": table["id"],
        "statement": table["statement"],
        "estimate [95 % CI]": table["estimate"],
        "claimed": table["claimed"].replace("", "–"),
        "verdict": table["verdict"],
    })


def write_claims(spec, table: pd.DataFrame, folder: Path, main: StudyData, key: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    shown = Table("claims", table, _display(table),
                  f"Statements of {spec.name} tested by harness ({key}).")
    paths = {"csv": folder / "claims.csv", "md": folder / "claims.md",
             "tex": folder / "claims.tex", "pdf": folder / "claims.pdf"}
    table.to_csv(paths["csv"], index=False)
    details = "\n".join(
        f"- **{r.id}. {r.statement}** — *{r.verdict}*. Measured: {r.measured} "
        f"({r.arms or 'no runs'}). Estimate: {r.estimate}; claimed {r.claimed or '–'}. "
        f"Rule: {r.rule}."
        + (f" Tested by: {r.tested_by}." if r.tested_by else "")
        + f" Cost: {r.runs} runs, {r.train_minutes:.1f} training minutes."
        for r in table.itertuples())
    paths["md"].write_text(f"# Claims: {key}\n\n{spec.description}\n\n{RULE}\n\n"
                           f"{table_markdown(shown)}\n{details}\n")
    paths["tex"].write_text(table_latex(shown))
    _pdf(paths["pdf"], spec, table, shown, key)
    replace_artifacts(main.client, main.parent["run_id"],
                      {p.name: p for p in paths.values()}, ARTIFACT_DIR)
    return list(paths.values())


def _pdf(path: Path, spec, table: pd.DataFrame, shown: Table, key: str) -> None:
    created = now()
    with report_style(), PdfPages(path, metadata={"Title": f"harness claims: {key}",
                                                  "CreationDate": created}) as pdf:
        pager = Pager(pdf, f"harness claims {key}")
        pager.new_page(f"Claims: {key}")
        if spec.description:
            pager.text(spec.description)
        pager.text(RULE, SMALL_PT)
        pager.table(shown)
        pager.new_page("Each statement")
        for r in table.itertuples():
            pager.text(f"{r.id}. {r.statement} — {r.verdict}", HEAD_PT * 0.8, weight="bold")
            pager.text(f"Measured: {r.measured} ({r.arms or 'no runs'}).", SMALL_PT)
            pager.text(f"Estimate: {r.estimate}; claimed {r.claimed or '–'}. Rule: {r.rule}."
                       + (f" Tested by: {r.tested_by}." if r.tested_by else ""), SMALL_PT)
            pager.text(f"Cost: {r.runs} runs, {r.train_minutes:.1f} training minutes; "
                       f"{created:%Y-%m-%d %H:%M} UTC.", SMALL_PT)
        pager.flush()
