"""SAM/ASAM under real DDP (torchrun, 2 CPU processes, gloo) equal one process on the global batch."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_sam_worker.py")


def load_worker():
    spec = importlib.util.spec_from_file_location("ddp_sam_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_ranks_match_single_process(tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(WORKER), str(tmp_path),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    worker = load_worker()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = worker.train_variants()
    finally:
        torch.set_num_threads(threads)
    start = [p.detach() for p in worker.make_model().parameters()]

    assert set(single) == set(ranks[0])
    for name, want in single.items():
        for p0, p1, q in zip(ranks[0][name], ranks[1][name], want):
            assert torch.equal(p0, p1), f"{name}: ranks disagree"
            torch.testing.assert_close(p0, q, rtol=1e-5, atol=1e-5, msg=name)
        moved = max(float((q - p).abs().max()) for q, p in zip(want, start))
        assert moved > 1e-3, name  # the comparison is not between two untrained models
