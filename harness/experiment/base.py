"""Pretrained bases for the tiny presets: trained once with AdamW on a *source* domain, cached.

A study fine-tunes a pretrained segmenter; the tiny CPU presets have no published weights, so
``model.base`` describes how to make some: the preset, trained from a fixed seed on another
domain than the study's target. The weights are content-addressed under
``$HARNESS_HOME/cache/bases/`` (the key hashes everything that determines them), so every trial
of every study that asks for the same base loads the same file, and only the first pays for
it. Building one is recorded as its own MLflow run (role ``base``, experiment
:data:`BASES_EXPERIMENT`) with its curve, source-domain scores and weights, so it can be
browsed like any run. On one host, a file lock makes concurrent workers build it once.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from harness.atomic import atomic_write
from harness.config import StudyConfig, dump_yaml
from harness.data import synthetic
from harness.data.sources import load_split
from harness.evaluate.segment import evaluate_dataset
from harness.experiment.outcome import create_run, recorded_outcome
from harness.home import cache_dir
from harness.model import build_model, resolve_device, torch_threads
from harness.optim import get_method
from harness.tracking import schema
from harness.tracking.mlflow_log import MetricBuffer, log_file, log_metrics, log_params, log_text
from harness.tracking.store import get_experiment_id
from harness.train.loop import train

BASE_VERSION = 1  # bump when the recipe below changes: old bases then miss the cache
BASES_EXPERIMENT = "harness-bases"


def base_key(cfg: StudyConfig) -> str:
    """Everything that determines the base's weights, hashed."""
    recipe = {
        "preset": cfg.model.preset, "base": dataclasses.asdict(cfg.model.base),
        "image_size": cfg.data.image_size, "max_objects": cfg.data.max_objects,
        "data_seed": cfg.data.seed, "generator": synthetic.GENERATOR_VERSION,
        # the base is trained with the study's prompts (tight or loose boxes)
        "box_margin": [cfg.data.box_margin, cfg.data.box_margin_noise],
        "train": {k: getattr(cfg.train, k) for k in (
            "box_jitter", "point_prompts", "max_points", "warmup_steps", "grad_clip")},
        "version": BASE_VERSION,
        "torch": torch.__version__.split("+")[0],
    }
    return hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def base_path(cfg: StudyConfig) -> Path:
    return cache_dir() / "bases" / f"{cfg.model.preset}-{base_key(cfg)}.pt"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def ensure_base(cfg: StudyConfig, client: MlflowClient, progress: bool = True) -> Path:
    """The base checkpoint `cfg.model.base` asks for, trained now if not cached yet."""
    path = base_path(cfg)
    if path.is_file():
        return path
    with _locked(path):
        if not path.is_file():  # another worker may have built it while we waited
            _build(cfg, path, client, progress)
    return path


def _source_data(cfg: StudyConfig):
    base = cfg.model.base
    return dataclasses.replace(cfg.data, source="synthetic", domain=base.domain,
                               train_size=base.train_size)


def _build(cfg: StudyConfig, path: Path, client: MlflowClient, progress: bool) -> None:
    base = cfg.model.base
    data = _source_data(cfg)
    run = create_run(client, get_experiment_id(client, BASES_EXPERIMENT), {
        schema.ROLE: schema.ROLE_BASE, schema.RUN_NAME: path.stem,
        schema.METHOD: "adamw", schema.SEED: str(base.seed)})
    run_id = run.info.run_id
    with recorded_outcome(client, run_id), torch_threads(cfg.train.threads):
        log_params(client, run_id, {"preset": cfg.model.preset, "key": base_key(cfg),
                                    "base": dataclasses.asdict(base), "data": data.__dict__})
        log_text(client, run_id, dump_yaml({"base": dataclasses.asdict(base),
                                            "study": cfg.to_dict()}), schema.CONFIG_ARTIFACT)
        curves = MetricBuffer(client, run_id)
        torch.manual_seed(base.seed)
        device = resolve_device(cfg.train.device)
        model = build_model(cfg.model.preset).to(device)
        hparams = get_method("adamw").defaults(lr=base.lr)
        started = time.perf_counter()
        try:
            result = train(model, load_split(data, "train"), "adamw", hparams,
                           epochs=base.epochs, batch_size=base.batch_size, seed=base.seed,
                           warmup_steps=cfg.train.warmup_steps, box_jitter=cfg.train.box_jitter,
                           grad_clip=cfg.train.grad_clip, log=curves, progress=progress,
                           point_prompts=cfg.train.point_prompts,
                           max_points=cfg.train.max_points)
        finally:
            curves.flush()
        source = evaluate_dataset(model, load_split(data, "val"), boundary=False,
                                  batch_size=cfg.train.eval_batch_size)
        log_metrics(client, run_id, {schema.COST_TRAIN: result.seconds,
                                     schema.COST_WALL: time.perf_counter() - started,
                                     schema.VAL_MIOU: source["miou"],
                                     schema.TRAIN_FINAL_LOSS: result.final_loss},
                    step=result.steps)
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        with atomic_write(path) as f:
            torch.save(state, f)
        log_file(client, run_id, lambda p: torch.save(state, p), schema.MODEL_FILE,
                 schema.MODEL_DIR)


def starting_weights(cfg: StudyConfig, client: MlflowClient, progress: bool = True) -> str | None:
    """The checkpoint every trial of `cfg` starts from: ``model.checkpoint``, the base that
    ``model.base`` describes (built if needed), or None (the preset's own initialisation)."""
    if cfg.model.checkpoint is not None:
        return cfg.model.checkpoint
    if cfg.model.base is not None:
        return str(ensure_base(cfg, client, progress))
    return None
