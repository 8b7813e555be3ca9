"""The training loop: seeded, deterministic on CPU, one code path for AdamW and SAM/ASAM.

The loop knows nothing about MLflow or evaluation: it reports through `log(step, metrics)`
and asks `validate(model)` for validation metrics at the end of every epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from harness import interrupt
from harness.data import SegDataset
from harness.model import layer_decay_groups
from harness.model.embeddings import stored_embeddings
from harness.optim import Hparams, frozen_bn_stats, get_method, needs_closure
from harness.train.batches import batch_loss, make_batch
from harness.train.parallel import DataParallel


class TrainingDiverged(RuntimeError):
    """Training failed: the loss or the weights became NaN or infinite, or (when asked for)
    the loss collapsed to no better than where it started. The message says when."""


class TrainingCollapsed(TrainingDiverged):
    """The loss stayed finite but did not drop as asked (``min_loss_drop``): a run that
    settled where it started (e.g. on predicting nothing), not one that blew up."""


INITIAL_STEPS = 5  # steps averaged for the starting loss of the collapse check


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    val_history: list[dict] = field(default_factory=list)
    validation_seconds: float = 0.0  # per-epoch validation, excluded from `seconds`


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up from 1/warmup to 1, then cosine decay towards 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def train(
    model: torch.nn.Module,
    dataset: SegDataset,
    method: str,
    hparams: Hparams,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    warmup_steps: int = 0,
    box_jitter: float = 0.1,
    grad_clip: float | None = None,
    log: Callable[[int, dict], None] | None = None,
    validate: Callable[[torch.nn.Module], dict] | None = None,
    progress: bool = True,
    min_loss_drop: float | None = None,
    point_prompts: float = 0.0,
    max_points: int = 3,
    layer_decay: float | None = None,
    min_val_miou: float | None = None,
    val_every: int = 1,
    parallel: DataParallel | None = None,
) -> TrainResult:
    """Train `model` in place on `dataset` with optimizer `method`.

    A step takes `batch_size` images with all their instances, a `point_prompts` fraction of
    them prompted by 1..`max_points` clicks instead of their box. With `layer_decay`, encoder
    block i of L learns at lr·decay^(L−i) (see :func:`harness.model.layer_decay_groups`). `hparams` are the method's
    typed settings (``get_method(method).defaults(lr=...)``). Shuffling and box jitter draw from generators seeded
    by `seed`; the caller seeds the model's initialisation.

    With `min_loss_drop` (a fraction), every epoch from the second on must end with a mean
    loss at least that fraction below the mean of the first steps' losses; otherwise training
    has collapsed (as SAM/ASAM do at too large a ρ: the loss settles where it started, on
    predicting nothing) and :class:`TrainingCollapsed` says so. With `min_val_miou`, every
    validation from the second epoch on must reach it, or the run did not escape that
    plateau (:class:`TrainingCollapsed` too). Validation runs after every `val_every`-th
    epoch and after the last.
    """
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    groups = params if layer_decay is None else layer_decay_groups(model, hparams.lr,
                                                                      layer_decay)
    optimizer = get_method(method).build(groups, hparams, max_grad_norm=grad_clip)
    steps_per_epoch = math.ceil(len(dataset.images) / batch_size)
    total = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, total))
    shuffle = torch.Generator().manual_seed(seed)
    jitter_rng = np.random.default_rng(seed)
    two_pass = needs_closure(optimizer)
    # a frozen encoder gives every epoch the same embeddings: compute them once
    embeddings = stored_embeddings(model, dataset)

    result = TrainResult(steps=0, seconds=0.0, final_loss=float("nan"))
    start = time.perf_counter()
    validation_seconds = 0.0  # not training: kept out of the cost that methods are compared on
    bar = tqdm(total=total, desc=f"train {method}", disable=not progress, leave=False)
    model.train()
    losses: list[float] = []
    for epoch in range(epochs):
        epoch_start = len(losses)
        order = torch.randperm(len(dataset.images), generator=shuffle).numpy()
        for first in range(0, len(order), batch_size):
            interrupt.check()
            batch = make_batch(dataset, order[first:first + batch_size], jitter_rng,
                               box_jitter, embeddings, point_prompts, max_points)
            batch, weight = parallel.share(batch) if parallel else (batch, 1.0)
            batch = batch.to(device)
            loss = _backward(model, batch, weight, parallel, params)
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss} at step {result.steps} (epoch {epoch})")
            if two_pass:
                optimizer.step(lambda: _perturbed_backward(model, batch, weight, parallel,
                                                           params))
            else:
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if not all(torch.isfinite(p).all() for p in params[:1] + params[-1:]):
                raise TrainingDiverged(f"parameters became non-finite at step {result.steps}")
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            result.steps += 1
            result.final_loss = loss
            losses.append(result.final_loss)
            if log is not None:
                log(result.steps, {"train/loss": result.final_loss, "train/lr": lr})
            bar.update()
            bar.set_postfix(loss=f"{result.final_loss:.3f}", epoch=epoch + 1)
        if min_loss_drop is not None and epoch >= min(1, epochs - 1):
            _check_collapse(losses, epoch_start, epoch, min_loss_drop)
        if validate is not None and ((epoch + 1) % val_every == 0 or epoch == epochs - 1):
            validation_start = time.perf_counter()
            metrics = validate(model)
            validation_seconds += time.perf_counter() - validation_start
            model.train()
            result.val_history.append({"epoch": epoch + 1, "step": result.steps, **metrics})
            if log is not None:
                log(result.steps, {**metrics, "train/epoch": epoch + 1})
            if min_val_miou is not None and epoch >= min(1, epochs - 1):
                _check_escape(metrics, epoch, min_val_miou, result.steps)
    bar.close()
    result.seconds = time.perf_counter() - start - validation_seconds
    result.validation_seconds = validation_seconds
    return result


def _check_escape(metrics: dict, epoch: int, floor: float, step: int) -> None:
    # A run stuck on "predict nothing" has a finite, even falling loss: only the validation
    # score shows it never left that plateau.
    value = metrics.get("val/miou")
    if value is not None and value < floor:
        raise TrainingCollapsed(f"collapsed: did not escape, validation mIoU {value:.4f} after "
                                f"epoch {epoch + 1} is below {floor:g} (step {step})")


def _check_collapse(losses: list[float], epoch_start: int, epoch: int, drop: float) -> None:
    initial = float(np.mean(losses[:INITIAL_STEPS]))
    current = float(np.mean(losses[epoch_start:]))
    if current > (1 - drop) * initial:
        raise TrainingCollapsed(
            f"collapsed: mean loss of epoch {epoch + 1} is {current:.4g}, not {drop:.0%} below "
            f"the first {min(INITIAL_STEPS, len(losses))} steps' {initial:.4g} "
            f"(step {len(losses)})")


def _backward(model: torch.nn.Module, batch, weight: float, parallel: DataParallel | None,
              params: list) -> float:
    """Backward pass of the (global batch's) mean loss; the loss. Data-parallel: this rank's
    mean weighted by its share of the prompts, gradients summed over the ranks."""
    if len(batch.boxes):
        loss = batch_loss(model, batch) * weight  # weight 1 in one process
        loss.backward()
        value = loss.item()
    else:  # this rank's images hold no prompt: it adds nothing but must join the all-reduce
        value = 0.0
    if parallel is None:
        return value
    parallel.reduce_grads(params)
    return parallel.total(value, params[0].device)


def _perturbed_backward(model: torch.nn.Module, batch, weight: float,
                        parallel: DataParallel | None, params: list) -> torch.Tensor:
    # BatchNorm (TinyViT encoders) must not learn statistics of the perturbed weights
    with frozen_bn_stats(model):
        loss = _backward(model, batch, weight, parallel, params)
    return torch.tensor(loss)
