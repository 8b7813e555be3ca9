"""Where things are stored: `HARNESS_HOME` (default ./runs) and the URLs derived from it.

Storage and tracking locations are URLs so the same code serves one laptop (SQLite), several
workers on one host (an Optuna journal file) and several hosts (PostgreSQL). Every MLflow call
goes through an explicit client for its URI: nothing here sets process-wide tracking state.
"""

from __future__ import annotations

import fcntl
import warnings
from pathlib import Path

import mlflow
import optuna
from mlflow.tracking import MlflowClient

from harness.errors import HarnessError
from harness.home import harness_home


def default_tracking_uri() -> str:
    return f"sqlite:///{harness_home() / 'mlflow.db'}"


def default_storage_url() -> str:
    return f"sqlite:///{harness_home() / 'optuna.db'}"


def local_file(url: str) -> Path | None:
    """The file behind a ``sqlite:///…`` or ``journal://…`` URL; None for a server URL."""
    for scheme in ("sqlite:///", "journal://"):
        if url.startswith(scheme):
            return Path(url[len(scheme):])
    return None


def _ensure_parent(url: str) -> None:
    path = local_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def optuna_storage(url: str | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`: `sqlite:///…`/`postgresql://…` (RDB, with heartbeats so a
    killed worker's trial is failed instead of left RUNNING), or `journal:///path/file.log`
    (a journal file, safe for several workers on one host)."""
    url = url or default_storage_url()
    if "://" not in url:
        raise HarnessError(f"storage must be a URL (sqlite:///…, postgresql://…, journal:///…): {url}")
    _ensure_parent(url)
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(local_file(url))))
    with warnings.catch_warnings():
        # heartbeats are "experimental" in Optuna 5 but are the documented zombie-trial fix
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)


def tracking_client(uri: str | None = None) -> MlflowClient:
    """A client for `uri`. A local SQLite store is created (schema and migrations) under a
    file lock, so workers started together do not race MLflow's migrations on a new file."""
    uri = uri or default_tracking_uri()
    _ensure_parent(uri)
    path = local_file(uri)
    if path is None or not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # opens the store: creates / migrates it
    return client


def get_experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created with artifacts under HARNESS_HOME if new."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        location = (harness_home() / "mlartifacts" / name).as_uri()
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # another worker created it between our lookup and create
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
