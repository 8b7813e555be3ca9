"""Start a `harness` server command (ui, dashboard) as a real process for a test, and stop it
the way a user or a scheduler does: SIGTERM to `harness` alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.subprocess_group import group_alive, group_members, port_open

START_TIMEOUT_S = 300  # MLflow's first start on a busy 2-core machine


@dataclass
class Served:
    process: subprocess.Popen  # `harness …`
    group: int  # the process group of the server it started
    log: Path  # its stdout and stderr

    def output(self) -> str:
        return self.log.read_text()


def start(args: list[str], home: Path, port: int, log: Path) -> Served:
    """`harness ARGS` with HARNESS_HOME=`home`, once it says "ready:" (and `port` answers)."""
    env = {**os.environ, "HARNESS_HOME": str(home), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while "ready:" not in log.read_text():
        assert process.poll() is None, f"harness {' '.join(args)} ended:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"not ready in {START_TIMEOUT_S} s:\n{log.read_text()}"
        time.sleep(0.5)
    assert port_open("127.0.0.1", port)
    return Served(process, _child_group(process.pid), log)


def stop(served: Served) -> int:
    """SIGTERM to `harness` (not to its server): its exit code."""
    served.process.send_signal(signal.SIGTERM)
    return served.process.wait(timeout=60)


def kill_leftovers(served: Served) -> None:
    """After a failed test: nothing of it may outlive the test."""
    if served.process.poll() is None:
        served.process.kill()
        served.process.wait()
    if group_alive(served.group):
        os.killpg(served.group, signal.SIGKILL)


def _child_group(pid: int) -> int:
    """The process group of `pid`'s child (a server in a session of its own)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            group = int(fields[2])
            assert group != os.getpgid(pid), "the server shares harness's process group"
            assert group_members(group), "the server's group is empty"
            return group
    raise AssertionError(f"harness (pid {pid}) has no child process")
