"""Ctrl+C that cannot get lost.

Python raises KeyboardInterrupt wherever the main thread happens to be. When that is inside a
``__del__`` or a weakref callback (SQLAlchemy runs some during MLflow writes), the exception
is printed as "Exception ignored" and the program carries on as if nothing happened: a study
would run to the end. :func:`install` keeps the usual behaviour and also remembers the
request; long loops call :func:`check` at safe points, which raises it again.
"""

from __future__ import annotations

import signal
import threading

_requested = threading.Event()


def _handler(signum, frame) -> None:
    _requested.set()
    raise KeyboardInterrupt


def install() -> None:
    """Use the remembering handler for SIGINT (main thread only, as signals require)."""
    _requested.clear()
    signal.signal(signal.SIGINT, _handler)


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived (and was perhaps swallowed) since
    :func:`install`."""
    if _requested.is_set():
        raise KeyboardInterrupt
