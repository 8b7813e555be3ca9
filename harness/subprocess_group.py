"""Run a child server (`mlflow ui`, `mlflow server`, optuna-dashboard) and end all of it.

A server is a tree of processes: `mlflow ui` starts uvicorn, its workers and MLflow's job
consumers. Ending only the direct child leaves the rest running and the port answering. So
the child gets a session, hence a process group, of its own, and whatever ends us — SIGTERM,
SIGINT, the child's own exit, an exception — ends the whole group: SIGTERM, then SIGKILL for
whatever is still there after a grace period. (SIGKILL to us cannot be caught: then the group
is left running.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from harness import interrupt

GRACE_S = 5.0  # between SIGTERM and SIGKILL: servers close their stores in well under that
READY_TIMEOUT_S = 300.0  # a server's first start on a busy 2-core machine can take a minute
WILDCARDS = ("0.0.0.0", "::", "")  # bind addresses meaning "every interface"


def run_group(command: Sequence[str], on_ready: Callable[[], None] | None = None, *,
              address: tuple[str, int] | None = None, env: Mapping[str, str] | None = None,
              grace_s: float = GRACE_S) -> int:
    """Run `command` in a new process group until it exits or we get SIGTERM / SIGINT,
    then end the group. `on_ready()` is called once `address` (host, port) accepts
    connections. Returns the child's exit code, or 128 + the signal that stopped it or us
    (the shell's convention: 143 for SIGTERM, 130 for SIGINT)."""
    previous = {signum: signal.getsignal(signum) for signum in interrupt.SIGNALS}
    interrupt.install()  # SIGTERM raises like Ctrl+C, so `finally` below runs for both
    try:
        child = subprocess.Popen(list(command), start_new_session=True,
                                 env=None if env is None else dict(env))
        try:
            if on_ready is not None and address is not None and wait_for_port(
                    *address, alive=lambda: child.poll() is None):
                on_ready()
            return _shell_code(child.wait())
        except KeyboardInterrupt:
            return interrupt.exit_code()
        finally:
            end_group(child, grace_s)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def end_group(child: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """SIGTERM to `child`'s whole process group, SIGKILL to what is left after `grace_s`;
    returns once no process of the group is left (or `grace_s` after the SIGKILL)."""
    group = child.pid  # a session leader's pid is its process group's id
    _signal_group(group, signal.SIGTERM)
    if _wait_group(child, grace_s):
        return
    _signal_group(group, signal.SIGKILL)
    _wait_group(child, grace_s)  # killed orphans linger until init has reaped them


def _wait_group(child: subprocess.Popen, timeout_s: float) -> bool:
    """Whether `child`'s group is empty within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        child.poll()  # reap our own child, or it stays in the group as a zombie
        if not group_alive(child.pid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def group_alive(group: int) -> bool:
    """Whether a live (not zombie) process of process group `group` is left. A killed
    orphan stays a zombie until init reaps it, which some container inits do only now and
    then; a zombie holds no port and no file."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():  # no procfs: zombies count too
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    return bool(group_members(group))


def group_members(group: int) -> list[int]:
    """Pids of the live (not zombie) processes of process group `group` (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # it ended while we looked
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def wait_for_port(host: str, port: int, alive: Callable[[], bool] = lambda: True,
                  timeout_s: float = READY_TIMEOUT_S) -> bool:
    """Whether `host:port` accepts a connection within `timeout_s`, polling while
    `alive()`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        if port_open(host, port):
            return True
        time.sleep(0.25)
    return False


def connect_host(host: str) -> str:
    """Where this machine reaches a server bound to `host`: loopback for a wildcard."""
    return "127.0.0.1" if host in WILDCARDS else host


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass


def _shell_code(returncode: int) -> int:
    """Popen's -N (killed by signal N) as the shell's 128 + N."""
    return 128 - returncode if returncode < 0 else returncode
