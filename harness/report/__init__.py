"""`harness report`: turn what a study recorded (MLflow runs, Optuna trials) into a report.

Reads what was recorded — nothing is retrained. `build_report` writes into one folder:

- `report.pdf` — multi-page vector PDF: page 1 the answer (`sections.answer`), then one
  section per `SECTION_TITLES` entry; the study config is attached to it;
- `study.yaml` — the study config as recorded with the parent run;
- `tables/<name>.csv|.md|.tex` — every table (CSV: numbers with CI bounds in their own
  columns; Markdown and booktabs LaTeX: formatted as in the PDF);
- `figures/<name>.png` — every figure (`answer.png`: page 1).

The PDF, the tables and the config are also logged on the study's parent MLflow run, under
`report/` (replacing what an earlier build put there), so they are found next to the runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from harness.errors import HarnessError
from harness.optim.methods import METHODS
from harness.report import pdf
from harness.report.collect import REFERENCE, load_study_data
from harness.report.document import FORMATS, FigureItem, Section, write_figure, write_table
from harness.report.provenance import now
from harness.report.sections import ORDER, TITLES, answer
from harness.report.sections import provenance as provenance_section
from harness.report.sections.base import Context, ShiftFilter
from harness.report.style import display_name, method_colors, report_style
from harness.tracking import schema
from harness.tracking.mlflow_log import replace_artifacts

SECTION_TITLES = TITLES
_SHARPNESS_AWARE = ", ".join(m.display for m in METHODS.values() if m.sharpness_aware)
QUESTION = (f"Does sharpness-aware training ({_SHARPNESS_AWARE}) make Segment Anything more "
            f"robust under distribution shift than {display_name(REFERENCE)} or an ensemble "
            "(SAM-E), and at what cost?")


def _formats(formats: Iterable[str] | None) -> set[str]:
    chosen = set(formats or FORMATS)
    unknown = chosen - set(FORMATS)
    if unknown:
        raise HarnessError(f"unknown report format(s) {', '.join(sorted(unknown))}; use "
                           f"{', '.join(FORMATS)}")
    return chosen


def _remove_stale(folder: Path, chosen: set[str], written: set[Path]) -> None:
    """Drop tables / figures of a requested format that an earlier build of this folder wrote
    and this one did not (e.g. a section that now has no data): they would contradict it."""
    for sub, fmt in [("tables", "csv"), ("tables", "md"), ("tables", "tex"), ("figures", "png")]:
        if fmt in chosen:
            for path in (folder / sub).glob(f"*.{fmt}"):
                if path not in written:
                    path.unlink()


def _notes(ctx: Context, created: str) -> list[str]:
    """Under page 1's caption: what the study is, what was shown, where the numbers came from."""
    data = ctx.data
    notes = []
    if data.config.get("description"):
        notes.append(f"Study: {' '.join(str(data.config['description']).split())}")
    if ctx.shifts.filtered:
        notes.append(f"Shifts shown (--shifts): {', '.join(ctx.shifts.corruptions) or 'none'}"
                     f"{', domain' if ctx.shifts.domain else ''}"
                     f"{', prompt' if ctx.shifts.prompt else ''}.")
    notes.append(f"Created {created} from {data.tracking_uri}. Nothing was retrained.")
    notes.append("Contents: " + "  ".join(f"{i}. {t}" for i, t in enumerate(TITLES, 1)))
    return notes


def build_report(study: str, preset: str | None = None, out: str | Path | None = None,
                 formats: Iterable[str] | None = FORMATS, methods: list[str] | None = None,
                 shifts: list[str] | None = None, tracking_uri: str | None = None,
                 storage_url: str | None = None) -> Path:
    """Build the report of recorded study `study` (with `preset`) into `out`; returns `out`.

    `out` defaults to `reports/<study key>`. `formats` ⊆ {pdf, png, csv, md, tex}.
    `methods` and `shifts` (shift-spec names, as in a study's `evaluate.shifts`) restrict
    what is shown; AdamW remains the reference of ratios and Δ even when not shown.
    """
    chosen = _formats(formats)
    shift_filter = ShiftFilter.parse(shifts)  # a bad name fails before anything is read
    data = load_study_data(study, preset, tracking_uri, storage_url, methods)
    folder = Path(out) if out is not None else Path("reports") / re.sub(r"[/\\]", "_", data.key)
    folder.mkdir(parents=True, exist_ok=True)
    created = now()
    stamp = created.strftime("%Y-%m-%d %H:%M:%S UTC")
    with report_style():
        ctx = Context(data, method_colors(data.all_methods), shift_filter,
                      draw=bool(chosen & {"pdf", "png"}))
        # in ORDER, whatever it is: a section's number is its place there
        sections: list[Section] = [m.build(ctx, stamp) if m is provenance_section
                                   else m.build(ctx) for m in ORDER]
        written: set[Path] = set()
        if ctx.draw:
            front = answer.front_page(ctx, _notes(ctx, stamp))
            pdf.decorate(front, f"Report: {data.key}", [QUESTION, *answer.sentences(ctx)])
            if "png" in chosen:
                written.add(write_figure(front, folder))
        for section in sections:
            for block in section.blocks:
                if isinstance(block, FigureItem):
                    pdf.decorate(block, section.heading)
                    if "png" in chosen:
                        written.add(write_figure(block, folder))
                elif not isinstance(block, str):
                    written.update(write_table(block, folder, chosen))
        _remove_stale(folder, chosen, written)
        if "pdf" in chosen:
            pdf.render(folder / "report.pdf", front, sections,
                       footer=f"harness report {data.key}",
                       metadata={"Title": f"harness report: {data.key}",
                                 "Author": "harness report", "Subject": QUESTION,
                                 "Keywords": f"{data.name}, {', '.join(ctx.methods)}"},
                       created=created)
    published = sorted(p for p in written if p.parent == folder / "tables")
    if data.config_text:
        config = folder / schema.STUDY_ARTIFACT
        config.write_text(data.config_text)
        published.append(config)
    if "pdf" in chosen:
        if data.config_text:
            pdf.attach(folder / "report.pdf",
                       {schema.STUDY_ARTIFACT: data.config_text.encode()})
        published.append(folder / "report.pdf")
    replace_artifacts(data.client, data.parent["run_id"],
                      {p.relative_to(folder).as_posix(): p for p in published}, schema.REPORT_DIR)
    return folder


__all__ = ["FORMATS", "SECTION_TITLES", "build_report"]
