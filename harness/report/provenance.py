"""Where a report came from: code version, package versions, machine, dates."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

PACKAGES = ("harness", "torch", "segment-anything", "mlflow", "optuna", "numpy", "scipy",
            "pandas", "matplotlib")


def git_commit(path: Path | None = None) -> str:
    """HEAD of the checkout holding the harness code (`+dirty` if it has local changes)."""
    cwd = path or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty.strip() else head


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict[str, str]:
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "processor": platform.machine(), "cpu count": str(os.cpu_count()),
            "host": platform.node()}


def time_text(value) -> str:
    """A run time as UTC text: a pandas/`datetime` timestamp (what `search_runs` returns) or
    MLflow's milliseconds since the epoch; '–' when absent."""
    if hasattr(value, "strftime") and value == value:  # NaT != NaT
        stamp = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return stamp.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    try:
        stamp = datetime.fromtimestamp(float(value) / 1000, timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return "–"
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)
