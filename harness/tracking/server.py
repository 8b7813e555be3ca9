"""`harness server`: one MLflow tracking server that workers on several hosts log to.

Workers on other hosts cannot share a store's artifact folder (each would write to its own
disk), so the server proxies artifacts (``--serve-artifacts``): workers upload them over HTTP
into ``--artifacts-destination``. Its backend store is a database: SQLite under
$HARNESS_HOME by default, or PostgreSQL.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError
from harness.home import harness_home
from harness.subprocess_group import run_group
from harness.tracking.store import (database_url, default_tracking_uri, is_database, masked,
                                    tracking_client)

WILDCARDS = ("0.0.0.0", "::", "")


def advertised_host(host: str) -> str:
    """The name workers reach `host` by: this machine's name when bound to every interface."""
    return socket.getfqdn() if host in WILDCARDS else host


def server_url(host: str, port: int) -> str:
    name = advertised_host(host)
    return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"


def artifacts_location(destination: str | None) -> str:
    """`destination` as a URI MLflow takes (a local folder is made absolute and created);
    default $HARNESS_HOME/mlartifacts."""
    if destination is not None and "://" in destination:
        return destination  # s3://, gs://, file://, …: MLflow's to resolve
    folder = Path(destination).expanduser() if destination else harness_home() / "mlartifacts"
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


def server_command(store: str, artifacts: str, host: str, port: int,
                   workers: int | None = None) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
               "--serve-artifacts", "--artifacts-destination", artifacts,
               "--host", host, "--port", str(port)]
    if workers is not None:
        command += ["--workers", str(workers)]
    if host in WILDCARDS:
        # MLflow refuses Host headers other than localhost and private IPs: let workers use
        # the name printed for them
        from mlflow.server.security_utils import get_default_allowed_hosts

        name = advertised_host(host)
        command += ["--allowed-hosts",
                    ",".join([*get_default_allowed_hosts(), name, f"{name}:*"])]
    return command


def serve(backend_store_uri: str | None = None, artifacts_destination: str | None = None,
          host: str = "127.0.0.1", port: int = 5000, workers: int | None = None,
          echo: Callable[[str], None] = print) -> int:
    """Run the server until SIGTERM / SIGINT; its exit code (143 / 130 when stopped so)."""
    store = database_url(backend_store_uri or default_tracking_uri())
    if not is_database(store):
        raise HarnessError(f"--backend-store-uri must be a database URL (sqlite:///…, "
                           f"postgresql://…): {masked(store)}")
    tracking_client(store)  # a server that cannot be reached is one line; migrations run once
    artifacts = artifacts_location(artifacts_destination)
    url = server_url(host, port)
    echo(f"MLflow tracking server: runs in {masked(store)}, artifacts in {artifacts}")
    probe = "127.0.0.1" if host in WILDCARDS else host
    return run_group(server_command(store, artifacts, host, port, workers),
                     on_ready=lambda: echo(f"ready: workers use --tracking-uri {url}"),
                     address=(probe, port))
