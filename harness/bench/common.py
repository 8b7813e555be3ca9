"""What every `harness bench` command shares: the spread summary of repeated measurements,
its table rows, and the options every command takes.

Thread setting and device sync come from :mod:`harness.model.device`.
"""

from __future__ import annotations

import click
import numpy as np
import torch

from harness.model import build_model, set_trainable


def summary(samples: list[float]) -> dict[str, float]:
    """Median, quartiles and range of repeated measurements (ratios or seconds)."""
    q25, median, q75 = np.percentile(samples, [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75),
            "min": float(min(samples)), "max": float(max(samples))}


def spread_header(width: int, median_width: int = 9) -> str:
    return f"{'':<{width}}{'median':>{median_width}}   IQR        min–max"


def spread_row(name: str, s: dict[str, float], width: int, unit: str = "",
               fmt: str = ".2f", median_width: int = 9) -> str:
    """One line of a bench table: name, median, interquartile range, min–max."""
    return (f"{name:<{width}}{format(s['median'], fmt):>{median_width}}{unit}  "
            f"{s['q25']:{fmt}}–{s['q75']:{fmt}}  {s['min']:{fmt}}–{s['max']:{fmt}}")


rounds_option = click.option("--rounds", default=3, show_default=True,
                             type=click.IntRange(min=1),
                             help="Repetitions; each gives one sample of every ratio.")
threads_option = click.option("--threads", default=None, type=click.IntRange(min=1),
                              help="torch CPU threads (default: torch's).")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the result as JSON.")


def decoder_model(preset: str, seed: int) -> torch.nn.Module:
    """`preset` with its weights, seeded, training the mask decoder only."""
    torch.manual_seed(seed)
    model = build_model(preset)
    set_trainable(model, "decoder")
    return model
