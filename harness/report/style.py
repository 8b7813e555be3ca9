"""One look for every figure: a fixed colour per method, units on the axes, vector-safe fonts.

Colours are assigned once per report (`method_colors`) and passed to every figure, so a method
never changes colour between pages. Methods of the method table (`harness.optim.methods`) keep
their colour in every report, SAM-E ensembles theirs; others take the next free colour of the
colour-blind-safe Okabe–Ito palette, in report order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import matplotlib
from matplotlib.figure import Figure

from harness.optim.methods import METHODS

OKABE_ITO = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#f0e442",
             "#000000")
# ensembles are not optimizers, so the method table has no colour for them
ENSEMBLE_COLOR = "#cc79a7"
FIXED = {**{m.name: m.color for m in METHODS.values()}, "sam-e": ENSEMBLE_COLOR}

# axis labels with their units, used verbatim by every figure
MIOU = "mIoU (fraction, 0–1)"
DELTA_MIOU = "Δ mIoU vs AdamW (fraction)"
SEVERITY = "corruption severity (0 = clean)"
LOSS = "training loss (20·focal + dice + IoU-MSE, unitless)"
STEP = "training step (optimizer updates)"
EPOCH = "epoch"
RATIO = "cost relative to AdamW (×)"

RC = {
    "pdf.fonttype": 42,  # TrueType: text in the PDF stays text (searchable, extractable)
    "ps.fonttype": 42,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}

PAGE = (11.69, 8.27)  # A4 landscape, inches
PANEL = (10.0, 6.2)


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """{method: colour} for every method of a report (deterministic, one colour each)."""
    methods = list(dict.fromkeys(methods))
    colors = {m: FIXED[m] for m in methods if m in FIXED}
    free = [c for c in OKABE_ITO if c not in colors.values()]
    for method in methods:
        if method not in colors:
            colors[method] = free.pop(0) if free else "#777777"
    return colors


def display_name(method: str) -> str:
    """How prose names `method`: its display name in the method table, else its key."""
    return METHODS[method].display if method in METHODS else method


@contextlib.contextmanager
def report_style():
    with matplotlib.rc_context(RC):
        yield


def new_figure(size: tuple[float, float] = PANEL, **kwargs) -> Figure:
    """A figure outside pyplot's registry (nothing to close, no GUI backend needed)."""
    return Figure(figsize=size, layout="constrained", **kwargs)


def note(ax, text: str) -> None:
    """Write `text` in an empty panel (a panel for which nothing was recorded)."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes,
            color="0.35")
