"""The report as data — sections of text, tables and figures — and the per-item file writers.

Sections are built once and rendered several ways: the PDF (`pdf.py`), and each table as CSV
(numbers), Markdown and LaTeX (formatted, with intervals), each figure as PNG. A table keeps
two frames because a CSV is for computing (mean, low, high in their own columns) while the
printed versions are for reading (`0.812 [0.801, 0.822]`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from harness.report.latex import tex_escape

FORMATS = ("pdf", "png", "csv", "md", "tex")


@dataclass
class Table:
    name: str  # file stem under tables/
    data: pd.DataFrame  # numbers, for CSV
    display: pd.DataFrame  # strings, for Markdown, LaTeX and the PDF
    caption: str = ""


@dataclass
class FigureItem:
    name: str  # file stem under figures/
    figure: Figure
    caption: str = ""


@dataclass
class Section:
    number: int
    title: str
    blocks: list = field(default_factory=list)  # str (a paragraph) | Table | FigureItem

    @property
    def heading(self) -> str:
        return f"{self.number}. {self.title}"

    def say(self, text: str | None) -> "Section":
        if text:
            self.blocks.append(text)
        return self

    def add(self, item: Table | FigureItem | None) -> "Section":
        if item is not None:
            self.blocks.append(item)
        return self

    def items(self, kind: type) -> list:
        return [b for b in self.blocks if isinstance(b, kind)]


def table_markdown(table: Table) -> str:
    # cells are already formatted: tabulate must not re-parse "0.590" into 0.59
    body = table.display.to_markdown(index=False, disable_numparse=True)
    return f"{body}\n\n{table.caption}\n" if table.caption else f"{body}\n"


def table_latex(table: Table) -> str:
    """A booktabs `table` environment; needs `latex.PACKAGES` in the document's preamble."""
    df = table.display.map(tex_escape)
    df.columns = [tex_escape(c) for c in df.columns]
    return df.to_latex(index=False, escape=False, caption=tex_escape(table.caption) or None,
                       label=f"tab:{table.name}", column_format="l" * len(df.columns),
                       position="htbp")


def write_table(table: Table, out: Path, formats: set[str]) -> list[Path]:
    written = []
    folder = out / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    if "csv" in formats:
        path = folder / f"{table.name}.csv"
        table.data.to_csv(path, index=False)
        written.append(path)
    if "md" in formats:
        path = folder / f"{table.name}.md"
        path.write_text(table_markdown(table))
        written.append(path)
    if "tex" in formats:
        path = folder / f"{table.name}.tex"
        path.write_text(table_latex(table))
        written.append(path)
    return written


def write_figure(item: FigureItem, out: Path) -> Path:
    folder = out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{item.name}.png"
    item.figure.savefig(path, dpi=150)
    return path
