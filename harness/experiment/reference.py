"""The rows every comparison needs: prompt-only priors and the zero-shot pretrained model.

A trained model that does not beat filling its prompt box has not learned to segment, and a
fine-tune is only worth what it gained over the pretrained model it started from. So a study
records, next to its final runs and scored exactly like them (clean splits with per-mask
scores, the shift suite): one run per prior of ``evaluate.priors`` (role ``baseline``; the
method tag is the prior's name) and, when the model starts from pretrained weights, one run
of those weights untouched (role ``zero-shot``, method ``zero-shot``, weights logged). They
are deterministic: one run each, recorded once per study.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from mlflow.tracking import MlflowClient

from harness.config import StudyConfig, dump_yaml
from harness.data.sources import load_splits
from harness.evaluate.priors import PRIORS
from harness.experiment.base import starting_weights
from harness.experiment.outcome import create_run, recorded_outcome
from harness.experiment.trial import clean_metrics, evaluate_extras, study_tags
from harness.model import build_model, resolve_device, torch_threads
from harness.tracking import schema
from harness.tracking.mlflow_log import log_file, log_metrics, log_params, log_text, runs_with_tags

ZERO_SHOT = "zero-shot"


def reference_names(cfg: StudyConfig) -> list[tuple[str, str]]:
    """(role, name) of every reference run `cfg` records."""
    names = [(schema.ROLE_BASELINE, prior) for prior in cfg.evaluate.priors]
    return names + ([(schema.ROLE_ZERO_SHOT, ZERO_SHOT)] if cfg.model.pretrained else [])


def reference_runs(cfg: StudyConfig, client: MlflowClient, experiment_id: str,
                   parent_run_id: str, progress: bool = True,
                   names: list[tuple[str, str]] | None = None,
                   on_run_created: Callable[[str], None] | None = None,
                   ) -> dict[str, dict[str, float]]:
    """Record the study's missing reference runs (of `names`, default all); {name: metrics}
    of those recorded now."""
    splits = None
    out = {}
    for role, name in names or reference_names(cfg):
        if runs_with_tags(client, [experiment_id], {
                schema.PARENT_RUN: parent_run_id, schema.ROLE: role, schema.METHOD: name,
                schema.STATUS: schema.STATUS_OK}):
            continue
        if splits is None:
            splits = load_splits(cfg.data, tuple(dict.fromkeys(
                ["train", *cfg.evaluate.splits, "test"])))
        if role == schema.ROLE_BASELINE:
            def make(name=name):
                return PRIORS[name](splits["train"])
        else:
            def make():
                return build_model(cfg.model.preset, starting_weights(cfg, client, progress),
                                   cfg.model.trainable, cfg.model.lora_spec())
        out[name] = record_reference(cfg, role, name, make, splits, client, experiment_id,
                                     parent_run_id, progress, on_run_created)
    return out


def record_reference(cfg: StudyConfig, role: str, name: str,
                     make: Callable[[], torch.nn.Module], splits: dict, client: MlflowClient,
                     experiment_id: str, parent_run_id: str | None, progress: bool,
                     on_run_created: Callable[[str], None] | None = None) -> dict[str, float]:
    """Score a model that is not trained here (a prior, pretrained weights) like a final run:
    clean splits with per-mask scores, the shift suite; recorded as one run of `role`."""
    tags = {**study_tags(cfg), schema.RUN_NAME: name, schema.ROLE: role, schema.METHOD: name,
            schema.PHASE: schema.PHASE_FINAL}
    if parent_run_id is not None:
        tags[schema.PARENT_RUN] = parent_run_id
    run_id = create_run(client, experiment_id, tags).info.run_id
    if on_run_created is not None:
        on_run_created(run_id)
    with recorded_outcome(client, run_id), torch_threads(cfg.train.threads):
        log_params(client, run_id, {"method": name, "phase": schema.PHASE_FINAL, "role": role,
                                    "model": cfg.model.__dict__, "data": cfg.data.__dict__,
                                    "study": cfg.name, "preset": cfg.preset or ""})
        log_text(client, run_id, dump_yaml({"reference": {"role": role, "name": name},
                                            "study": cfg.to_dict()}), schema.CONFIG_ARTIFACT)
        model = make().to(resolve_device(cfg.train.device))
        metrics = clean_metrics(cfg, model, splits, client, run_id)
        if role == schema.ROLE_ZERO_SHOT:
            log_file(client, run_id, lambda p: torch.save(model.state_dict(), p),
                     schema.MODEL_FILE, schema.MODEL_DIR)
        # priors have no weights to probe; the zero-shot model is probed like a final run
        metrics.update(evaluate_extras(cfg, model, splits, client, run_id, progress,
                                       probes=None if role == schema.ROLE_ZERO_SHOT else False,
                                       test_miou=metrics.get(schema.TEST_MIOU)))
        log_metrics(client, run_id, metrics)
    return metrics
