"""Typeset sections into one vector PDF with matplotlib's PdfPages (A4 landscape).

Text and tables flow down "text pages" (a new page when one is full, the heading repeated);
each figure gets a page of its own with its heading and caption. Fonts are embedded as
TrueType (`pdf.fonttype` 42, set by `style.report_style`) so the text can be searched and
extracted.
"""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import text_to_path

from harness.report.document import FigureItem, Section, Table
from harness.report.style import PAGE

MARGIN = 0.55  # inches
BODY_PT, SMALL_PT, HEAD_PT = 10.0, 8.0, 15.0
CHAR_EM = 0.55  # average glyph width of DejaVu Sans, in em (for wrapping running text)
CELL_PAD = 0.07  # inches each side of a table cell's text


def _inch(pt: float) -> float:
    return pt / 72


class Pager:
    """A cursor down the current text page; opens a new page when the next block won't fit."""

    def __init__(self, pdf: PdfPages, footer: str):
        self.pdf, self.footer, self.page_no = pdf, footer, 0
        self.fig: Figure | None = None
        self.y = 0.0  # inches from the top
        self.heading = ""

    @property
    def width(self) -> float:
        return PAGE[0] - 2 * MARGIN

    def _fy(self, y: float) -> float:
        return 1 - y / PAGE[1]

    def new_page(self, heading: str, continued: bool = False) -> None:
        self.flush()
        self.fig, self.heading, self.y = Figure(figsize=PAGE), heading, MARGIN
        self.text(heading + (" (continued)" if continued else ""), HEAD_PT, weight="bold")
        self.y += 0.1

    def flush(self) -> None:
        if self.fig is not None:
            self.page_no += 1
            self.fig.text(0.5, 0.02, f"{self.footer} — page {self.page_no}", ha="center",
                          size=7, color="0.4")
            self.pdf.savefig(self.fig)
            self.fig = None

    def ensure(self, inches: float) -> None:
        if self.y + inches > PAGE[1] - MARGIN:
            self.new_page(self.heading, continued=True)

    def text(self, text: str, size: float = BODY_PT, wrap: bool = True, **kw) -> None:
        chars = int(self.width * 72 / (size * CHAR_EM))
        lines = textwrap.wrap(text, chars) if wrap else text.splitlines() or [""]
        line_h = _inch(size * 1.35)
        for line in lines:
            self.ensure(line_h)
            self.fig.text(MARGIN / PAGE[0], self._fy(self.y), line, size=size, va="top", **kw)
            self.y += line_h
        self.y += line_h * 0.4

    def table(self, table: Table) -> None:
        df = table.display.astype(str)
        if df.columns.empty:  # nothing to draw; a section says why in its text
            return
        size = 8.0
        for _ in range(3):  # shrink the font until the table fits the page width
            header = [textwrap.fill(str(col), max(12, max([len(v) for v in df[col]] + [0])),
                                    break_long_words=False, break_on_hyphens=False)
                      for col in df.columns]
            widths = [max([_width(h, size, bold=True)] + [_width(v, size) for v in df[col]])
                      + 2 * CELL_PAD for h, col in zip(header, df.columns)]
            if sum(widths) <= self.width or size <= 5.0:
                break
            size = max(5.0, size * (self.width - 2 * CELL_PAD * len(widths))
                       / (sum(widths) - 2 * CELL_PAD * len(widths)))
        head_h = _inch(size * 1.7) * max(h.count("\n") + 1 for h in header) + _inch(4)
        row_h = _inch(size * 1.9)
        start = 0
        while True:
            self.ensure(head_h + row_h * min(3, max(1, len(df) - start)))
            room = int((PAGE[1] - MARGIN - self.y - head_h - 0.3) / row_h)
            chunk = df.iloc[start:start + max(1, room)]
            self._draw(chunk, header, widths, head_h, row_h, size)
            start += max(1, len(chunk))
            if start >= len(df):
                break
            self.new_page(self.heading, continued=True)
        if table.caption:
            self.text(table.caption, SMALL_PT, style="italic", color="0.3")

    def _draw(self, chunk, header, widths, head_h, row_h, size) -> None:
        total_w, total_h = sum(widths), head_h + row_h * max(1, len(chunk))
        ax = self.fig.add_axes([MARGIN / PAGE[0], self._fy(self.y + total_h),
                                total_w / PAGE[0], total_h / PAGE[1]])
        ax.set_axis_off()
        cells = chunk.values.tolist() or [["–"] * len(header)]
        tab = ax.table(cellText=cells, colLabels=header, colWidths=[w / total_w for w in widths],
                       cellLoc="left", colLoc="left", bbox=[0, 0, 1, 1])
        tab.auto_set_font_size(False)
        tab.set_fontsize(size)
        for (row, col), cell in tab.get_celld().items():
            cell.PAD = CELL_PAD / widths[col]  # matplotlib pads by a fraction of the width
            cell.set_edgecolor("0.75")
            cell.set_linewidth(0.4)
            cell.visible_edges = "B" if row else "TB"  # booktabs-like: horizontal rules only
            if row == 0:
                cell.set_text_props(weight="bold")
                cell.set_facecolor("0.93")
        self.y += total_h + 0.12


