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


class _InterruptedCreate:
    """A real MLflow client whose create_run is cut by Ctrl+C right after the server made the
    run and before its id reached the caller: the worst moment for an interrupt."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def create_run(self, *args, **kwargs):
        run = self._client.create_run(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
        return run


def test_an_interrupt_while_the_run_is_created_still_closes_it(installed, home,
                                                                tiny_study_dict):
    from harness.config import study_from_dict
    from harness.experiment.trial import TrialSpec, method_hparams, run_trial
    from harness.tracking.store import get_experiment_id, tracking_client

    cfg = study_from_dict(tiny_study_dict)
    client = tracking_client()
    experiment = get_experiment_id(client, "cut")
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, TrialSpec("adamw", method_hparams(cfg, "adamw"), 0, "single"),
                  _InterruptedCreate(client), experiment, progress=False)
    (run,) = client.search_runs([experiment])
    assert run.info.status == "KILLED"  # not left RUNNING without a name or a closer
    assert "loss" not in " ".join(run.data.metrics)  # stopped before any training


class _InterruptedClose(_InterruptedCreate):
    """... and one cut by Ctrl+C while it closes a finished run."""

    def create_run(self, *args, **kwargs):
        return self._client.create_run(*args, **kwargs)

    def set_tag(self, *args, **kwargs):
        self._client.set_tag(*args, **kwargs)
        if args[1] == "harness.status":
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass


def test_an_interrupt_while_a_finished_run_is_closed_still_finishes_it(installed, home,
                                                                       tiny_study_dict):
    from harness.config import study_from_dict
    from harness.experiment.trial import TrialSpec, method_hparams, run_trial
    from harness.tracking import schema
    from harness.tracking.store import get_experiment_id, tracking_client

    assert schema.STATUS == "harness.status"
    cfg = study_from_dict(tiny_study_dict)
    client = tracking_client()
    experiment = get_experiment_id(client, "closing")
    run_trial(cfg, TrialSpec("adamw", method_hparams(cfg, "adamw"), 0, "single"),
              _InterruptedClose(client), experiment, progress=False)
    (run,) = client.search_runs([experiment])
    assert run.info.status == "FINISHED"
    assert interrupt.requested()  # kept for the caller's next check
    with pytest.raises(KeyboardInterrupt):
        interrupt.check()


class _InterruptedUpload(_InterruptedCreate):
    """... and one where Ctrl+C arrives as an artifact upload starts. Inside MLflow's upload
    an interrupt between ``os.fdopen`` and the next line made it close the descriptor twice:
    the OSError replaced the interrupt and a Ctrl+C ended the study as a crash."""

    def create_run(self, *args, **kwargs):
        return self._client.create_run(*args, **kwargs)

    def log_artifact(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs at the next bytecode boundary
        return self._client.log_artifact(*args, **kwargs)


def test_an_interrupt_during_an_upload_lets_it_finish_then_stops(installed, home):
    from harness.tracking.mlflow_log import log_file
    from harness.tracking.store import get_experiment_id, tracking_client

    client = tracking_client()
    run_id = client.create_run(get_experiment_id(client, "upload")).info.run_id
    with pytest.raises(KeyboardInterrupt):
        log_file(_InterruptedUpload(client), run_id, lambda p: p.write_bytes(b"x" * 4096),
                 "weights.bin")
    (artifact,) = client.list_artifacts(run_id)
    assert artifact.path == "weights.bin" and artifact.file_size == 4096


def test_an_interrupt_that_came_before_an_upload_does_not_stop_it(installed, home):
    """Closing records after Ctrl+C uploads too: an old request must not cut that short."""
    from harness.tracking.mlflow_log import log_text
    from harness.tracking.store import get_experiment_id, tracking_client

    interrupt.request(signal.SIGINT)
    client = tracking_client()
    run_id = client.create_run(get_experiment_id(client, "closing-upload")).info.run_id
    log_text(client, run_id, "kept", "note.txt")
    assert [a.path for a in client.list_artifacts(run_id)] == ["note.txt"]
