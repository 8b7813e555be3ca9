"""Ctrl+C swallowed inside a finalizer is raised again at the next safe point."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from harness import interrupt
from harness.data import synthetic_split
from harness.model import build_model
from harness.optim import Hparams
from harness.train.loop import train


@pytest.fixture
def installed():
    old = signal.getsignal(signal.SIGINT)
    interrupt.install()
    yield
    signal.signal(signal.SIGINT, old)
    interrupt._requested.clear()


class _InterruptedFinalizer:
    def __del__(self):
        # the handler runs here, and Python prints "Exception ignored" instead of raising
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # give the interpreter bytecode boundaries to run the handler
            pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_swallowed_interrupt_is_raised_at_the_next_check(installed):
    interrupt.check()  # nothing requested yet
    _InterruptedFinalizer()  # dropped at once: __del__ runs and swallows the interrupt
    with pytest.raises(KeyboardInterrupt):
        interrupt.check()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_training_stops_at_the_next_step(installed, tmp_path):
    data = synthetic_split("shapes", "train", 4, 32, 0, 2, tmp_path)
    _InterruptedFinalizer()
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(build_model("tiny-32"), data, "adamw", Hparams(lr=1e-3, weight_decay=0.0),
              epochs=1, batch_size=2, seed=0, progress=False)
