"""`harness dashboard`: optuna-dashboard on the Optuna storage the studies use.

The dashboard runs in a child process, `python -m harness.tracking.dashboard URL HOST PORT`,
so `harness dashboard` ends it as `harness ui` ends MLflow's (its own process group, SIGTERM
then SIGKILL). The child opens the storage with :func:`optuna_storage`, as the studies do:
optuna-dashboard's own URL parser knows no ``journal://`` files and reads ``postgresql://``
with a driver the harness does not install, while `run_server` takes a storage object.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from harness.subprocess_group import connect_host, run_group
from harness.tracking.store import default_storage_url, optuna_storage
from harness.tracking.studies import require_store


def dashboard_command(storage_url: str, host: str, port: int) -> list[str]:
    """The child's command line: this module, run as a script (see :func:`main`)."""
    return [sys.executable, "-m", __spec__.name, storage_url, host, str(port)]


def serve_dashboard(storage_url: str | None = None, host: str = "127.0.0.1", port: int = 8080,
                    echo: Callable[[str], None] = print) -> int:
    """Run optuna-dashboard until SIGTERM / SIGINT; its exit code (143 / 130 when stopped
    so). A missing storage file is a one-line error: the dashboard would create an empty
    one."""
    url = storage_url or default_storage_url()
    require_store(url, "Optuna storage")
    address = f"http://{connect_host(host)}:{port}/dashboard"
    echo(f"optuna-dashboard for {url} at {address}")
    return run_group(dashboard_command(url, host, port),
                     on_ready=lambda: echo(f"ready: {address}"),
                     address=(connect_host(host), port))


def main(argv: list[str] | None = None) -> None:
    """The child: serve `URL` on `HOST` `PORT` (blocks)."""
    import optuna_dashboard

    url, host, port = argv if argv is not None else sys.argv[1:]
    optuna_dashboard.run_server(optuna_storage(url), host=host, port=int(port))


if __name__ == "__main__":
    main()
