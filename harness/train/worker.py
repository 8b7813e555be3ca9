"""A rank of :func:`harness.train.processes.train_in_processes` (run by torchrun):

    python -m torch.distributed.run --standalone --nproc_per_node N -m harness.train.worker DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from harness.evaluate.segment import evaluate_dataset
from harness.tracking import schema
from harness.train.loop import TrainingCollapsed, TrainingDiverged, train
from harness.train.parallel import DataParallel
from harness.train.processes import FAILED, JOB, RESULT


def main(folder: Path) -> None:
    job = torch.load(folder / JOB, weights_only=False)
    cuda = job["device"] == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(job["threads"])
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if cuda else "cpu")
    model = job["model"].to(device)
    entries: list[tuple[int, dict]] = []

    def validate(m: torch.nn.Module) -> dict:
        score = torch.zeros(1, dtype=torch.float64, device=device)
        if rank == 0:
            score[0] = evaluate_dataset(m, job["val"], boundary=False,
                                        batch_size=job["eval_batch_size"])["miou"]
        dist.broadcast(score, 0)  # every rank stops (or not) on the same score
        return {schema.VAL_MIOU: float(score.item())}

    try:
        result = train(model, job["train"], job["method"], job["hparams"], **job["kwargs"],
                       log=(lambda step, m: entries.append((step, dict(m))))
                       if rank == 0 else None,
                       validate=validate if job["val"] is not None else None,
                       progress=False, parallel=DataParallel(rank, world))
    except TrainingDiverged as exc:  # the same on every rank: the loss is all-reduced
        if rank == 0:
            kind = "collapsed" if isinstance(exc, TrainingCollapsed) else "diverged"
            torch.save((kind, str(exc)), folder / FAILED)
    else:
        if rank == 0:
            torch.save({"state": {k: v.cpu() for k, v in model.state_dict().items()},
                        "result": result, "log": entries}, folder / RESULT)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
