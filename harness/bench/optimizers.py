"""``harness bench optimizers``: what a SAM / ASAM training step costs relative to AdamW.

Every contender trains its own copy of one tiny Segment Anything model on the same batch, and
the steps are *interleaved*: round-robin across contenders, one step at a time, in a fresh
random order each time (so no contender always follows the same neighbour), and a burst of load
from another process hits all of them alike.
A *round* is ``every_k`` steps per contender (one full ascent cycle of the ``every_k``
variants), and each round yields one time ratio per pair; we report the median, the
inter-quartile range and the extremes over the rounds. Absolute times are never the result.

Contenders (all on an AdamW base with its default implementation):

- ``adamw``                     — the reference, one forward/backward per step;
- ``sam``, ``asam``             — :class:`harness.optim.SAM` / :class:`harness.optim.ASAM`;
- ``asam-k5-looksam/skip``      — ASAM ascending every k-th step (see :mod:`harness.optim.efficient`);
- ``asam-loop``                 — :class:`LoopASAM` below: the same maths written with one Python
  iteration per parameter, as most published code does; the fused version must not be slower.

Fine-tuning mode and precision: ``--trainable decoder|lora|all`` builds every copy with that
mode (the optimizers see only its trainable parameters, as in a study) and ``--autocast bf16``
runs forward and loss under ``torch.autocast`` — the GPU check of a pretrained vit_b is
``harness bench optimizers --preset vit_b --device cuda --trainable lora --autocast bf16``.

Memory: on CUDA the peak of ``torch.cuda.max_memory_allocated`` over one round, minus AdamW's.
On CPU there is no reliable per-contender peak inside one process, so we report the bytes of
tensors the optimizer itself holds at its fullest (during the second pass: base-optimizer state,
saved weights, LookSAM buffers), minus AdamW's, computed from tensor sizes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import numpy as np
import torch

from harness.bench.common import json_option, summary
from harness.model.device import synchronize, torch_threads
from harness.model import TRAINABLE
from harness.optim import ASAM, SAM

BASE = torch.optim.AdamW
BASE_KWARGS = dict(lr=1e-4, weight_decay=0.01)


class LoopASAM:
    """ASAM the straightforward way: a Python loop and a handful of kernels per parameter.

    Same maths and calling convention as :class:`harness.optim.ASAM` (ε = ρ T² g / ‖T g‖,
    T = |w| + η, w copied back before the base step); the benchmark's baseline.
    """

    def __init__(self, params, base_optimizer, rho: float = 0.5, eta: float = 0.01, **base_kwargs):
        self.params = list(params)
        self.base_optimizer = base_optimizer(self.params, **base_kwargs)
        self.rho, self.eta = rho, eta
        self.saved: dict[torch.Tensor, torch.Tensor] = {}

    @torch.no_grad()
    def first_step(self) -> None:
        with_grad = [p for p in self.params if p.grad is not None]
        norm = torch.stack([((p.abs() + self.eta) * p.grad).norm() for p in with_grad]).norm()
        for p in with_grad:
            self.saved[p] = p.clone()
            t = p.abs() + self.eta
            p.add_(t * t * p.grad * (self.rho / (norm + 1e-12)))
        self.zero_grad()

    @torch.no_grad()
    def second_step(self) -> None:
        for p, w in self.saved.items():
            p.copy_(w)
        self.saved.clear()
        self.base_optimizer.step()

    def step(self, closure: Callable[[], Any]) -> None:
        self.first_step()
        with torch.enable_grad():
            closure()
        self.second_step()

    def zero_grad(self) -> None:
        self.base_optimizer.zero_grad(set_to_none=True)


def _contenders(every_k: int) -> dict[str, Callable]:
    """name → optimizer factory over a parameter list."""
    return {
        "adamw": lambda ps: BASE(ps, **BASE_KWARGS),
        "sam": lambda ps: SAM(ps, BASE, **BASE_KWARGS),
        "asam": lambda ps: ASAM(ps, BASE, **BASE_KWARGS),
        f"asam-k{every_k}-looksam": lambda ps: ASAM(
            ps, BASE, every_k=every_k, off_step="looksam", **BASE_KWARGS),
        f"asam-k{every_k}-skip": lambda ps: ASAM(ps, BASE, every_k=every_k, **BASE_KWARGS),
        "asam-loop": lambda ps: LoopASAM(ps, BASE, **BASE_KWARGS),
    }


def _ratios(every_k: int) -> list[tuple[str, str]]:
    return [
        ("sam", "adamw"),
        ("asam", "adamw"),
        (f"asam-k{every_k}-looksam", "adamw"),
        (f"asam-k{every_k}-skip", "adamw"),
        ("asam", "asam-loop"),
        ("asam-loop", "adamw"),
    ]


GOALS = {"asam/adamw": 2.05, "asam/asam-loop": 1.0, "asam-k5-looksam/adamw": 1.3,
         "asam-k5-skip/adamw": 1.3}


# -- the workload --------------------------------------------------------------------------------


AUTOCAST = {"none": None, "bf16": torch.bfloat16}  # fp16 would need a GradScaler: not offered


def _segmentation_workload(preset: str, batch_size: int, device: torch.device, seed: int,
                           trainable: str = "all", autocast: str = "none"):
    """A model factory (random weights, `trainable` mode) and a loss closure over one fixed
    synthetic batch of box prompts, run under `autocast` (a key of :data:`AUTOCAST`)."""
    from harness.model import build_model, get_spec, predict_masks
    from harness.train.losses import segmentation_loss

    size = get_spec(preset).image_size
    gen = torch.Generator().manual_seed(seed)
    images = (torch.rand(batch_size, 3, size, size, generator=gen) * 255).to(device)
    corners = torch.randint(0, size // 2, (batch_size, 2), generator=gen)
    extent = torch.randint(size // 8, size // 2, (batch_size, 2), generator=gen)
    boxes = torch.cat([corners, corners + extent], dim=1).float().to(device)
    ys, xs = torch.arange(size)[:, None], torch.arange(size)[None, :]
    targets = torch.stack([
        (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1) for x0, y0, x1, y1 in boxes.long().tolist()
    ])[:, None].to(device)

    def make_model() -> torch.nn.Module:
        torch.manual_seed(seed)
        return build_model(preset, trainable=trainable).to(device).train()

    dtype = AUTOCAST[autocast]

    def loss_fn(model: torch.nn.Module) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return segmentation_loss(*predict_masks(model, images, boxes=boxes), targets)

    return make_model, loss_fn


@dataclass
class _Contender:
    name: str
    model: torch.nn.Module
    optimizer: Any
    seconds: list[float] = field(default_factory=list)  # per round
    held_bytes: int = 0

    def train_step(self, loss_fn: Callable, on_second_pass: Callable | None = None) -> None:
        loss_fn(self.model).backward()
        if isinstance(self.optimizer, (SAM, LoopASAM)):
            def closure():
                loss = loss_fn(self.model)
                loss.backward()
                if on_second_pass is not None:
                    on_second_pass(self)
                return loss

            self.optimizer.step(closure)
        else:
            self.optimizer.step()
        self.optimizer.zero_grad()
        if on_second_pass is not None:
            on_second_pass(self)


# -- memory -------------------------------------------------------------------------------------


def _optimizer_tensor_bytes(optimizer: Any, exclude: set[int]) -> int:
    """Bytes of the distinct tensor storages reachable from the optimizer's attributes.

    Parameters (``exclude``: their storage pointers) and ``param_groups`` are not counted; state
    dicts, saved weights, LookSAM buffers and the base optimizer's state are.
    """
    seen: set[int] = set()

    def visit(obj: Any) -> int:
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            key = storage.data_ptr()
            if key in seen or key in exclude:
                return 0
            seen.add(key)
            return storage.nbytes()
        if isinstance(obj, dict):
            return sum(visit(v) for k, v in obj.items() if k not in ("param_groups", "params"))
        if isinstance(obj, (list, tuple)):
            return sum(visit(v) for v in obj)
        if isinstance(obj, (torch.optim.Optimizer, LoopASAM)) or dataclasses.is_dataclass(obj):
            return visit(vars(obj))
        return 0

    return visit(optimizer)


def _cpu_memory(contenders: list[_Contender], loss_fn: Callable) -> dict[str, int]:
    def record(c: _Contender) -> None:
        exclude = {p.untyped_storage().data_ptr() for p in c.model.parameters()}
        c.held_bytes = max(c.held_bytes, _optimizer_tensor_bytes(c.optimizer, exclude))

    for c in contenders:
        c.train_step(loss_fn, on_second_pass=record)
    return {c.name: c.held_bytes for c in contenders}


def _cuda_memory(contenders: list[_Contender], loss_fn: Callable, every_k: int) -> dict[str, int]:
    peaks = {}
    for c in contenders:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(every_k):
            c.train_step(loss_fn)
        torch.cuda.synchronize()
        peaks[c.name] = torch.cuda.max_memory_allocated() - base
    return peaks


# -- the benchmark ------------------------------------------------------------------------------


def run_optimizer_bench(
    preset: str = "tiny-64",
    steps: int = 20,
    *,
    batch_size: int = 4,
    every_k: int = 5,
    warmup: int = 2,
    device: str | None = None,
    threads: int | None = 1,
    seed: int = 0,
    trainable: str = "all",
    autocast: str = "none",
) -> dict[str, Any]:
    """Measure per-step time ratios and extra memory of SAM/ASAM variants against AdamW.

    Args:
        preset: model preset (``harness.model.PRESETS``).
        steps: timed rounds (≥ 3); each is ``every_k`` optimizer steps of every contender, so
            the ``every_k`` variants are timed over whole ascent cycles.
        every_k: k of the efficient variants.
        warmup: untimed rounds first (allocator, caches, lazy init).
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        threads: CPU threads for torch during the run (restored after); ``None`` leaves torch's
            setting. One thread gives steadier ratios on a shared machine.
        trainable: fine-tuning mode of every copy (``harness.model.TRAINABLE``); the
            optimizers get its trainable parameters only.
        autocast: ``"none"`` or ``"bf16"`` (forward and loss under ``torch.autocast``).

    Returns:
        A JSON-ready dict: ``config``, ``ratios`` (``"a/b"`` → median, q25, q75, min, max of the
        per-round time ratio), ``memory`` (extra bytes vs AdamW per contender, with ``kind``
        saying how they were measured) and ``goals``.
    """
    if steps < 3:
        raise ValueError("steps must be at least 3")
    if autocast not in AUTOCAST:
        raise ValueError(f"autocast must be one of {sorted(AUTOCAST)}, got {autocast!r}")
    from harness.model import count_parameters, resolve_device

    dev = resolve_device(device or "auto")
    with torch_threads(threads):
        used_threads = torch.get_num_threads()
        make_model, loss_fn = _segmentation_workload(preset, batch_size, dev, seed, trainable,
                                                     autocast)
        contenders = []
        for name, factory in _contenders(every_k).items():
            model = make_model()
            trained = [p for p in model.parameters() if p.requires_grad]
            contenders.append(_Contender(name, model, factory(trained)))
        # every copy is the same model: the last one's counts stand for all
        n_params = count_parameters(model, trainable_only=True)
        total_params = count_parameters(model)
        param_bytes = sum(p.numel() * p.element_size() for p in trained)

        def timed_step(c: _Contender) -> float:
            synchronize(dev)
            start = time.perf_counter()
            c.train_step(loss_fn)
            synchronize(dev)
            return time.perf_counter() - start

        shuffle = np.random.default_rng(seed)
        for round_index in range(warmup + steps):
            spent = dict.fromkeys(range(len(contenders)), 0.0)
            for _ in range(every_k):
                for i in shuffle.permutation(len(contenders)):
                    spent[i] += timed_step(contenders[i])
            if round_index >= warmup:
                for i, c in enumerate(contenders):
                    c.seconds.append(spent[i])

        times = {c.name: np.array(c.seconds) for c in contenders}
        ratios = {f"{a}/{b}": summary(list(times[a] / times[b])) for a, b in _ratios(every_k)}
        if dev.type == "cuda":
            kind = "cuda max_memory_allocated over one round, minus AdamW's"
            memory = _cuda_memory(contenders, loss_fn, every_k)
        else:
            kind = ("tensors held by the optimizer at its fullest (second pass), from tensor "
                    "sizes, minus AdamW's")
            memory = _cpu_memory(contenders, loss_fn)
        extra = {name: value - memory["adamw"] for name, value in memory.items() if name != "adamw"}

    return {
        "config": {
            "preset": preset, "trainable": trainable, "autocast": autocast,
            "total_parameters": total_params, "device": str(dev), "threads": used_threads,
            "batch_size": batch_size, "rounds": steps, "steps_per_round": every_k,
            "warmup_rounds": warmup, "parameters": n_params, "parameter_bytes": param_bytes,
            "base": f"{BASE.__name__}{BASE_KWARGS}", "torch": torch.__version__,
        },
        "ratios": ratios,
        "memory": {"kind": kind, "extra_bytes": extra},
        "goals": {k: {"max": v, "met": ratios[k]["median"] <= v}
                  for k, v in GOALS.items() if k in ratios},
    }


def format_report(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"harness bench optimizers — preset {cfg['preset']}, trainable {cfg['trainable']} "
        f"({cfg['parameters']:,} of {cfg['total_parameters']:,} parameters), autocast "
        f"{cfg['autocast']}, {cfg['device']}, {cfg['threads']} thread(s), batch {cfg['batch_size']}",
        f"{cfg['rounds']} interleaved rounds × {cfg['steps_per_round']} steps per optimizer "
        f"(after {cfg['warmup_rounds']} warm-up rounds); base {cfg['base']}",
        "",
        f"{'per-step time ratio':<28}{'median':>8}   {'IQR':<13}  {'min–max':<13}  goal",
    ]
    for name, r in result["ratios"].items():
        goal = result["goals"].get(name)
        verdict = "" if goal is None else f"≤ {goal['max']:.2f} {'ok' if goal['met'] else 'MISSED'}"
        lines.append(
            f"{name:<28}{r['median']:>8.3f}   {r['q25']:.3f}–{r['q75']:.3f}  "
            f"{r['min']:.3f}–{r['max']:.3f}  {verdict}"
        )
    mib = 2**20
    lines += ["", f"extra memory vs AdamW ({result['memory']['kind']}; "
                  f"trainable parameters = {cfg['parameter_bytes'] / mib:.2f} MiB):"]
    for name, extra in result["memory"]["extra_bytes"].items():
        lines.append(f"  {name:<26}{extra / mib:>+8.2f} MiB  ({extra / cfg['parameter_bytes']:+.2f}× parameters)")
    return "\n".join(lines)


@click.command("optimizers")
@click.option("--preset", default="tiny-64", show_default=True, help="model preset")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(min=3),
              help="timed rounds; each is --every-k steps of every optimizer")
@click.option("--every-k", default=5, show_default=True, type=click.IntRange(min=1),
              help="k of the ASAM every-k variants")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=0),
              help="torch CPU threads during the run; 0 keeps torch's default")
@click.option("--trainable", default="all", show_default=True, type=click.Choice(TRAINABLE),
              help="fine-tuning mode of every copy (lora adds default adapters)")
@click.option("--autocast", default="none", show_default=True, type=click.Choice(list(AUTOCAST)),
              help="run forward and loss under torch.autocast in this dtype")
@json_option
def optimizers_command(preset, steps, every_k, batch_size, device, threads, trainable, autocast,
                       as_json):
    """Per-step cost of SAM / ASAM (and every-k variants) relative to AdamW, interleaved.

    Random weights of any preset: the GPU check of vit_b is, per mode,
    `harness bench optimizers --preset vit_b --device cuda --trainable lora --autocast bf16`.
    """
    result = run_optimizer_bench(preset, steps, batch_size=batch_size, every_k=every_k,
                                 device=device, threads=threads or None, trainable=trainable,
                                 autocast=autocast)
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))
