"""``harness bench probes``: what each sharpness probe costs, as a multiple of a training step.

A trial's probes run on a few fixed batches after training; the question a study planner has
is "how many training steps is that worth?". So the unit here is one *step*: a forward +
backward of :func:`~harness.train.batches.batch_loss` over the same probe batches, on the same
model, timed in the same process. Its time is the median of several repeats, half taken just
before the probe suite and half just after, so that load from other processes drifting over
the run hits both sides alike. Absolute seconds are printed beside the ratios, never alone.

Two columns per probe let the cost model be checked against the clock:

- ``fb`` — the probe's forward-backward equivalents (:attr:`harness.probes.Cost.fb_equivalents`,
  counted per batch pass); ``fb / batches`` is the *predicted* number of steps;
- ``× step`` — the *measured* number of steps: probe seconds ÷ step seconds.

The model has random (seeded) weights: a probe's cost does not depend on how trained they are.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any

import click
import numpy as np
import torch

from harness.bench.common import json_option
from harness.model.device import synchronize, torch_threads
from harness.config import DataConfig, ProbeConfig
from harness.data.sources import load_split
from harness.model import build_model, count_parameters, get_spec, resolve_device
from harness.probes.suite import probe_batches, run_probes
from harness.tracking import schema
from harness.train.batches import batch_loss

MAX_OBJECTS = 4  # the study default (DataConfig.max_objects); every image holds at least one


def _step_seconds(model: torch.nn.Module, batches: list, device: torch.device) -> float:
    """Seconds of one forward + backward of ``batch_loss`` over ``batches``, as training does."""
    synchronize(device)
    start = time.perf_counter()
    for batch in batches:
        batch_loss(model, batch).backward()
    synchronize(device)
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)  # as an optimizer step would leave them
    return elapsed


def run_probe_bench(
    preset: str = "tiny-128",
    batches: int = 2,
    batch_size: int = 8,
    *,
    repeats: int = 6,
    device: str | None = None,
    threads: int | None = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Time the default probe suite (plus a 5×5 2-D landscape) against a training step.

    Args:
        preset: model preset (``harness.model.PRESETS``); its image size sets the data's.
        batches, batch_size: the probe batches (synthetic ``shapes`` training images).
        repeats: timed training steps (≥ 5), half before the probes and half after.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        threads: CPU threads for torch during the run (restored after); ``None`` leaves torch's
            setting. On a busy shared machine more threads than free cores make small kernels
            wait on each other and the timings erratic.
        seed: model init, data and probe seed.

    Returns:
        A JSON-ready dict: ``config``, ``step_seconds`` (median / min / max over the repeats),
        ``probes`` (name → ``seconds``, ``fb``, ``fb_per_step`` = fb ÷ batches, the predicted
        ratio, and ``step_ratio`` = seconds ÷ median step seconds, the measured one) and
        ``total`` (the whole suite, plots included, in the same four fields).
    """
    if repeats < 5:
        raise ValueError(f"repeats must be at least 5 for a meaningful median, got {repeats}")
    dev = resolve_device(device or "auto")
    cfg = dataclasses.replace(ProbeConfig(), batches=batches, batch_size=batch_size,
                              landscape_2d_points=5, seed=seed)
    dataset = load_split(DataConfig(domain="shapes", train_size=batches * batch_size,
                                    image_size=get_spec(preset).image_size, seed=seed,
                                    max_objects=MAX_OBJECTS), "train")
    data = [batch.to(dev) for batch in probe_batches(dataset, cfg)]
    with torch.random.fork_rng(devices=[]):  # a seeded init that leaves the caller's RNG alone
        torch.manual_seed(seed)
        model = build_model(preset).to(dev)

    with torch_threads(threads):
        used_threads = torch.get_num_threads()
        _step_seconds(model, data, dev)  # warm-up: allocator, lazy initialisation
        steps = [_step_seconds(model, data, dev) for _ in range(math.ceil(repeats / 2))]
        report = run_probes(model, batch_loss, data, cfg)
        steps += [_step_seconds(model, data, dev) for _ in range(repeats // 2)]
    step = float(np.median(steps))

    def row(seconds: float, fb: float) -> dict[str, float]:
        return {"seconds": seconds, "fb": fb, "fb_per_step": fb / len(data),
                "step_ratio": seconds / step}

    names = [key.split("/")[1] for key in report.metrics
             if key.startswith(schema.PROBE_COST_PREFIX) and key.endswith("/seconds")]
    probes = {name: row(report.metrics[schema.probe_cost_metric(name, "seconds")],
                        report.metrics[schema.probe_cost_metric(name, "fb")])
              for name in names}
    return {
        "config": {
            "preset": preset, "device": str(dev), "threads": used_threads,
            "parameters": count_parameters(model, trainable_only=True),
            "batches": len(data), "batch_size": batch_size, "repeats": repeats,
            "probe_config": dataclasses.asdict(cfg), "torch": torch.__version__,
        },
        "step_seconds": {"median": step, "min": min(steps), "max": max(steps)},
        "probes": probes,
        "total": row(report.seconds, sum(p["fb"] for p in probes.values())),
    }


def format_report(result: dict[str, Any]) -> str:
    cfg, step = result["config"], result["step_seconds"]
    lines = [
        f"harness bench probes — preset {cfg['preset']} ({cfg['parameters']:,} trainable "
        f"parameters), {cfg['device']}, {cfg['threads']} thread(s)",
        f"probe batches: {cfg['batches']} × {cfg['batch_size']}; one step = forward+backward "
        f"over them = {step['median'] * 1e3:.1f} ms (median of {cfg['repeats']}, "
        f"{step['min'] * 1e3:.1f}–{step['max'] * 1e3:.1f})",
        "",
        f"{'probe':<16}{'seconds':>9}{'fb':>8}{'fb/batches':>12}{'× step':>9}",
    ]
    rows = [*result["probes"].items(), ("total", result["total"])]
    for name, r in rows:
        lines.append(f"{name:<16}{r['seconds']:>9.3f}{r['fb']:>8.1f}{r['fb_per_step']:>12.1f}"
                     f"{r['step_ratio']:>9.1f}")
    lines += ["", "fb/batches: steps predicted by Cost.fb_equivalents (forward ≈ 1/3, HVP ≈ 2);",
              "× step: steps measured (probe seconds ÷ step seconds); total includes plotting."]
    return "\n".join(lines)


@click.command("probes")
@click.option("--preset", default="tiny-128", show_default=True, help="model preset")
@click.option("--batches", default=2, show_default=True, type=click.IntRange(min=1),
              help="probe batches")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=0),
              help="torch CPU threads during the run; 0 keeps torch's default")
@json_option
def probes_command(preset, batches, batch_size, device, threads, as_json):
    """Cost of each sharpness probe as a multiple of a training step on the same batches."""
    result = run_probe_bench(preset, batches, batch_size, device=device, threads=threads or None)
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))
