"""Final seeds run exactly once, with several workers on one storage and no placeholder trials.

Workers are threads with storages of their own on one journal file (as processes on one
host would be) and, in the last test, real `harness study run` processes.
"""

from __future__ import annotations

import os
import signal
import threading

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from conftest import run_workers
from harness import interrupt
from harness.config import study_from_dict
from harness.experiment.queue import claim, fail_stale, queued_study, run_queued
from harness.experiment.study import optuna_name, run_study
from harness.optim import get_method
from harness.tracking import schema
from harness.tracking.store import default_tracking_uri

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _together(n: int, work) -> list:
    """Run work(i) in n threads released at the same instant; their results in order."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def target(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def _slots(seeds, hparams):
    return {seed: {schema.ATTR_SEED: seed, schema.ATTR_HPARAMS: hparams.as_dict()}
            for seed in seeds}


def test_workers_starting_together_queue_each_seed_once(tmp_path):
    log = str(tmp_path / "optuna.log")
    hparams = get_method("adamw").defaults(lr=2e-3)

    def worker(i: int, seeds=(1, 2, 3, 4, 5)) -> None:
        queued_study(JournalStorage(JournalFileBackend(log)), "final", _slots(seeds, hparams))

    _together(4, worker)
    study = optuna.load_study(study_name="final",
                              storage=JournalStorage(JournalFileBackend(log)))
    trials = study.get_trials()
    assert sorted(t.user_attrs[schema.ATTR_SEED] for t in trials) == [1, 2, 3, 4, 5]
    assert all(t.state == TrialState.WAITING for t in trials)
    assert all(t.user_attrs[schema.ATTR_HPARAMS] == hparams.as_dict() for t in trials)
    # a later worker with a seed added to the config queues only that seed
    worker(0, (1, 2, 3, 4, 5, 6))
    assert len(study.get_trials()) == 6


def test_a_dead_workers_slot_is_freed_and_run_again(tmp_path):
    """kill -9 leaves a RUNNING trial; on a journal file (no storage heartbeats) the worker's
    own heartbeat attr going stale frees its slot, and it is queued and run once more."""
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.log")))
    study = queued_study(storage, "tune", {0: {}, 1: {}})
    dead = claim(storage, study)  # a worker claimed it, then died without a trace
    assert fail_stale(storage, study, grace_s=60) == []  # still within its grace
    assert fail_stale(storage, study, grace_s=-1) == [dead.number]
    study = queued_study(storage, "tune", {0: {}, 1: {}})  # the next worker looks
    assert run_queued(storage, study, lambda trial: 1.0) == 2
    states = sorted(t.state.name for t in study.get_trials())
    assert states == ["COMPLETE", "COMPLETE", "FAIL"]
    assert sorted(t.user_attrs[schema.ATTR_SLOT] for t in study.get_trials()
                  if t.state == TrialState.COMPLETE) == [0, 1]


def test_an_interrupted_slot_is_handed_back_once(tmp_path):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.log")))
    study = queued_study(storage, "final", {7: {schema.ATTR_SEED: 7}})

    def interrupted(trial):
        trial.set_user_attr(schema.ATTR_RUN_ID, "run-of-the-dead-trial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_queued(storage, study, interrupted)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs[schema.ATTR_SEED] == 7
    assert schema.ATTR_RUN_ID not in waiting[0].user_attrs  # inherits the slot, not the run
    assert run_queued(storage, study, lambda trial: 0.5) == 1


class _SignalOnClaim(JournalStorage):
    """A real journal storage that receives SIGTERM just after it grants a claim (WAITING →
    RUNNING), before the caller holds the trial: the moment that once left a trial RUNNING
    with nobody to close it."""

    def set_trial_state_values(self, trial_id, state, values=None):
        granted = super().set_trial_state_values(trial_id, state, values)
        if state == TrialState.RUNNING and granted:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # bytecode boundaries for the handler to run at
                pass
        return granted


def test_a_signal_during_the_claim_hands_the_slot_back(tmp_path):
    old = {signum: signal.getsignal(signum) for signum in interrupt.SIGNALS}
    interrupt.install()
    try:
        storage = _SignalOnClaim(JournalFileBackend(str(tmp_path / "optuna.log")))
        study = queued_study(storage, "final", {3: {schema.ATTR_SEED: 3}})
        ran = []
        with pytest.raises(KeyboardInterrupt):
            run_queued(storage, study, ran.append)
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
        interrupt._requested.clear()
    assert ran == []  # the held signal stopped the worker before any work
    states = sorted(t.state.name for t in study.get_trials())
    assert states == ["FAIL", "WAITING"]  # nothing RUNNING: the slot waits for the rerun
    assert study.get_trials(states=(TrialState.WAITING,))[0].user_attrs[schema.ATTR_SEED] == 3


def test_each_queued_trial_is_claimed_by_one_worker(tmp_path):
    log = str(tmp_path / "optuna.log")
    study = optuna.create_study(study_name="q", storage=JournalStorage(JournalFileBackend(log)))
    for seed in range(12):
        study.enqueue_trial({}, user_attrs={"seed": seed})

    def worker(i: int) -> list[int]:
        storage = JournalStorage(JournalFileBackend(log))
        mine = optuna.load_study(study_name="q", storage=storage)
        claimed = []
        while (trial := claim(storage, mine)) is not None:
            claimed.append(trial.user_attrs["seed"])
            mine.tell(trial, 0.0)
        return claimed

    claimed = _together(4, worker)
    flat = [seed for seeds in claimed for seed in seeds]
    assert sorted(flat) == list(range(12)), claimed  # every seed once, none twice
    assert len(study.get_trials()) == 12  # claiming created no trial of its own
    assert {t.state for t in study.get_trials()} == {TrialState.COMPLETE}


@pytest.mark.slow
def test_two_study_processes_share_the_final_seeds(home, tmp_path, tiny_study_dict):
    """Tuning done by one worker, then two `harness study run` processes on one journal
    file: every final seed is trained once, by one of them, and both exit cleanly."""
    tiny_study_dict["methods"].pop("asam")
    tiny_study_dict["tuning"]["trials_per_method"] = 1
    tiny_study_dict["final_seeds"] = [1, 2, 3, 4]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_study_dict))
    storage = f"journal://{tmp_path / 'optuna.log'}"
    cfg = study_from_dict(tiny_study_dict)
    one_seed = study_from_dict({**tiny_study_dict, "final_seeds": [1]})
    # creates the stores, the parent run and the tuning trial; queues and runs seed 1 only
    run_study(one_seed, storage, progress=False)

    codes, outputs = run_workers(home, path, storage, 2)
    assert codes == [0, 0], outputs

    journal = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.log")))
    final = optuna.load_study(study_name=optuna_name(cfg, "final", "adamw"), storage=journal)
    trials = final.get_trials()
    assert sorted(t.user_attrs[schema.ATTR_SEED] for t in trials) == [1, 2, 3, 4]
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    client = MlflowClient(default_tracking_uri())
    experiment = client.get_experiment_by_name(cfg.name)
    runs = client.search_runs([experiment.experiment_id],
                              f"tags.`{schema.PHASE}` = 'final' and "
                              f"tags.`{schema.ROLE}` = '{schema.ROLE_TRIAL}'", max_results=100)
    assert sorted(int(r.data.tags[schema.SEED]) for r in runs) == [1, 2, 3, 4]
    assert all(r.info.status == "FINISHED" for r in runs)
