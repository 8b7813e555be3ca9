"""Thin helpers over `MlflowClient` with explicit run ids (no fluent active-run state)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Iterable

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from harness import interrupt

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
MAX_PARAMS_PER_BATCH = 100


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
             for k, v in flatten(params).items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float],
                step: int = 0) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    for i in range(0, len(items), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[i:i + MAX_METRICS_PER_BATCH])


class MetricBuffer:
    """Collects per-step metrics and writes them in batches (one DB round trip per flush)."""

    def __init__(self, client: MlflowClient, run_id: str, flush_every: int = 500):
        self.client, self.run_id, self.flush_every = client, run_id, flush_every
        self._items: list[Metric] = []

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self._items.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if len(self._items) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        items, self._items = self._items, []
        for i in range(0, len(items), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + MAX_METRICS_PER_BATCH])


def log_file(client: MlflowClient, run_id: str, write: callable, filename: str,
             artifact_path: str | None = None) -> None:
    """Write an artifact through `write(path)` into a temp dir, then upload it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        write(path)
        with interrupt.shielded():
            client.log_artifact(run_id, str(path), artifact_path)


def log_text(client: MlflowClient, run_id: str, text: str, artifact_file: str) -> None:
    """`client.log_text` that an interrupt cannot cut in half (see `interrupt.shielded`)."""
    with interrupt.shielded():
        client.log_text(run_id, text, artifact_file)


@contextlib.contextmanager
def quiet_artifacts() -> Iterator[None]:
    """No MLflow download progress bars inside the block: harness downloads small files."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def runs_with_tags(client: MlflowClient, experiment_ids: Iterable[str],
                   tags: dict[str, str]) -> list:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return client.search_runs(list(experiment_ids), filter_string=query, max_results=10_000)


def replace_artifacts(client: MlflowClient, run_id: str, files: dict[str, Path],
                      artifact_path: str) -> None:
    """Make folder `artifact_path` of the run hold exactly `files` ({name under it: local
    file}): whatever an earlier upload left there is deleted first, so nothing stale stays
    next to the new files."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    if client.list_artifacts(run_id, artifact_path):
        repository = get_artifact_repository(client.get_run(run_id).info.artifact_uri,
                                             tracking_uri=client.tracking_uri)
        repository.delete_artifacts(artifact_path)
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in files.items():
            target = Path(tmp) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        with interrupt.shielded():
            client.log_artifacts(run_id, tmp, artifact_path)
