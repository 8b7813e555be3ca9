"""One trial end to end — data, model, training, evaluation, probes — recorded as one MLflow run.

The run holds params, per-step curves, clean metrics per split, costs, the resolved config
(`config.yaml`) and the weights (`model/state_dict.pt`). A run whose training diverged ends
FAILED with tag `harness.status=diverged` and the reason; an interrupted one ends KILLED.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient

from harness.config import StudyConfig, dump_yaml, hparams_of
from harness.data import SegDataset
from harness.data.sources import load_splits
from harness.evaluate.segment import evaluate_dataset, mean_scores, timed_scores
from harness.evaluate.shifts import evaluate_shifts, shift_metrics
from harness.experiment.base import starting_weights
from harness.experiment.costs import PeakMemory
from harness.experiment.outcome import create_run, recorded_outcome
from harness.home import cache_dir
from harness.model import build_model, count_parameters, resolve_device, torch_threads
from harness.optim import Hparams, get_method
from harness.probes.suite import probe_batches, run_probes
from harness.tracking import schema
from harness.tracking.mlflow_log import MetricBuffer, log_file, log_metrics, log_params, log_text
from harness.train.batches import batch_loss
from harness.train.loop import train
from harness.train.processes import train_in_processes


@dataclass
class TrialSpec:
    method: str
    hparams: Hparams  # the method's typed settings (lr, weight_decay, rho, ...)
    seed: int
    phase: str  # tune | final | single
    trial_number: int | None = None
    tags: dict = field(default_factory=dict)


def method_hparams(cfg: StudyConfig, method: str, overrides: dict | None = None) -> Hparams:
    """The settings of `method` from the config, with `overrides` (tuned or given values)."""
    return dataclasses.replace(hparams_of(cfg.methods[method]), **(overrides or {}))


def study_tags(cfg: StudyConfig) -> dict[str, str]:
    return {schema.STUDY: cfg.name, schema.PRESET: cfg.preset or ""}


def run_trial(
    cfg: StudyConfig,
    spec: TrialSpec,
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str | None = None,
    on_run_created: Callable[[str], None] | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train and evaluate one configuration; returns the logged summary metrics."""
    tags = {
        **study_tags(cfg),
        schema.METHOD: spec.method,
        schema.PHASE: spec.phase,
        schema.SEED: str(spec.seed),
        schema.ROLE: schema.ROLE_TRIAL,
        **spec.tags,
    }
    if parent_run_id:
        tags[schema.PARENT_RUN] = parent_run_id
    number = f"-t{spec.trial_number}" if spec.trial_number is not None else ""
    tags[schema.RUN_NAME] = f"{spec.method}-{spec.phase}{number}-seed{spec.seed}"
    run = create_run(client, experiment_id, tags)
    run_id = run.info.run_id
    # from here on an interrupt, wherever it lands, closes the run
    with recorded_outcome(client, run_id), torch_threads(cfg.train.threads):
        if on_run_created is not None:
            on_run_created(run_id)
        return _execute(cfg, spec, client, run_id, progress,
                        starting_weights(cfg, client, progress))


