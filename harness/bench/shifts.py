"""``harness bench shifts``: how much the shift suite's caches save, as ratios.

Each round starts from an empty cache folder and times, in one process, one after the other:

- ``first``  — model A on the study's shift suite: corrupted sets generated, every cell
  predicted and scored;
- ``other``  — model B (other weights) on the same suite: corrupted sets read back, every
  cell predicted and scored (what the next trial of a study pays);
- ``second`` — model A again: its cell scores are read back (what re-running or extending
  an evaluation of a logged model pays).

The report gives first ÷ second and first ÷ other per round, median and spread over rounds,
with the absolute seconds beside them. Models have random (seeded) weights: inference cost
does not depend on training.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import pandas as pd
import torch

from harness.bench.common import (json_option, rounds_option, spread_header, spread_row,
                                   summary, threads_option)
from harness.model.device import torch_threads
from harness.config import load_study
from harness.data.sources import load_split
from harness.evaluate.shifts import evaluate_shifts
from harness.model import build_model

PHASES = ("first", "other", "second")


def _timed_suite(model, cfg, test, cache: Path, progress: bool) -> tuple[float, pd.DataFrame]:
    start = time.perf_counter()
    table = evaluate_shifts(model, cfg, test, cache, progress=progress)
    return time.perf_counter() - start, table


def run_shift_bench(study: str = "asam-vs-adamw", preset: str | None = "cpu", rounds: int = 3,
                    threads: int | None = None, progress: bool = False) -> dict[str, Any]:
    cfg = load_study(study, preset)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(build_model(cfg.model.preset).eval())
    seconds: dict[str, list[float]] = {phase: [] for phase in PHASES}
    identical = True
    with torch_threads(threads), tempfile.TemporaryDirectory(prefix="bench-shifts-") as tmp:
        for r in range(rounds):
            cache = Path(tmp) / f"round{r}"
            test = load_split(cfg.data, "test", cache)
            t_first, first = _timed_suite(models[0], cfg, test, cache, progress)
            t_other, _ = _timed_suite(models[1], cfg, test, cache, progress)
            t_second, second = _timed_suite(models[0], cfg, test, cache, progress)
            identical &= first.equals(second)
            for phase, t in zip(PHASES, (t_first, t_other, t_second)):
                seconds[phase].append(t)
    return {
        "study": cfg.name, "preset": preset, "rounds": rounds, "cells": len(first),
        "masks_per_cell": int(first["n_masks"].iloc[0]), "threads": torch.get_num_threads(),
        "seconds": {phase: summary(v) for phase, v in seconds.items()},
        "first/second": summary([a / b for a, b in zip(seconds["first"], seconds["second"])]),
        "first/other": summary([a / b for a, b in zip(seconds["first"], seconds["other"])]),
        "second_table_identical": bool(identical),
    }


def format_report(result: dict[str, Any]) -> str:
    def row(name: str, s: dict[str, float], unit: str = "") -> str:
        return spread_row(name, s, 34, unit)
    lines = [
        f"shift suite of {result['study']} (preset {result['preset']}): {result['cells']} cells,"
        f" {result['masks_per_cell']} masks per cell; {result['rounds']} rounds",
        spread_header(34),
        row("first ÷ second (same model)", result["first/second"], "×"),
        row("first ÷ other (new model)", result["first/other"], "×"),
    ]
    lines += [row(f"seconds: {phase}", result["seconds"][phase]) for phase in PHASES]
    lines.append(f"second evaluation's table identical to the first: "
                 f"{result['second_table_identical']}")
    return "\n".join(lines)


@click.command("shifts")
@click.option("--study", default="asam-vs-adamw", show_default=True,
              help="Study whose evaluate: section and data define the suite.")
@click.option("--preset", default="cpu", show_default=True)
@rounds_option
@threads_option
@json_option
def shifts_command(study, preset, rounds, threads, as_json):
    """Time the shift suite cold, for a new model, and again for the same model."""
    result = run_shift_bench(study, preset, rounds, threads, progress=not as_json)
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))
