"""Where things are stored: `HARNESS_HOME` (default ./runs) and the URLs derived from it.

Storage and tracking locations are URLs so the same code serves one laptop (SQLite), several
workers on one host (an Optuna journal file) and several hosts (PostgreSQL). Every MLflow call
goes through an explicit client for its URI: nothing here sets process-wide tracking state.
"""

from __future__ import annotations

import contextlib
import fcntl
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
from mlflow.tracking import MlflowClient
from optuna.storages.journal import JournalFileBackend, JournalStorage

from harness.errors import HarnessError
from harness.home import harness_home

# Liveness of workers on a shared storage: each stamps its running trial every HEARTBEAT_S; a
# RUNNING trial silent for GRACE_S belongs to a dead worker and is run again. Defaults of the
# study YAML's tuning.heartbeat_seconds / tuning.grace_seconds.
HEARTBEAT_S = 30
GRACE_S = 120
# SQLAlchemy reads postgresql:// as psycopg2, which is not a dependency: psycopg 3 is.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
POSTGRES_DRIVER = "postgresql+psycopg://"
_LOCK_KEY = zlib.crc32(b"harness store lock")  # the key of exclusive()'s PostgreSQL advisory lock


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


def database_url(url: str) -> str:
    """`url` as SQLAlchemy should read it: ``postgresql://`` and ``postgres://`` use psycopg 3
    (the installed driver); an explicit ``postgresql+driver://`` and other URLs are kept."""
    for scheme in POSTGRES_SCHEMES:
        if url.startswith(scheme):
            return POSTGRES_DRIVER + url[len(scheme):]
    return url


def masked(url: str) -> str:
    """`url` with its password hidden, for messages."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


@contextlib.contextmanager
def exclusive(url: str) -> Iterator[None]:
    """A lock among all workers of the store at `url` (a SQLAlchemy URL or a journal file):
    a file lock next to a local file, an advisory lock on a PostgreSQL server, none on other
    servers. Held while a store is opened, which creates or migrates its schema, and while
    work is queued: workers started together would race both. A server that cannot be
    reached is a one-line HarnessError (the libraries would retry for minutes, then print a
    traceback)."""
    path = local_file(url)
    if path is not None:
        # not `<journal>.lock`: Optuna's journal file backend locks with that name
        with open(path.with_name(path.name + ".harness-lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        return
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        connection = engine.connect()
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as exc:
        raise HarnessError(f"no database driver for {masked(url)} ({exc}): use "
                           "postgresql://… (psycopg 3) or install that driver") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise HarnessError(
            f"cannot reach the database at {masked(url)} ({reason}): start the server, or fix "
            "the URL's host, port, user, password or database (which must exist)") from None
    with connection:  # closing the session releases its advisory lock
        if connection.dialect.name == "postgresql":
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"),
                               {"key": _LOCK_KEY})
        yield


def require_server_up(uri: str) -> None:
    """Raise a one-line HarnessError unless the MLflow server at `uri` answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10):
            pass
    except urllib.error.HTTPError:
        pass  # it answered (behind a proxy or an auth layer /health may be refused)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HarnessError(f"cannot reach the MLflow server at {masked(uri)} ({reason}): "
                           "start it (harness server) or fix --tracking-uri") from None


def is_database(uri: str) -> bool:
    """Whether MLflow reads tracking URI `uri` as a SQLAlchemy database (not a server)."""
    return "://" in uri and not uri.startswith(("http://", "https://", "file:"))


def _ensure_parent(url: str) -> None:
    path = local_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def optuna_storage(url: str | None = None, heartbeat_s: int = HEARTBEAT_S,
                   grace_s: int = GRACE_S) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`: `sqlite:///…`/`postgresql://…` (RDB, with heartbeats so a
    killed worker's trial is failed instead of left RUNNING), or `journal:///path/file.log`
    (a journal file, safe for several workers on one host). Workers beat every `heartbeat_s`;
    a trial silent for `grace_s` is a dead worker's."""
    url = url or default_storage_url()
    if "://" not in url:
        raise HarnessError(f"storage must be a URL (sqlite:///…, postgresql://…, journal:///…): {url}")
    _ensure_parent(url)
    if url.startswith("journal://"):
        return JournalFile(url, heartbeat_s, grace_s)
    url = database_url(url)
    with exclusive(url), warnings.catch_warnings():
        # heartbeats are "experimental" in Optuna 5 but are the documented zombie-trial fix
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_s,
                                          grace_period=grace_s)


class JournalFile(JournalStorage):
    """A journal file storage (`url` journal:///path) that carries its URL and liveness
    settings under the names RDBStorage uses (Optuna's own heartbeats exist on RDB storages
    only; harness.experiment.queue beats on journal files itself)."""

    def __init__(self, url: str, heartbeat_interval: int, grace_period: int) -> None:
        super().__init__(JournalFileBackend(str(local_file(url))))
        self.url = url
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period


def storage_lock(storage: optuna.storages.BaseStorage) -> contextlib.AbstractContextManager:
    """:func:`exclusive` for an Optuna storage from :func:`optuna_storage`; no lock for one
    made otherwise."""
    url = getattr(storage, "url", None)  # RDBStorage and JournalFile
    return exclusive(url) if url else contextlib.nullcontext()


def tracking_client(uri: str | None = None) -> MlflowClient:
    """A client for `uri`. A database store is created (schema and migrations) under a lock
    (see :func:`exclusive`), so workers started together do not race MLflow's migrations."""
    uri = database_url(uri or default_tracking_uri())
    _ensure_parent(uri)
    if uri.startswith(("http://", "https://")):
        require_server_up(uri)
    if not is_database(uri):
        return MlflowClient(tracking_uri=uri)
    with exclusive(uri):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # opens the store: creates / migrates it
    return client


def get_experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created with artifacts under HARNESS_HOME (or the
    tracking server's artifact root) if new."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        if client.tracking_uri.startswith(("http://", "https://")):
            # the server's artifact root: workers on other hosts upload through it
            return client.create_experiment(name)
        location = (harness_home() / "mlartifacts" / name).as_uri()
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # another worker created it between our lookup and create
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
