"""Training curves (median and spread over seeds) and 1-D loss-landscape slices."""

from __future__ import annotations

import pandas as pd

from harness.report import style
from harness.report.document import FigureItem, Section, Table
from harness.report.figures import legend
from harness.report.loaders import artifact_tables, histories
from harness.report.sections.base import Context, new_section
from harness.tracking import schema

TITLE = "Training curves and loss landscape"
LANDSCAPE = f"{schema.PROBES_DIR}/landscape_1d.csv"


def smooth(long: pd.DataFrame, points: int = 60) -> pd.DataFrame:
    """Per-run centred rolling mean over ~1/`points` of the run: per-step losses are too
    noisy to compare by eye. Returns the frame and leaves short curves as they are."""
    def roll(run: pd.DataFrame) -> pd.DataFrame:
        window = max(1, len(run) // points)
        return run.assign(value=run["value"].rolling(window, center=True, min_periods=1)
                          .mean())
    return pd.concat([roll(g.sort_values("step")) for _, g in long.groupby("run_id")],
                     ignore_index=True) if len(long) else long


def _spread(long: pd.DataFrame, x: str) -> pd.DataFrame:
    """Per method and x: median, min and max over seeds (min–max: few seeds, no quartiles)."""
    return (long.groupby(["method", x])["value"].agg(["median", "min", "max", "count"])
            .reset_index())


def build(ctx: Context) -> Section:
    section = new_section(__name__)
    runs = ctx.data.final()
    runs = runs[runs["method"].isin(ctx.present) & (runs["role"] == schema.ROLE_TRIAL)]
    if runs.empty:
        return section.say("No successful final training runs among the methods shown; no "
                           "curves to draw.")
    loss = histories(ctx.data, runs, schema.TRAIN_LOSS)
    val = histories(ctx.data, runs, schema.VAL_MIOU)
    scape = artifact_tables(ctx.data, runs, LANDSCAPE)
    section.say(
        "Curves of the final runs: the line is the median over seeds, the band spans the "
        "lowest to the highest seed. Landscape slices show L(w + α d) along one random, "
        "filter-normalised direction d per run (Li et al. 2018), thin lines one seed each.")
    if ctx.data.runs["role"].eq(schema.ROLE_ENSEMBLE).any():
        section.say("Ensembles have no training curves of their own (their members do).")
    if loss.empty and val.empty:
        section.say("No training curves were recorded.")
    if scape.empty:
        section.say("No 1-D landscape slices were recorded (probes.landscape_points = 0 or "
                    "probes disabled).")
    frames = [f.assign(curve=name) for name, f in
              [(schema.TRAIN_LOSS, _spread(loss, "step") if len(loss) else None),
               (schema.VAL_MIOU, _spread(val, "step") if len(val) else None)]
              if f is not None]
    if frames:
        data = pd.concat(frames, ignore_index=True)
        last = data.sort_values("step").groupby(["curve", "method"]).tail(1)
        shown = last.assign(**{"final value (median)": last["median"].map("{:.4f}".format),
                               "min–max over seeds": [f"{a:.4f}–{b:.4f}" for a, b in
                                                      zip(last["min"], last["max"])],
                               "seeds": last["count"].astype(str), "step": last["step"]
                               .astype(str)})[["curve", "method", "step",
                                              "final value (median)", "min–max over seeds",
                                              "seeds"]]
        section.add(Table("training_curves", data, shown.reset_index(drop=True),
                          "Last point of each training curve (median over seeds)."))
    if ctx.draw and frames:
        section.add(FigureItem("training_curves", _curves(ctx, loss, val),
                               "Training loss per step (rolling mean over 1/60 of training "
                               "per run) and validation mIoU per epoch (plotted at the step "
                               "where each epoch ends): median over seeds, min–max band."))
    if ctx.draw and not scape.empty:
        section.add(FigureItem("landscape_1d", _landscape(ctx, scape),
                               "1-D loss-landscape slices per method around the final weights "
                               "(α = 0); thick: median over seeds."))
    return section


def _band(ax, spread: pd.DataFrame, colors: dict, x: str, marker=None) -> None:
    for method, g in spread.groupby("method", sort=False):
        ax.plot(g[x], g["median"], color=colors[method], label=method, marker=marker,
                linewidth=1.4)
        ax.fill_between(g[x], g["min"], g["max"], color=colors[method], alpha=0.18,
                        linewidth=0)


def _curves(ctx: Context, loss: pd.DataFrame, val: pd.DataFrame):
    fig = style.new_figure()
    left, right = fig.subplots(1, 2)
    if len(loss):
        _band(left, _spread(smooth(loss), "step"), ctx.colors, "step")
        low, high = loss["value"].min(), loss["value"].max()
        log = low > 0 and high / low > 20  # log only when the loss falls by decades
        if log:
            from matplotlib.ticker import FuncFormatter

            left.set_yscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            left.yaxis.set_major_formatter(plain)
            left.yaxis.set_minor_formatter(plain)
        left.set(title="training loss", xlabel=style.STEP,
                 ylabel=style.LOSS + (" (log scale)" if log else ""))
        legend(left)
    else:
        style.note(left, "no training-loss curve recorded")
    if len(val):
        _band(right, _spread(val, "step"), ctx.colors, "step", marker="o")
        right.set(title="validation mIoU (end of each epoch)", xlabel=style.STEP,
                  ylabel=style.MIOU)
        legend(right, loc="lower right")
    else:
        style.note(right, "no validation curve recorded")
    return fig


def _landscape(ctx: Context, scape: pd.DataFrame):
    fig = style.new_figure()
    ax = fig.add_subplot()
    for method, g in scape.groupby("method", sort=False):
        color = ctx.colors[method]
        for _, run in g.groupby("run_id"):
            ax.plot(run["alpha"], run["loss"], color=color, alpha=0.35, linewidth=0.8)
        median = g.groupby("alpha")["loss"].median()
        ax.plot(median.index, median.values, color=color, linewidth=2.2, marker="o",
                label=method)
    ax.axvline(0.0, color="0.6", linewidth=0.8, zorder=0)
    ax.set(title="1-D loss landscape", xlabel="α (step along a filter-normalised direction, "
           "relative to each filter's norm)", ylabel=style.LOSS)
    legend(ax)
    return fig
