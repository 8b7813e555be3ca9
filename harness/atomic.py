"""Write a file so that no reader, and no crash, ever leaves half of it behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """``with atomic_write(p) as f: f.write(...)``: the bytes appear at `p` all at once.

    They go to a temporary file beside `p` (same filesystem, so the final ``os.replace`` is
    atomic on POSIX) that is removed if the block raises. Parallel writers of the same path
    just replace each other's complete files. Readable by everyone, as a shared cache must be
    (``mkstemp`` alone makes it private).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
