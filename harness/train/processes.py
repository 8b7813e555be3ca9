"""One training run over `nproc` processes (``train.nproc``), launched with torchrun: gloo on
CPU, NCCL on GPU (one device per rank). The parent hands the model and data over in a file,
the ranks train data-parallel (:mod:`harness.train.parallel`), rank 0 returns the weights,
the result and the curves, and the parent loads them as if it had trained in-process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from harness.data import SegDataset
from harness.optim import Hparams
from harness.train.loop import TrainingCollapsed, TrainingDiverged, TrainResult

JOB, RESULT, FAILED = "job.pt", "result.pt", "diverged.pt"
WORKER = f"{__package__}.worker"  # the module each rank runs
GRACE_S = 10.0


def _run(command: list[str], env: dict) -> subprocess.CompletedProcess:
    """Run torchrun in a process group of its own; whatever ends us (Ctrl+C, SIGTERM, a bug)
    ends every rank too, so no worker outlives the trial."""
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate()
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(command, proc.returncode, out)


def train_in_processes(model: torch.nn.Module, dataset: SegDataset, method: str,
                       hparams: Hparams, *, nproc: int, val: SegDataset | None = None,
                       eval_batch_size: int = 64, threads: int = 1,
                       log: Callable[[int, dict], None] | None = None,
                       **train_kwargs) -> TrainResult:
    """:func:`~harness.train.loop.train` on `nproc` ranks; `model` ends with the trained
    weights. Validation (on `val`, each epoch) runs on rank 0 and is shared with the others,
    so every rank takes the same early-stopping decision."""
    device = next(model.parameters()).device
    with tempfile.TemporaryDirectory(prefix="harness-ddp-") as tmp:
        folder = Path(tmp)
        torch.save({"model": model.cpu(), "train": dataset, "val": val, "method": method,
                    "hparams": hparams, "kwargs": train_kwargs, "threads": threads,
                    "eval_batch_size": eval_batch_size, "device": device.type}, folder / JOB)
        model.to(device)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nnodes", "1", "--nproc_per_node", str(nproc),
                   "-m", WORKER, str(folder)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = _run(command, env)
        if (folder / FAILED).exists():
            kind, message = torch.load(folder / FAILED)
            raise (TrainingCollapsed if kind == "collapsed" else TrainingDiverged)(message)
        if done.returncode != 0 or not (folder / RESULT).exists():
            tail = "\n".join(done.stdout.splitlines()[-30:])
            raise RuntimeError(f"data-parallel training ({nproc} processes) failed with exit "
                               f"code {done.returncode}:\n{tail}")
        out = torch.load(folder / RESULT, weights_only=False)
    model.load_state_dict(out["state"])
    if log is not None:
        for step, metrics in out["log"]:
            log(step, metrics)
    return out["result"]