def _execute(cfg: StudyConfig, spec: TrialSpec, client: MlflowClient, run_id: str,
             progress: bool, checkpoint: str | None) -> dict[str, float]:
    trial_cfg = {"method": spec.method, "phase": spec.phase, "seed": spec.seed,
                 **spec.hparams.as_dict()}
    log_params(client, run_id, {
        **trial_cfg, "model": cfg.model.__dict__, "data": cfg.data.__dict__,
        "train": cfg.train.__dict__, "study": cfg.name, "preset": cfg.preset or "",
    })
    log_text(client, run_id, dump_yaml({"trial": trial_cfg, "study": cfg.to_dict()}),
                     schema.CONFIG_ARTIFACT)

    started = time.perf_counter()
    splits = load_splits(cfg.data)
    torch.manual_seed(spec.seed)
    device = resolve_device(cfg.train.device)
    client.set_tag(run_id, schema.DEVICE, device.type)
    model = build_model(cfg.model.preset, checkpoint, cfg.model.trainable,
                        cfg.model.lora_spec()).to(device)
    log_metrics(client, run_id, {schema.MODEL_PARAMS: count_parameters(model),
                                 schema.MODEL_TRAINABLE: count_parameters(model, True)})
    curves = MetricBuffer(client, run_id)

    def validate(m):
        return {schema.VAL_MIOU: evaluate_dataset(m, splits["val"], boundary=False,
                                                  batch_size=cfg.train.eval_batch_size)["miou"]}

    try:
        settings = dict(
            epochs=get_method(spec.method).epochs(cfg.train.epochs),
            batch_size=cfg.train.batch_size, seed=spec.seed,
            warmup_steps=cfg.train.warmup_steps, box_jitter=cfg.train.box_jitter,
            grad_clip=cfg.train.grad_clip, min_loss_drop=cfg.train.min_loss_drop,
            point_prompts=cfg.train.point_prompts, max_points=cfg.train.max_points,
            layer_decay=cfg.train.layer_decay, min_val_miou=cfg.train.min_val_miou,
            val_every=cfg.train.val_every)
        with PeakMemory(device) as memory:  # the parent's: ranks are other processes
            if cfg.train.nproc > 1:
                result = train_in_processes(
                    model, splits["train"], spec.method, spec.hparams, nproc=cfg.train.nproc,
                    val=splits["val"], eval_batch_size=cfg.train.eval_batch_size,
                    threads=max(1, torch.get_num_threads() // cfg.train.nproc), log=curves,
                    **settings)
            else:
                result = train(model, splits["train"], spec.method, spec.hparams, log=curves,
                               validate=validate, progress=progress, **settings)
    finally:
        curves.flush()  # the curve up to a divergence is the evidence for it

    summary = {
        schema.COST_TRAIN: result.seconds,
        schema.COST_STEP: result.seconds / max(1, result.steps),
        schema.COST_PASSES: get_method(spec.method).budget(result.steps),
        schema.COST_VALIDATION: result.validation_seconds,
        schema.COST_MEMORY: memory.peak_mb,
        schema.TRAIN_FINAL_LOSS: result.final_loss,
        **clean_metrics(cfg, model, splits, client, run_id),
    }
    # val/miou is already on the per-epoch curve at this step (same model, same value)
    log_metrics(client, run_id, {k: v for k, v in summary.items() if k != schema.VAL_MIOU},
                step=result.steps)
    log_file(client, run_id, lambda p: torch.save(model.state_dict(), p), schema.MODEL_FILE,
             schema.MODEL_DIR)
    if spec.phase != schema.PHASE_TUNE or cfg.evaluate.in_tuning:
        extra = evaluate_extras(cfg, model, splits, client, run_id, progress,
                                test_miou=summary.get(schema.TEST_MIOU))
        log_metrics(client, run_id, extra, step=result.steps)
        summary.update(extra)
    # the whole trial as a user waits for it: data, training, evaluation, shifts, probes
    wall = {schema.COST_WALL: time.perf_counter() - started}
    log_metrics(client, run_id, wall, step=result.steps)
    return {**summary, **wall}


def clean_metrics(cfg: StudyConfig, model: torch.nn.Module, splits: dict[str, SegDataset],
                  client: MlflowClient | None = None,
                  run_id: str | None = None) -> dict[str, float]:
    """``<split>/{miou,mdice,biou}`` for every split of ``evaluate.splits``, and the test
    split's prediction time per image as ``cost/infer_ms_per_image``. With a run, each
    split's per-mask scores are logged too (``scores/<split>.csv``): the report's paired
    per-mask tests need them."""
    out: dict[str, float] = {}
    for split in cfg.evaluate.splits:
        scores, seconds = timed_scores(model, splits[split],
                                       batch_size=cfg.train.eval_batch_size)
        if split == "test":
            out[schema.COST_INFER] = 1000 * seconds / len(splits[split].images)
        out.update({schema.split_metric(split, k): v for k, v in mean_scores(scores).items()})
        if client is not None:
            table = pd.DataFrame({"mask": np.arange(len(splits[split])),
                                  "image": splits[split].owner, **scores})
            log_file(client, run_id, lambda p, t=table: t.to_csv(p, index=False),
                     f"{split}.csv", schema.SCORES_DIR)
    return out


def evaluate_extras(cfg: StudyConfig, model: torch.nn.Module, splits: dict[str, SegDataset],
                    client: MlflowClient, run_id: str, progress: bool,
                    shifts: list[str] | None = None, probes: bool | None = None,
                    test_miou: float | None = None, reuse_scores: bool = True) -> dict:
    """The shift suite and the sharpness probes (as the config asks) and the generalisation
    gaps they imply; tables and figures become artifacts of `run_id`, metrics are returned."""
    metrics: dict[str, float] = {}
    shifts = cfg.evaluate.shifts if shifts is None else shifts
    if shifts:
        table = evaluate_shifts(model, cfg, splits["test"], cache_dir(), shifts, progress,
                                reuse_scores)
        log_file(client, run_id, lambda p: table.to_csv(p, index=False), schema.SHIFTS_ARTIFACT)
        metrics.update(shift_metrics(table))
        clean = table.loc[table["kind"] == "clean", "miou"]
        if schema.SHIFT_MEAN_MIOU in metrics and len(clean):
            metrics[schema.GAP_CLEAN_SHIFT] = float(clean.iloc[0]) - metrics[
                schema.SHIFT_MEAN_MIOU]
    if cfg.probes.enabled if probes is None else probes:
        device = next(model.parameters()).device
        batches = [b.to(device) for b in probe_batches(splits["train"], cfg.probes)]
        report = run_probes(model, batch_loss, batches, cfg.probes, progress)
        metrics.update(report.metrics)
        for name, fig in report.figures.items():
            log_file(client, run_id, lambda p, f=fig: f.savefig(p, dpi=120), name,
                     schema.PROBES_DIR)
        for name, df in report.tables.items():
            log_file(client, run_id, lambda p, d=df: d.to_csv(p, index=False), name,
                     schema.PROBES_DIR)
        train_probe = splits["train"].first_images(len(splits["test"].images))
        train_miou = evaluate_dataset(model, train_probe, batch_size=cfg.train.eval_batch_size,
                                      boundary=False)["miou"]
        metrics[schema.TRAIN_MIOU] = train_miou
        if test_miou is None:
            test_miou = evaluate_dataset(model, splits["test"], boundary=False,
                                         batch_size=cfg.train.eval_batch_size)["miou"]
        metrics[schema.GAP_TRAIN_TEST] = train_miou - test_miou
    return metrics
