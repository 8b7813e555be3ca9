"""Evaluate or probe a model that a finished run logged, and record the results in that run."""

from __future__ import annotations

import yaml
from mlflow.exceptions import MlflowException

from harness.config import study_from_dict
from harness.data.sources import load_split, load_splits
from harness.errors import HarnessError
from harness.evaluate.ensemble import Ensemble
from harness.evaluate.priors import PRIORS
from harness.experiment.reference import record_reference
from harness.experiment.trial import evaluate_extras
from harness.model import build_model, get_spec, resolve_device
from harness.tracking import schema
from harness.tracking.mlflow_log import log_metrics, quiet_artifacts
from harness.tracking.store import get_experiment_id, tracking_client


def _download(client, run_id: str, path: str) -> str:
    try:
        with quiet_artifacts():  # small files: a progress bar per download would only clutter
            return client.download_artifacts(run_id, path)
    except (MlflowException, OSError) as exc:
        raise HarnessError(f"run {run_id}: no logged model to load "
                           f"({str(exc).splitlines()[0]})") from None


def load_logged_model(run_id: str, tracking_uri: str | None = None, client=None):
    """(client, study config, model) of a trial or zero-shot run, from its config.yaml and
    weights; of an ensemble run, rebuilt from its members' weights; of a prior's run, the
    prior again. On the config's ``train.device``."""
    client = client or tracking_client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise HarnessError(f"run {run_id}: {str(exc).splitlines()[0]}") from None
    with open(_download(client, run_id, schema.CONFIG_ARTIFACT)) as f:
        logged = yaml.safe_load(f)
    cfg = study_from_dict(logged["study"], source=f"run {run_id} config.yaml")
    if "ensemble" in logged:
        members = [load_logged_model(member, client=client)[2]
                   for member in run.data.tags[schema.MEMBERS].split(",")]
        return client, cfg, Ensemble(members, logged["ensemble"]["aggregation"])
    if logged.get("reference", {}).get("role") == schema.ROLE_BASELINE:  # a prior: no weights
        return client, cfg, PRIORS[logged["reference"]["name"]](load_split(cfg.data, "train"))
    model = build_model(cfg.model.preset, _download(client, run_id, schema.MODEL_ARTIFACT),
                        cfg.model.trainable)
    return client, cfg, model.to(resolve_device(cfg.train.device))


def evaluate_run(run_id: str, shifts: list[str] | None = None, probes: bool = False,
                 tracking_uri: str | None = None, progress: bool = True,
                 reuse_scores: bool = True) -> dict[str, float]:
    """Run the shift suite (`shifts`) and/or the probes on a logged model; log into the run.

    A run that already has a shift table keeps its cells: `shifts` is added to the study's
    spec, so the aggregates (`shift/mean/*`) and `shifts.csv` stay those of the whole suite;
    cells already scored for these weights are read back from the score cache.
    """
    client, cfg, model = load_logged_model(run_id, tracking_uri)
    if shifts and any(a.path == schema.SHIFTS_ARTIFACT for a in client.list_artifacts(run_id)):
        shifts = list(dict.fromkeys([*cfg.evaluate.shifts, *shifts]))
    if probes and hasattr(model, "members"):
        raise HarnessError(f"run {run_id} is an ensemble: it has no single weight vector to "
                           "probe (probe its member runs)")
    if probes and hasattr(model, "chunk_logits"):
        raise HarnessError(f"run {run_id} is a prompt-only prior: it has no weights to probe")
    splits = load_splits(cfg.data, ("train", "test"))
    metrics = evaluate_extras(cfg, model, splits, client, run_id, progress, shifts=shifts or [],
                              probes=probes, reuse_scores=reuse_scores)
    history = client.get_metric_history(run_id, schema.TRAIN_LOSS)
    log_metrics(client, run_id, metrics, step=max((m.step for m in history), default=0))
    return metrics


def parse_data_spec(spec: str) -> tuple[str, str]:
    """``SOURCE:PATH`` (``folder:/data/cells``, ``builtin:nuclei``, ``coco:/data/ann.json``)
    → (source, path)."""
    source, sep, path = spec.partition(":")
    if not sep or not path:
        raise HarnessError(f"--data {spec!r}: expected SOURCE:PATH, e.g. folder:/data/cells or "
                           "builtin:nuclei")
    return source, path


def evaluate_pretrained(preset: str, data: str, checkpoint: str | None = None,
                        shifts: list[str] | None = None, tracking_uri: str | None = None,
                        progress: bool = True, image_size: int | None = None,
                        ) -> tuple[str, dict[str, float]]:
    """Score pretrained weights, untrained, on every image of dataset `data` (``SOURCE:PATH``)
    and under `shifts`; recorded as a ``zero-shot`` run in experiment ``zero-shot``.
    Returns (run id, metrics)."""
    source, path = parse_data_spec(data)
    cfg = study_from_dict({
        "name": "zero-shot", "model": {"preset": preset, "checkpoint": checkpoint,
                                       "trainable": "decoder"},
        "data": {"source": source, "path": path, "split": [0.0, 0.0, 1.0],
                 "image_size": image_size or get_spec(preset).image_size},
        "methods": {"adamw": {}}, "evaluate": {"shifts": shifts or [], "domains": []},
    }, source=f"harness eval --pretrained {preset} --data {data}")
    if not cfg.model.pretrained:
        raise HarnessError(f"--pretrained {preset}: this preset has no weights of its own; "
                           "give --checkpoint")
    cfg.evaluate.splits = ["test"]  # zero-shot: every image is a test image
    splits = {"test": load_split(cfg.data, "test")}
    splits["train"] = splits["test"]  # sizes the point-disc prior, never trained on
    client = tracking_client(tracking_uri)
    ids: list[str] = []
    metrics = record_reference(
        cfg, schema.ROLE_ZERO_SHOT, f"zero-shot:{preset}",
        lambda: build_model(preset, checkpoint, "decoder"), splits, client,
        get_experiment_id(client, "zero-shot"), None, progress, on_run_created=ids.append)
    return ids[0], metrics
