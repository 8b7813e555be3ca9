"""Ctrl+C that cannot get lost.

Python raises KeyboardInterrupt wherever the main thread happens to be. When that is inside a
``__del__`` or a weakref callback (SQLAlchemy runs some during MLflow writes), the exception
is printed as "Exception ignored" and the program carries on as if nothing happened: a study
would run to the end. :func:`install` keeps the usual behaviour and also remembers the
request; long loops call :func:`check` at safe points, which raises it again.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_requested = threading.Event()
_signal: list[int] = []  # the signal that asked to stop
_deferring: list[bool] = []  # inside deferred(): remember, do not raise

# SIGTERM is how `timeout`, a container stop or a batch scheduler asks a job to end: it must
# close its records exactly as Ctrl+C does, not die with trials, runs and the study RUNNING.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _handler(signum, frame) -> None:
    request(signum)
    if not _deferring:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block a signal is remembered but not raised: for a step that must not be
    cut in half, such as creating a record whose id the caller needs in order to close it.
    Call :func:`check` after the block, where the record can be closed."""
    _deferring.append(True)
    try:
        yield
    finally:
        _deferring.pop()


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Let the block finish, then raise an interrupt that arrived inside it. For a write that
    a library cannot survive being cut: MLflow's artifact upload closes its file descriptor a
    second time when KeyboardInterrupt lands between ``os.fdopen`` and the next line, and the
    OSError that follows replaces the interrupt (a Ctrl+C became a crash with exit code 1)."""
    before = _requested.is_set()
    with deferred():
        yield
    if not before and _requested.is_set() and not _deferring:
        raise KeyboardInterrupt


def request(signum: int) -> None:
    """Remember that `signum` asked us to stop, without raising (a parent that forwards the
    signal to its workers, and waits for them to close their records, uses this)."""
    _requested.set()
    _signal[:] = [signum]


def requested() -> bool:
    return _requested.is_set()


def install() -> None:
    """Use the remembering handler for SIGINT and SIGTERM (main thread only, as signals
    require)."""
    _requested.clear()
    _signal.clear()
    for signum in SIGNALS:
        signal.signal(signum, _handler)


def exit_code() -> int:
    """The shell's code for the signal that stopped us (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + (_signal[0] if _signal else signal.SIGINT)


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived (and was perhaps swallowed) since
    :func:`install`."""
    if _requested.is_set():
        raise KeyboardInterrupt
