"""Plotting primitives shared by the sections: lines with CI bands, grouped bars with CI
whiskers. Every primitive takes the report's `colors` mapping — the only place a method's
colour comes from — and labels each artist with its method (legends, and checks on colours).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from harness.report.stats import Estimate


def ci_lines(ax, xs: Sequence[float], series: dict[str, list[Estimate]],
             colors: dict[str, str], marker: str = "o") -> None:
    """One line per method through the means, shaded between the CI bounds where known."""
    for method, estimates in series.items():
        mean = np.array([e.mean for e in estimates], float)
        if not np.isfinite(mean).any():
            continue
        ax.plot(xs, mean, marker=marker, color=colors[method], label=method, linewidth=1.6)
        low = np.array([e.low if e.has_ci else math.nan for e in estimates], float)
        high = np.array([e.high if e.has_ci else math.nan for e in estimates], float)
        ok = np.isfinite(low) & np.isfinite(high)
        if ok.any():
            ax.fill_between(np.asarray(xs, float), low, high, where=ok, color=colors[method],
                            alpha=0.18, linewidth=0, interpolate=False)


def ci_whiskers(ax, xs: Sequence[float], estimates: list[Estimate], color: str) -> None:
    """Error bars at the points that have an interval (none below 3 values)."""
    points = [(x, e) for x, e in zip(xs, estimates) if e.has_ci]
    if points:
        below = [e.mean - e.low for _, e in points]
        above = [e.high - e.mean for _, e in points]
        ax.errorbar([x for x, _ in points], [e.mean for _, e in points], yerr=[below, above],
                    fmt="none", ecolor=color, capsize=3, linewidth=1.0)


def ci_bars(ax, groups: Sequence[str], series: dict[str, list[Estimate]],
            colors: dict[str, str]) -> None:
    """Grouped bars (groups along x, one bar per method) with CI whiskers and n under each."""
    methods = [m for m, est in series.items() if any(e.n for e in est)]
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(groups))
    for i, method in enumerate(methods):
        est = series[method]
        pos = x - 0.4 + width * (i + 0.5)
        mean = np.array([e.mean for e in est], float)
        err = np.array([[e.mean - e.low, e.high - e.mean] if e.has_ci else [math.nan] * 2
                        for e in est], float).T
        ax.bar(pos, np.nan_to_num(mean), width * 0.92, color=colors[method], label=method)
        ax.errorbar(pos, mean, yerr=np.nan_to_num(err), fmt="none", ecolor="0.15",
                    capsize=2, linewidth=0.9)
    ax.set_xticks(x, groups)


def legend(ax, **kwargs) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), **kwargs)


def line_colors(fig, label: str) -> set[str]:
    """Colours (hex) of every line or bar group labelled `label` in `fig` (palette checks)."""
    from matplotlib.colors import to_hex

    found = set()
    for ax in fig.axes:
        found |= {to_hex(line.get_color()) for line in ax.lines if line.get_label() == label}
        for container in ax.containers:
            if container.get_label() == label and getattr(container, "patches", None):
                found.add(to_hex(container.patches[0].get_facecolor()))
    return found
