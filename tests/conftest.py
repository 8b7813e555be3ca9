"""Shared fixtures: one torch thread, an isolated HARNESS_HOME, a tiny study config."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

TINY_STUDY = {
    "name": "tiny",
    "model": {"preset": "tiny-32"},
    "data": {"domain": "shapes", "image_size": 32, "train_size": 8, "val_size": 4,
             "test_size": 4, "max_objects": 3, "seed": 0},
    "train": {"epochs": 1, "batch_size": 4, "warmup_steps": 1, "eval_batch_size": 8},
    "methods": {
        "adamw": {"lr": 1.0e-3, "search": {"lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}},
        "asam": {"lr": 1.0e-3, "rho": 0.5, "eta": 0.01,
                 "search": {"rho": {"low": 0.1, "high": 1.0}}},
    },
    "tuning": {"trials_per_method": 2, "n_startup_trials": 2},
    "final_seeds": [1, 2],
    "presets": {"smaller": {"final_seeds": [1]}},
}


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """Tiny tensors are dominated by OpenMP hand-offs on a busy 2-core machine: one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty HARNESS_HOME: every store (MLflow, Optuna, cache) lives in tmp_path/runs."""
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture
def tiny_study_dict():
    return copy.deepcopy(TINY_STUDY)


@pytest.fixture(scope="session")
def report_home(tmp_path_factory):
    """A HARNESS_HOME holding the studies the report tests read (tests/report_study.py),
    recorded once per session; a test sets HARNESS_HOME to it itself."""
    from tests.report_study import record_report_studies

    return record_report_studies(tmp_path_factory.mktemp("report") / "runs")


def start_workers(home, study_path, storage: str, n: int,
                  options: tuple[str, ...] = ()) -> list[subprocess.Popen]:
    """Start `n` `harness study run` processes on one storage at once (with `options`, e.g.
    a --tracking-uri); output merged into stdout."""
    env = {**os.environ, "HARNESS_HOME": str(home), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "harness.cli", "study", "run", str(study_path),
               "--storage", storage, "--quiet", *options]
    return [subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT) for _ in range(n)]


def run_workers(home, study_path, storage: str, n: int,
                options: tuple[str, ...] = ()) -> tuple[list[int], list[str]]:
    """Start `n` `harness study run` processes on one storage at once; (return codes,
    outputs) once all have ended."""
    procs = start_workers(home, study_path, storage, n, options)
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    return [p.returncode for p in procs], outputs


def free_port() -> int:
    """A TCP port nothing listens on right now (for servers the tests start)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
