"""Where a run writes by default: ``$HARNESS_HOME`` (default ``./runs``) and its cache."""

from __future__ import annotations

import os
from pathlib import Path


def harness_home() -> Path:
    return Path(os.environ.get("HARNESS_HOME", "runs")).resolve()


def cache_dir() -> Path:
    """Generated datasets, corrupted sets, per-model cell scores: safe to delete."""
    return harness_home() / "cache"