def _width(text: str, size: float, bold: bool = False) -> float:
    """Rendered width of `text` (its widest line) in inches."""
    prop = FontProperties(size=size, weight="bold" if bold else "normal")
    return max(text_to_path.get_text_width_height_descent(line, prop, ismath=False)[0]
               for line in text.split("\n")) / 72


def _wrap(text: str, size: float) -> str:
    return textwrap.fill(text, int((PAGE[0] - 2 * MARGIN) * 72 / (size * CHAR_EM)))


def decorate(item: FigureItem, heading: str, intro: list[str] | None = None) -> None:
    """Page-size the figure and give it its heading, `intro` paragraphs under the heading
    (the front page's sentences) and its caption (for the PNG and the PDF)."""
    fig = item.figure
    fig.set_size_inches(*PAGE)
    caption = _wrap(item.caption, 9)
    lines = caption.count("\n") + 1 if caption else 0
    bottom = (MARGIN + _inch(9 * 1.4) * lines + 0.1) / PAGE[1]
    fig.text(MARGIN / PAGE[0], 1 - MARGIN / PAGE[1], heading, size=HEAD_PT, weight="bold",
             va="top")
    y = MARGIN + 0.45  # inches from the top, under the heading
    for paragraph in intro or []:
        text = _wrap(paragraph, BODY_PT)
        fig.text(MARGIN / PAGE[0], 1 - y / PAGE[1], text, size=BODY_PT, va="top")
        y += _inch(BODY_PT * 1.35) * (text.count("\n") + 1.4)
    top = y / PAGE[1]
    fig.get_layout_engine().set(rect=(0.02, bottom, 0.96, 1 - top - bottom))
    if caption:
        fig.text(MARGIN / PAGE[0], bottom - 0.02, caption, size=9, va="top", color="0.2")


def _page(pdf: PdfPages, figure: Figure, footer: str, page_no: int) -> None:
    figure.text(0.5, 0.02, f"{footer} — page {page_no}", ha="center", size=7, color="0.4")
    pdf.savefig(figure)


def render(path: Path, front: FigureItem, sections: list[Section], footer: str,
           metadata: dict, created: datetime) -> Path:
    """`front` (decorated) is page 1; then each section's text pages and figure pages."""
    with PdfPages(path, metadata={**metadata, "CreationDate": created}) as pdf:
        _page(pdf, front.figure, footer, 1)
        pager = Pager(pdf, footer)
        pager.page_no = 1
        for section in sections:
            pager.new_page(section.heading)
            for block in section.blocks:
                if isinstance(block, str):
                    pager.text(block)
                elif isinstance(block, Table):
                    pager.table(block)
            pager.flush()
            for item in section.items(FigureItem):
                pager.page_no += 1
                _page(pdf, item.figure, footer, pager.page_no)
    return path


def attach(path: Path, files: dict[str, bytes]) -> None:
    """Embed `files` (name → content) in the PDF at `path`, as a viewer's attachments."""
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=path)
    for name, content in files.items():
        writer.add_attachment(name, content)
    with open(path, "wb") as handle:
        writer.write(handle)
