"""Per-mask scores of one model on one evaluation cell, kept on disk so that evaluating the
same weights on the same cell again is a file read.

Why scores and not predictions: a cell's scores are a few numbers per mask, whatever the image
size, while its masks (vit_b, 1024 px) are hundreds of megabytes. Why a cache at all: the shift
suite is re-run on the same model whenever a suite is extended (`harness eval --shifts all`
after `common`), when an interrupted trial or study resumes, and by the benchmarks; only cells
never scored for these weights are computed.

A key is a hash of

- the model's weights (:func:`model_digest`: every tensor of its state dict, bytes and shape),
- the cell's identity (its data fingerprint plus how the cell was made, e.g. corruption,
  severity and corruption-code version), the prompts (kind, box jitter, seed), the evaluation
  batch size and the device type (floating point may differ between them),
- :data:`SCORES_VERSION`, bumped whenever prediction or metric code changes what it returns.

Files live under ``<cache>/scores/<model digest>/<key>.npz`` and are written atomically; an
unreadable file counts as a miss and is recomputed.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch

from harness.atomic import atomic_write

SCORES_VERSION = 1


def model_digest(model: torch.nn.Module) -> str:
    """A content hash of the model's weights and buffers (16 hex digits).

    The module's class and ``extra_repr()`` are part of it: an ensemble's aggregation rule
    changes its predictions without changing any tensor.
    """
    h = hashlib.sha1(f"{type(model).__name__}({model.extra_repr()})".encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        # bytes of any dtype (bf16 has no NumPy twin); reshape: 0-d tensors cannot be viewed
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class ScoreCache:
    """Cell scores of one model: ``get(identity)`` → {metric: per-mask array} or None."""

    def __init__(self, root: Path, model: torch.nn.Module):
        self.digest = model_digest(model)
        self.folder = Path(root) / "scores" / self.digest
        self.hits = 0
        self.misses = 0

    def _path(self, identity: str) -> Path:
        key = hashlib.sha1(f"{identity}|scores-v{SCORES_VERSION}".encode()).hexdigest()[:20]
        return self.folder / f"{key}.npz"

    def get(self, identity: str) -> dict[str, np.ndarray] | None:
        try:
            with np.load(self._path(identity)) as f:
                scores = {k: f[k] for k in f.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            self.misses += 1
            return None
        self.hits += 1
        return scores

    def put(self, identity: str, scores: dict[str, np.ndarray]) -> None:
        with atomic_write(self._path(identity)) as f:
            np.savez(f, **scores)


__all__ = ["SCORES_VERSION", "ScoreCache", "model_digest"]
