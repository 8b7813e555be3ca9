"""Reading MLflow through one explicit client: a pandas run table and artifact files.

The report is built inside other processes (the CLI, tests, notebooks). MLflow's fluent API
reads a process-wide tracking URI, and setting it here would redirect whatever that process
logs next, so every read goes through the caller's `MlflowClient`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from harness.tracking.mlflow_log import quiet_artifacts
from harness.tracking.schema import metric_column, tag_column

T = TypeVar("T")
PAGE = 1000


def _all_runs(client: MlflowClient, experiment_ids: list[str]) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=PAGE, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _columns(runs: list, column: Callable[[str], str], values: Callable,
             missing) -> dict[str, list]:
    keys = dict.fromkeys(k for run in runs for k in values(run))
    return {column(k): [values(run).get(k, missing) for run in runs] for k in keys}


def runs_frame(client: MlflowClient, experiment_ids: list[str]) -> pd.DataFrame:
    """Every active run of the experiments, with the columns of
    ``mlflow.search_runs(output_format="pandas")``: run info (times as UTC timestamps), then
    ``metrics.*`` (NaN when absent), ``params.*`` and ``tags.*`` (None when absent)."""
    runs = _all_runs(client, experiment_ids)
    info = [run.info for run in runs]
    data = {
        "run_id": [i.run_id for i in info],
        "experiment_id": [i.experiment_id for i in info],
        "status": [i.status for i in info],
        "artifact_uri": [i.artifact_uri for i in info],
        "start_time": pd.to_datetime([i.start_time for i in info], unit="ms", utc=True),
        "end_time": pd.to_datetime([i.end_time for i in info], unit="ms", utc=True),
    }
    data |= _columns(runs, metric_column, lambda r: r.data.metrics, np.nan)
    data |= _columns(runs, lambda k: f"params.{k}", lambda r: r.data.params, None)
    data |= _columns(runs, tag_column, lambda r: r.data.tags, None)
    return pd.DataFrame(data)


def read_artifact(client: MlflowClient, run_id: str, path: str,
                  read: Callable[[Path], T]) -> T | None:
    """`read` applied to artifact `path` of `run_id`, or None when the run has no such file."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with quiet_artifacts():
                local = client.download_artifacts(run_id, path, tmp)
        except (mlflow.exceptions.MlflowException, OSError):
            return None
        return read(Path(local))
