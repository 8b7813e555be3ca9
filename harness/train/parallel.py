"""Data-parallel training across processes (``train.nproc``): each rank takes every
`world`-th image of the global batch and all ranks agree on one gradient.

Not DistributedDataParallel: the training loss calls the encoder, prompt encoder and decoder
separately (stored embeddings skip the encoder), so there is no single ``forward`` for DDP to
hook. Instead each rank weights its mean loss by its share of the batch's prompts, and one
all-reduce per backward pass sums the gradients (both passes of SAM / ASAM): the result is the
gradient of the global batch's mean loss, as one process would compute it. A parameter that no
rank gave a gradient keeps none, so optimizers skip it exactly as they do in one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from harness.train.batches import Batch, shard


@dataclass(frozen=True)
class DataParallel:
    rank: int
    world: int

    def share(self, batch: Batch) -> tuple[Batch, float]:
        """This rank's part of `batch` and its share of the prompts (the loss weight)."""
        mine = shard(batch, self.rank, self.world)
        return mine, len(mine.boxes) / max(1, len(batch.boxes))

    def reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum every trainable parameter's gradient over the ranks, in one all-reduce."""
        has = torch.tensor([float(p.grad is not None) for p in params])
        flat = torch.cat([has.to(params[0].device)] + [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in params])
        dist.all_reduce(flat)
        offset = len(params)
        for i, p in enumerate(params):
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone() if flat[i] > 0 else None
            offset += n

    def total(self, value: float, device: torch.device) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item())
