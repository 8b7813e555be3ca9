"""A throwaway PostgreSQL server for tests: Debian's `postgresql` binaries on a data folder in
a temporary directory, listening on 127.0.0.1 on a free port, trust authentication.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user
(which the package creates) on a folder that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from conftest import free_port

SUPERUSER = "postgres"


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder with initdb and pg_ctl; None if none."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
             if (Path(p).parent / "pg_ctl").exists()]
    return max(found, key=lambda p: int(p.parent.name), default=None)


def missing() -> str | None:
    """Why no server can be started here, or None."""
    if binaries() is None:
        return ("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                "apt-get install postgresql (.ci/run does where apt-get exists)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return f"running as root and there is no {SUPERUSER!r} user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing (PostgreSQL refuses to run as root)"
    return None


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", SUPERUSER, "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yields its URL without a database (``postgresql://postgres@127.0.0.1:
    PORT``), and stops it and deletes its files on exit."""
    bin_dir = binaries()
    # not pytest's tmp_path: its parents are private to root, and the server runs as postgres
    root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SUPERUSER)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data, log = root / "data", root / "server.log"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        port = _start(bin_dir, root, data, log)
        try:
            yield f"postgresql://{SUPERUSER}@127.0.0.1:{port}"
        finally:
            subprocess.run(_as_owner([*pg_ctl, "-m", "immediate", "-w", "stop"]),
                           capture_output=True, cwd=root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _start(bin_dir: Path, root: Path, data: Path, log: Path) -> int:
    """initdb and start a server on `data`; its port."""
    port = free_port()
    # durability off: a test database is thrown away, and fsyncs would dominate its time
    options = (f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off")
    commands = [[str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", SUPERUSER,
                 "--no-sync", "-E", "UTF8"],
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                 "-w", "-t", "60", "start"]]
    for command in commands:
        done = subprocess.run(_as_owner(command), capture_output=True, text=True, cwd=root)
        if done.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{command[0]} failed:\n{done.stdout}{done.stderr}{server_log}")
    return port


def create_database(server_url: str, name: str) -> str:
    """Create database `name` on the server; its URL."""
    import psycopg

    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{server_url}/{name}"
