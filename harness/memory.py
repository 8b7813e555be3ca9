"""Keep freed CPU memory in the process instead of handing it back to the kernel.

glibc serves every allocation above 32 MiB with a fresh ``mmap`` and unmaps it on free, so a
training step that makes activations of hundreds of MiB (a Segment Anything decoder upscales
every prompt to 32 × 256 × 256) page-faults all of them in again on every step: measured on
2 cores, half of a LiteMedSAM decoder step was kernel time (``harness bench memory``). With
``mmap`` off and trimming deferred, freed blocks stay on the heap and the next step reuses
them; the resident size stays near the peak one step needs.

Applied by the ``harness`` command at start-up; ``HARNESS_MALLOC=system`` keeps glibc's
defaults. Elsewhere (not Linux/glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# glibc's defaults, to switch back (the bench alternates the two in one process)
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024
KEEP_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: trim only past 2 GiB free at the top


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def keep_freed_memory(keep: bool = True) -> bool:
    """Switch glibc to reusing freed memory (``keep``) or back to its defaults; False where
    there is no glibc ``mallopt`` to switch."""
    libc = _libc()
    if libc is None:
        return False
    mmap_max, trim = (0, KEEP_TRIM_THRESHOLD) if keep else (DEFAULT_MMAP_MAX,
                                                           DEFAULT_TRIM_THRESHOLD)
    return bool(libc.mallopt(M_MMAP_MAX, mmap_max)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim))


def apply_from_environment() -> bool:
    """What the ``harness`` command does at start-up (see the module note)."""
    if os.environ.get("HARNESS_MALLOC", "keep") == "system":
        return False
    return keep_freed_memory(True)
