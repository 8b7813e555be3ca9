"""run_group with real process trees: whatever ends the wrapper ends the whole group."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import free_port
from harness.subprocess_group import group_alive, port_open, run_group, wait_for_port

# A server stand-in: listens on PORT, ignores SIGTERM (so only SIGKILL ends it), starts a
# grandchild that outlives it unless its group is ended, prints its group id, then serves.
SERVER = textwrap.dedent("""
    import os, signal, socket, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(os.getpgid(0), flush=True)
    if sys.argv[2] == "exit":
        sys.exit(3)
    server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    time.sleep(600)
""")

WRAPPER = textwrap.dedent("""
    import sys
    from harness.subprocess_group import run_group
    code = run_group([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]],
                     on_ready=lambda: print("ready", flush=True),
                     address=("127.0.0.1", int(sys.argv[2])), grace_s=1.0)
    sys.exit(code)
""")


def _wrapper(port: int, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRAPPER, SERVER, str(port), mode],
                            stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_the_wrapper_ends_the_whole_group(signum, code):
    port = free_port()
    wrapper = _wrapper(port, "serve")
    group = int(wrapper.stdout.readline())
    assert group != os.getpgid(wrapper.pid)  # the server has a group of its own
    assert wrapper.stdout.readline().strip() == "ready" and port_open("127.0.0.1", port)
    wrapper.send_signal(signum)
    assert wrapper.wait(timeout=30) == code
    assert not group_alive(group)  # the SIGTERM-proof server and its grandchild included
    assert not port_open("127.0.0.1", port)


def test_a_child_that_exits_takes_its_group_along_and_gives_its_code():
    wrapper = _wrapper(free_port(), "exit")
    group = int(wrapper.stdout.readline())
    assert wrapper.wait(timeout=30) == 3
    assert "ready" not in wrapper.stdout.read()  # it never listened
    assert not group_alive(group)


def test_run_group_returns_the_exit_code_and_restores_signal_handlers():
    before = signal.getsignal(signal.SIGTERM)
    assert run_group([sys.executable, "-c", "raise SystemExit(7)"]) == 7
    assert signal.getsignal(signal.SIGTERM) is before


def test_wait_for_port_gives_up_when_the_server_is_gone():
    assert not wait_for_port("127.0.0.1", free_port(), alive=lambda: False)
