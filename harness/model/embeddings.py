"""Image embeddings of a frozen encoder, computed once and kept on disk.

When only the prompt encoder and mask decoder train (``model.trainable: decoder``), the image
encoder — nearly all of a segmenter's compute — gives the same embedding for an image in every
epoch, every trial and every evaluation. :class:`EmbeddingStore` keeps them per
(encoder digest, dataset fingerprint) as float16 arrays under ``$HARNESS_HOME/cache/
embeddings/``, so a decoder-only fine-tune pays for the encoder once per image, and the shift
suite's corrupted cells (each a dataset with its own fingerprint) are encoded once per encoder
whatever decoder is scored on them.

The digest covers the encoder's weights and everything that turns pixels into its input
(normalisation buffers, input size, encoder class): a changed encoder misses instead of reusing.
Embeddings are rounded to float16 *before* first use as well as on disk, so a computed and a
read-back embedding are the same numbers and results do not depend on the cache's state.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from harness.atomic import atomic_write
from harness.data.dataset import SegDataset
from harness.home import cache_dir
from harness.model.decoder import encode_images

STORE_DTYPE = np.float16
EMBEDDINGS_VERSION = 1


def encoder_frozen(model: torch.nn.Module) -> bool:
    """Whether `model` is a segmenter whose image encoder cannot change during training."""
    encoder = getattr(model, "image_encoder", None)
    return encoder is not None and not any(p.requires_grad for p in encoder.parameters())


def encoder_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha1(f"{type(model.image_encoder).__qualname__}|{EMBEDDINGS_VERSION}|"
                     f"{model.image_encoder.img_size}".encode())
    tensors = dict(model.image_encoder.state_dict())
    tensors.update({f"_model.{k}": v for k, v in model.named_buffers(recurse=False)})
    for key in sorted(tensors):
        value = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}:{tuple(value.shape)}:{value.dtype}".encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    preprocessing = getattr(model, "preprocessing", None)  # a preset's own pixel transform
    h.update(repr(preprocessing).encode())
    return h.hexdigest()[:20]


class EmbeddingStore:
    """Float16 embeddings of whole datasets for frozen encoders, under `root`."""

    def __init__(self, root: str | Path, batch_size: int = 32):
        self.root = Path(root)
        self.batch_size = batch_size
        self.hits = self.misses = 0

    def path(self, model: torch.nn.Module, dataset: SegDataset) -> Path:
        return self.root / encoder_digest(model) / f"{dataset.fingerprint}.npy"

    def get(self, model: torch.nn.Module, dataset: SegDataset) -> np.ndarray:
        """(N, C, h, w) float16 embeddings of every image of `dataset`, read-only."""
        path = self.path(model, dataset)
        try:
            array = np.load(path, mmap_mode="r")
            if array.shape[0] == len(dataset.images):
                self.hits += 1
                return array
        except (OSError, ValueError):
            pass  # missing or unreadable: compute it again
        self.misses += 1
        array = self._compute(model, dataset)
        with atomic_write(path) as f:
            np.save(f, array)
        return array

    @torch.no_grad()
    def _compute(self, model: torch.nn.Module, dataset: SegDataset) -> np.ndarray:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        chunks = []
        try:
            for start in range(0, len(dataset.images), self.batch_size):
                images = torch.from_numpy(dataset.images[start:start + self.batch_size])
                images = images.permute(0, 3, 1, 2).float().to(device)
                chunks.append(encode_images(model, images).cpu().numpy().astype(STORE_DTYPE))
        finally:
            model.train(was_training)
        return np.concatenate(chunks)


def as_tensor(embeddings: np.ndarray, rows, device: torch.device) -> torch.Tensor:
    """Rows of a stored embedding array as a float32 tensor on `device`."""
    return torch.from_numpy(np.asarray(embeddings[rows], dtype=np.float32)).to(device)


def stored_embeddings(model: torch.nn.Module, dataset: SegDataset) -> np.ndarray | None:
    """The dataset's embeddings from the default store when `model`'s encoder is frozen, else
    None (a trainable encoder's embeddings would never be asked for twice). An ensemble
    whose members all share one frozen encoder (decoder-only fine-tunes of one pretrained
    model) gets that encoder's: K members, one encoding."""
    members = getattr(model, "members", None)
    if members is not None:
        if not all(encoder_frozen(m) for m in members) or len(
                {encoder_digest(m) for m in members}) != 1:
            return None
        model = members[0]
    if not encoder_frozen(model):
        return None
    return EmbeddingStore(cache_dir() / "embeddings").get(model, dataset)
