"""SAM/ASAM under DistributedDataParallel; launched by tests/test_optim_ddp.py via torchrun.

Every rank trains the same initial model on its shard of each global batch; DDP all-reduces
(averages) the gradients of *both* backward passes. The test compares the result with
`train_variants()` run in one process on the whole batch.

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_sam_worker.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from harness.optim import build_optimizer

VARIANTS = {
    "sam": dict(method="sam", rho=0.1),
    "asam": dict(method="asam", rho=0.5, eta=0.01),
    "asam-k2-looksam-clip": dict(
        method="asam", every_k=2, off_step="looksam", max_grad_norm=0.3
    ),
}
STEPS = 4
GLOBAL_BATCH = 8


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2)).double()


def global_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(123)
    return [
        (torch.randn(GLOBAL_BATCH, 6, generator=gen, dtype=torch.float64),
         torch.randn(GLOBAL_BATCH, 2, generator=gen, dtype=torch.float64))
        for _ in range(STEPS)
    ]


def train_variants(rank: int = 0, world: int = 1) -> dict[str, list[torch.Tensor]]:
    """Train every variant; with world > 1 the model is wrapped in DDP and sees its shard."""
    results = {}
    for name, config in VARIANTS.items():
        model = make_model()
        net = DistributedDataParallel(model) if world > 1 else model
        opt = build_optimizer(net.parameters(), lr=0.05, weight_decay=0.01, **config)
        for x, y in global_batches():
            x, y = x.chunk(world)[rank], y.chunk(world)[rank]

            def closure():
                loss = ((net(x) - y) ** 2).mean()
                loss.backward()  # DDP all-reduces here, in both passes: no no_sync()
                return loss

            closure()
            opt.step(closure)
            opt.zero_grad()
        results[name] = [p.detach().clone() for p in model.parameters()]
    return results


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results = train_variants(rank, world)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
