"""``harness bench memory``: what keeping freed memory (:mod:`harness.memory`) saves a step.

One decoder-only training step (forward, backward, AdamW) of a pretrained preset on stored
embeddings, with glibc's defaults ÷ with freed memory kept, alternating the two in one
process over several rounds. Each round runs one untimed step first, so both settings are
timed on a warm heap. Page faults per step are reported beside the times: they are the
mechanism, the ratio is the claim.
"""

from __future__ import annotations

import json
import resource
import time
from typing import Any

import click
import torch

from harness.bench.common import (decoder_model, json_option, rounds_option, spread_header,
                                   spread_row, summary, threads_option)
from harness.memory import keep_freed_memory
from harness.model import predict_from_embeddings
from harness.model.device import torch_threads
from harness.optim import get_method
from harness.train.losses import segmentation_loss


def _step_inputs(model, images: int, prompts: int) -> dict[str, torch.Tensor]:
    encoder = model.prompt_encoder
    size = model.image_encoder.img_size
    generator = torch.Generator().manual_seed(0)
    lo = torch.rand(prompts, 2, generator=generator) * size / 2
    hi = lo + size / 4 + torch.rand(prompts, 2, generator=generator) * size / 4
    boxes = torch.cat([lo, hi], 1)
    targets = torch.zeros(prompts, 1, size, size, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
        targets[i, 0, y0:y1, x0:x1] = True
    embeddings = torch.randn(images, encoder.embed_dim, *encoder.image_embedding_size,
                             generator=generator)
    return {"embeddings": embeddings, "boxes": boxes, "targets": targets,
            "index": torch.arange(prompts) % images}


def _step(model, optimizer, inputs, size: int) -> None:
    logits, iou = predict_from_embeddings(model, inputs["embeddings"], (size, size),
                                          boxes=inputs["boxes"], image_index=inputs["index"])
    segmentation_loss(logits, iou, inputs["targets"]).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _timed_steps(model, optimizer, inputs, size: int, steps: int) -> tuple[float, float]:
    """Seconds and minor page faults per step, after one untimed step."""
    _step(model, optimizer, inputs, size)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(steps):
        _step(model, optimizer, inputs, size)
    seconds = (time.perf_counter() - start) / steps
    return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps


def run_memory_bench(preset: str = "litemedsam", images: int = 8, prompts: int = 16,
                     steps: int = 2, rounds: int = 3, threads: int | None = None
                     ) -> dict[str, Any]:
    model = decoder_model(preset, 0)
    size = model.image_encoder.img_size
    inputs = _step_inputs(model, images, prompts)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = get_method("adamw").build(params, get_method("adamw").defaults(lr=1e-5))
    seconds = {"system": [], "keep": []}
    faults = {"system": [], "keep": []}
    try:
        with torch_threads(threads):
            for _ in range(rounds):
                for label in ("system", "keep"):
                    if not keep_freed_memory(label == "keep"):
                        raise click.ClickException("no glibc mallopt here: nothing to compare")
                    s, f = _timed_steps(model, optimizer, inputs, size, steps)
                    seconds[label].append(s)
                    faults[label].append(f)
    finally:
        keep_freed_memory(True)  # what the harness command runs with
    return {
        "preset": preset, "images": images, "prompts": prompts, "steps": steps,
        "rounds": rounds, "threads": torch.get_num_threads(),
        "seconds": {k: summary(v) for k, v in seconds.items()},
        "page_faults": {k: summary(v) for k, v in faults.items()},
        "ratio": summary([a / b for a, b in zip(seconds["system"], seconds["keep"])]),
    }


def format_report(result: dict[str, Any]) -> str:
    def row(name: str, s: dict[str, float], fmt: str = ".2f") -> str:
        return spread_row(name, s, 40, fmt=fmt, median_width=11)
    return "\n".join([
        f"decoder-only step, preset {result['preset']}: {result['prompts']} prompts on "
        f"{result['images']} stored embeddings, {result['steps']} steps × {result['rounds']} "
        f"rounds, {result['threads']} threads",
        spread_header(40, 11),
        row("step: glibc defaults ÷ freed kept", result["ratio"]),
        row("seconds/step: glibc defaults", result["seconds"]["system"]),
        row("seconds/step: freed memory kept", result["seconds"]["keep"]),
        row("page faults/step: glibc defaults", result["page_faults"]["system"], ".0f"),
        row("page faults/step: freed memory kept", result["page_faults"]["keep"], ".0f"),
    ])


@click.command("memory")
@click.option("--preset", default="litemedsam", show_default=True,
              help="Model preset (pretrained presets load their own weights).")
@click.option("--images", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--prompts", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--steps", default=2, show_default=True, type=click.IntRange(min=1))
@rounds_option
@threads_option
@json_option
def memory_command(preset, images, prompts, steps, rounds, threads, as_json):
    """A decoder step with glibc's defaults vs freed memory kept (HARNESS_MALLOC)."""
    result = run_memory_bench(preset, images, prompts, steps, rounds, threads)
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))
