"""What the tidy run table does not hold: metric histories, CSV artifacts, Optuna trials.

Each loader returns an empty frame when the thing was never recorded (a run without probes, a
study whose Optuna storage is elsewhere), so a section can say so instead of failing.
"""

from __future__ import annotations

import warnings

import optuna
import pandas as pd

from harness.report.collect import StudyData
from harness.report.mlflow_read import read_artifact
from harness.tracking import schema
from harness.tracking.schema import PHASES, optuna_study_name
from harness.tracking.store import local_file, optuna_storage

TRIAL_COLUMNS = ("method", "phase", "number", "state", "value", "seed", "params", "hparams",
                 "run_id", "fail_reason", "start", "complete")


def histories(data: StudyData, runs: pd.DataFrame, key: str) -> pd.DataFrame:
    """Long table (method, seed, run_id, step, value) of metric `key` for every run in `runs`."""
    rows = []
    for run in runs.itertuples():
        for m in data.client.get_metric_history(run.run_id, key):
            rows.append((run.method, run.seed, run.run_id, m.step, m.value))
    return pd.DataFrame(rows, columns=["method", "seed", "run_id", "step", "value"])


def artifact_csv(data: StudyData, run_id: str, path: str) -> pd.DataFrame | None:
    """Artifact `path` of `run_id` read as CSV, or None when the run has no such file."""
    return read_artifact(data.client, run_id, path, pd.read_csv)


def artifact_tables(data: StudyData, runs: pd.DataFrame, path: str) -> pd.DataFrame:
    """Artifact CSV `path` of every run in `runs`, stacked, with method / seed / run_id added."""
    frames = []
    for run in runs.itertuples():
        table = artifact_csv(data, run.run_id, path)
        if table is not None:
            frames.append(table.assign(method=run.method, seed=run.seed, run_id=run.run_id))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _storage(url: str):
    path = local_file(url)
    if path is not None and not path.is_file():
        return None  # reading must not create an empty database
    return optuna_storage(url)


def optuna_trials(data: StudyData) -> pd.DataFrame:
    """One row per Optuna trial of the study's tune and final studies (all methods)."""
    storage = _storage(data.storage_url)
    rows = []
    if storage is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
            for method in dict.fromkeys(data.runs["method"].tolist() + data.methods):
                for phase in PHASES:
                    name = optuna_study_name(data.key, phase, method)
                    if name in names:
                        rows += _trial_rows(optuna.load_study(study_name=name, storage=storage),
                                            method, phase)
    return pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))


def _trial_rows(study: optuna.Study, method: str, phase: str) -> list[tuple]:
    return [(method, phase, t.number, t.state.name, t.value, t.user_attrs.get(schema.ATTR_SEED),
             dict(t.params), t.user_attrs.get(schema.ATTR_HPARAMS) or {},
             t.user_attrs.get(schema.ATTR_RUN_ID), t.user_attrs.get(schema.ATTR_FAIL_REASON, ""),
             t.datetime_start, t.datetime_complete)
            for t in study.get_trials(deepcopy=False)]


def optuna_user_attrs(data: StudyData, phase: str, method: str) -> dict:
    storage = _storage(data.storage_url)
    if storage is None:
        return {}
    try:
        study = optuna.load_study(study_name=optuna_study_name(data.key, phase, method),
                                  storage=storage)
    except KeyError:
        return {}
    return dict(study.user_attrs)
