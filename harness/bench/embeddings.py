"""``harness bench embeddings``: what the embedding store saves a frozen-encoder fine-tune.

Two ratios, each measured side by side in one process, alternating, over several rounds:

- ``epoch``: one decoder-only training epoch (forward, backward, AdamW step on the prompt
  encoder and mask decoder) that runs the frozen image encoder on every batch, ÷ the same
  epoch reading the batch's embeddings from the store. The one-off cost of filling the store
  is reported beside it (it is paid once per encoder and dataset, not per epoch or trial).
- ``shifts``: the shift suite of a *new* decoder (its cell scores are not cached: score
  reuse off) with the encoder re-run on every corrupted cell ÷ reading the cells' stored
  embeddings. Corrupted sets are generated before either is timed.

Everything is written to a temporary ``HARNESS_HOME`` that is removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from harness.bench.common import (decoder_model, json_option, rounds_option, spread_header,
                                   spread_row, summary, threads_option)
from harness.config import study_from_dict
from harness.data.sources import load_split
from harness.evaluate.shifts import evaluate_shifts
from harness.home import cache_dir
from harness.model import get_spec
from harness.model.device import torch_threads
from harness.model.embeddings import stored_embeddings
from harness.optim import get_method
from harness.train.batches import batch_loss, make_batch


@contextlib.contextmanager
def _temporary_home() -> Iterator[Path]:
    before = os.environ.get("HARNESS_HOME")
    with tempfile.TemporaryDirectory(prefix="bench-embeddings-") as tmp:
        os.environ["HARNESS_HOME"] = tmp
        try:
            yield Path(tmp)
        finally:
            if before is None:
                os.environ.pop("HARNESS_HOME", None)
            else:
                os.environ["HARNESS_HOME"] = before


def _epoch_seconds(model, dataset, batch_size: int, embeddings) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = get_method("adamw").build(params, get_method("adamw").defaults(lr=1e-4))
    start = time.perf_counter()
    for first in range(0, len(dataset.images), batch_size):
        ids = np.arange(first, min(first + batch_size, len(dataset.images)))
        batch_loss(model, make_batch(dataset, ids, embeddings=embeddings)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def _shift_config(preset: str, images: int) -> Any:
    size = get_spec(preset).image_size
    return study_from_dict({
        "name": "bench-embeddings", "model": {"preset": preset},
        "data": {"domain": "shapes", "image_size": size, "train_size": images, "val_size": 2,
                 "test_size": images, "max_objects": 3},
        "methods": {"adamw": {}},
        "evaluate": {"shifts": ["gaussian_noise", "contrast", "prompt"], "severities": [1, 3, 5],
                     "workers": 0},
    })


def run_embedding_bench(preset: str = "litemedsam", images: int = 16, batch_size: int = 4,
                        rounds: int = 3, threads: int | None = None) -> dict[str, Any]:
    cfg = _shift_config(preset, images)
    epoch = {"encoder": [], "store": []}
    shifts = {"encoder": [], "store": []}
    identical = True
    with torch_threads(threads), _temporary_home():
        train_set = load_split(cfg.data, "train")
        test = load_split(cfg.data, "test")
        model = decoder_model(preset, 0)
        start = time.perf_counter()
        stored = stored_embeddings(model, train_set)  # the one-off cost of filling the store
        fill_seconds = time.perf_counter() - start
        warm = decoder_model(preset, 0)  # corrupted sets and their embeddings, made once
        evaluate_shifts(warm, cfg, test, cache_dir(), reuse_scores=False, progress=False)
        for r in range(rounds):
            epoch["encoder"].append(_epoch_seconds(model, train_set, batch_size, None))
            epoch["store"].append(_epoch_seconds(model, train_set, batch_size, stored))
            new = decoder_model(preset, 1 + r)  # a new decoder: no cell scores to reuse
            recompute = decoder_model(preset, 1 + r)
            recompute.image_encoder.requires_grad_(True)  # not frozen: the store is bypassed
            for label, m in (("encoder", recompute), ("store", new)):
                started = time.perf_counter()
                table = evaluate_shifts(m, cfg, test, cache_dir(), reuse_scores=False,
                                        progress=False)
                shifts[label].append(time.perf_counter() - started)
                if label == "encoder":
                    reference = table
            identical &= bool(np.allclose(reference["miou"], table["miou"], atol=0.01))
    return {
        "preset": preset, "images": images, "batch_size": batch_size, "rounds": rounds,
        "threads": torch.get_num_threads(), "cells": len(reference),
        "store_fill_seconds": fill_seconds,
        "epoch": {k: summary(v) for k, v in epoch.items()},
        "epoch_ratio": summary([a / b for a, b in zip(epoch["encoder"], epoch["store"])]),
        "shifts": {k: summary(v) for k, v in shifts.items()},
        "shifts_ratio": summary([a / b for a, b in zip(shifts["encoder"], shifts["store"])]),
        "shift_miou_within_0.01": identical,
    }


def format_report(result: dict[str, Any]) -> str:
    def row(name: str, s: dict[str, float], unit: str = "") -> str:
        return spread_row(name, s, 46, unit)
    return "\n".join([
        f"embedding store, preset {result['preset']}: {result['images']} training images, "
        f"batch {result['batch_size']}, shift suite of {result['cells']} cells; "
        f"{result['rounds']} rounds, {result['threads']} threads",
        spread_header(46),
        row("decoder epoch: encoder ÷ store", result["epoch_ratio"], "×"),
        row("new decoder's shift suite: encoder ÷ store", result["shifts_ratio"], "×"),
        row("seconds: epoch re-running the encoder", result["epoch"]["encoder"]),
        row("seconds: epoch reading the store", result["epoch"]["store"]),
        row("seconds: shift suite re-running the encoder", result["shifts"]["encoder"]),
        row("seconds: shift suite reading the store", result["shifts"]["store"]),
        f"one-off: filling the store for the training images took "
        f"{result['store_fill_seconds']:.2f} s",
        f"shift mIoU with and without the store within 0.01 in every cell: "
        f"{result['shift_miou_within_0.01']}",
    ])


@click.command("embeddings")
@click.option("--preset", default="litemedsam", show_default=True,
              help="Model preset (pretrained presets load their own weights).")
@click.option("--images", default=16, show_default=True, type=click.IntRange(min=2))
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1))
@rounds_option
@threads_option
@json_option
def embeddings_command(preset, images, batch_size, rounds, threads, as_json):
    """Decoder-only epoch and a new decoder's shift suite, with and without the store."""
    result = run_embedding_bench(preset, images, batch_size, rounds, threads)
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))
