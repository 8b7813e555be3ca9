"""Optuna studies as work queues: every unit of work is one queued trial, run exactly once.

A phase of a study is a fixed set of *slots* — the tuning budget's trial 0..n−1, or one final
seed each. Each slot is one enqueued Optuna trial (state WAITING, its slot and settings as user
attrs); a worker runs a trial only after moving it from WAITING to RUNNING, which the storage
grants to one worker alone (a row lock on PostgreSQL, the write lock on SQLite, the log order
of a journal file). So any number of workers share a phase, each slot runs once, the budget is
the same for every method, and no trial exists that is not real work.

- The worker that *creates* the study (creation is atomic: names are unique) queues every
  slot, then says so (study user attr ``queued``); the others wait for that before looking.
  A slot with no live trial (added later — a larger budget, another seed — or orphaned by a
  dead worker) is queued by whichever worker notices, under a lock among the storage's
  workers (``tracking.store.storage_lock``), so two noticing at once queue it once.
- An interrupted worker hands its slot back (queues it again) before failing its trial, so
  no one ever sees the slot without a live trial and queues it twice.
- A slot is taken only by a trial queued with the attrs the slot has *now*. When a slot's
  work changes (a final seed of a method whose best tuned configuration changed), its
  finished trials stay as they are, no longer current, and the slot is queued again; a
  trial still waiting with the old attrs is withdrawn (FAIL, reason in ``fail_reason``).
- A killed worker cannot: its trial stays RUNNING. Workers prove they are alive with a
  heartbeat — the storage's own on RDB storages, a timestamp user attr on journal files — and
  a RUNNING trial whose heartbeat is older than the grace period is failed, freeing its slot.
  Interval and grace period are the storage's (``tracking.store.optuna_storage``).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from harness import interrupt
from harness.tracking import schema
from harness.tracking.store import GRACE_S, HEARTBEAT_S, storage_lock

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
LIVE = (TrialState.WAITING, TrialState.RUNNING, *DONE)  # a slot in one of these is taken
CREATOR_GRACE_S = 10.0  # how long a worker waits for another to queue a new study
PARAMS = "params"  # the key of a slot's attrs that holds fixed Optuna params


def _study_id(storage: optuna.storages.BaseStorage, study: optuna.Study) -> int:
    return storage.get_study_id_from_name(study.study_name)


def queued_study(storage: optuna.storages.BaseStorage, name: str,
                 slots: Mapping[Any, dict], prepare: Callable[[optuna.Study], None] = None,
                 ) -> optuna.Study:
    """Study `name` with every slot of `slots` ({slot: user attrs of its trial}) queued once.

    Trials of dead workers are failed first; then `prepare(study)` runs, before anything is
    queued or read (labels, sampler, closing the records of failed trials)."""
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        created = False
    fail_stale(storage, study)
    if prepare is not None:
        prepare(study)
    if not created:
        deadline = time.monotonic() + CREATOR_GRACE_S
        while (schema.ATTR_QUEUED not in storage.get_study_user_attrs(_study_id(storage, study))
               and time.monotonic() < deadline):
            time.sleep(0.2)  # its creator is queueing the slots right now
    plan = {slot: _canonical(attrs) for slot, attrs in slots.items()}
    taken = set()
    with storage_lock(storage):  # two workers seeing one free slot would both queue it
        for frozen in study.get_trials(deepcopy=False, states=LIVE):
            slot = frozen.user_attrs.get(schema.ATTR_SLOT)
            if slot in plan and queued_attrs(frozen) == plan[slot]:
                taken.add(slot)
            elif frozen.state == TrialState.WAITING:
                withdraw(storage, study, frozen.number, "withdrawn: its slot's work changed "
                         "before it ran (or the slot is no longer planned)")
        for slot, attrs in slots.items():
            if slot not in taken:
                enqueue(study, slot, attrs)
    study.set_user_attr(schema.ATTR_QUEUED, True)
    return study


def enqueue(study: optuna.Study, slot: Any, attrs: dict) -> None:
    """Queue one trial for `slot`. ``attrs[PARAMS]``, if given, fixes its Optuna params (a
    grid point); the other attrs become user attrs. A retry of the slot inherits exactly
    these (not a dead run's ids)."""
    attrs = dict(attrs)
    params = attrs.pop(PARAMS, {})
    study.enqueue_trial(params, user_attrs={
        **attrs, schema.ATTR_SLOT: slot, schema.ATTR_QUEUED_WITH: sorted(attrs),
        schema.ATTR_QUEUED_PARAMS: params})


def queued_attrs(trial: optuna.trial.FrozenTrial | optuna.Trial) -> dict:
    """The attrs `trial` was queued with, as :func:`enqueue` took them (``PARAMS`` always
    present): what a retry of its slot inherits, and what says which work it is."""
    user = trial.user_attrs
    attrs = {k: user[k] for k in user.get(schema.ATTR_QUEUED_WITH, ()) if k in user}
    attrs[PARAMS] = user.get(schema.ATTR_QUEUED_PARAMS, {})
    return attrs


def _canonical(attrs: dict) -> dict:
    """`attrs` as the storage gives them back (JSON: tuples become lists), ``PARAMS``
    always present: comparable with :func:`queued_attrs`."""
    return json.loads(json.dumps({PARAMS: {}, **attrs}))


def withdraw(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int,
             reason: str) -> bool:
    """Fail queued trial `number` before anyone runs it; whether this worker did. It is
    claimed first, so a trial another worker has just started is never failed under it."""
    trial_id = _take(storage, _study_id(storage, study), number)
    if trial_id is None:
        return False
    storage.set_trial_user_attr(trial_id, schema.ATTR_FAIL_REASON, reason)
    storage.set_trial_state_values(trial_id, TrialState.FAIL)
    return True


def _take(storage: optuna.storages.BaseStorage, study_id: int, number: int) -> int | None:
    """Move trial `number` from WAITING to RUNNING; its id if this worker did."""
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    try:
        return trial_id if storage.set_trial_state_values(trial_id, TrialState.RUNNING) else None
    except optuna.exceptions.UpdateFinishedTrialError:
        return None


def claim(storage: optuna.storages.BaseStorage, study: optuna.Study) -> optuna.Trial | None:
    """A queued trial of `study` that this worker now owns (RUNNING), or None when none is
    left. Only the WAITING → RUNNING transition is trusted: the storage grants it to one
    worker, so a trial another worker claimed first is skipped."""
    study_id = _study_id(storage, study)
    for frozen in storage.get_all_trials(study_id, deepcopy=False,
                                         states=(TrialState.WAITING,)):
        trial_id = _take(storage, study_id, frozen.number)
        if trial_id is not None:
            return optuna.Trial(study, trial_id)
    return None


def run_queued(storage: optuna.storages.BaseStorage, study: optuna.Study,
               work: Callable[[optuna.Trial], float]) -> int:
    """Claim and run `study`'s queued trials until none is left; how many this worker ran.

    `work(trial)` returns the objective, or raises ``optuna.TrialPruned`` (a result that
    used its slot: a divergence). Anything else hands the slot back and propagates."""
    ran = 0
    while True:
        interrupt.check()  # one held by a deferred block below: stop before claiming more
        # A signal between the claim and the try below would leave the trial RUNNING with
        # nobody to close it (its slot then waits for the grace period): hold it until the
        # trial is ours to hand back.
        with interrupt.deferred():
            trial = claim(storage, study)
            if trial is None:
                break
            slot = trial.user_attrs[schema.ATTR_SLOT]
            attrs = queued_attrs(trial)
        try:
            interrupt.check()
            with heartbeat(storage, trial):
                value = work(trial)
        except optuna.TrialPruned:
            with interrupt.deferred():
                study.tell(trial, state=TrialState.PRUNED)
        except BaseException:
            with interrupt.deferred():
                enqueue(study, slot, attrs)
                study.tell(trial, state=TrialState.FAIL)
            raise
        else:
            with interrupt.deferred():  # a result must not be lost half-written
                study.tell(trial, value)
        ran += 1
    return ran


def drain(storage: optuna.storages.BaseStorage, name: str, slots: Mapping[Any, dict],
          work: Callable[[optuna.Trial], float],
          prepare: Callable[[optuna.Study], None] | None = None,
          poll_s: float = 5.0) -> optuna.Study:
    """Queue `slots` in study `name`, run what this worker can claim, and return once no
    trial is queued or running: other workers finished theirs, or were found dead and their
    slots were run here. The phase's results are then final.

    Each look loads the study afresh, so `prepare` runs every time: the sampler is set again
    and the records of trials failed since the last look are closed."""
    while True:
        study = queued_study(storage, name, slots, prepare)
        run_queued(storage, study, work)
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,
                                                        TrialState.RUNNING)):
            return study
        time.sleep(poll_s)


# ---------------------------------------------------------------- liveness
def _rdb_interval(storage: optuna.storages.BaseStorage) -> int | None:
    get = getattr(storage, "get_heartbeat_interval", None)  # RDB storages only
    return get() if get is not None else None


def liveness(storage: optuna.storages.BaseStorage) -> tuple[float, float]:
    """(heartbeat interval, grace period) in seconds that `storage` was opened with (RDB
    storages and ``tracking.store.JournalFile`` carry them; defaults otherwise)."""
    return (getattr(storage, "heartbeat_interval", None) or HEARTBEAT_S,
            getattr(storage, "grace_period", None) or GRACE_S)


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> Iterator[None]:
    """Prove this worker alive while it runs `trial` (what ``Study.optimize`` does, and on
    journal files too)."""
    rdb_interval = _rdb_interval(storage)
    interval, _ = liveness(storage)
    trial_id = trial._trial_id

    def beat() -> None:
        if rdb_interval:
            storage.record_heartbeat(trial_id)
        else:
            storage.set_trial_user_attr(trial_id, schema.ATTR_HEARTBEAT, time.time())

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            beat()

    beat()
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale(storage: optuna.storages.BaseStorage, study: optuna.Study,
               grace_s: float | None = None) -> list[int]:
    """Fail the RUNNING trials of dead workers; their numbers. Their slots are free again
    (the next :func:`queued_study` queues them). On journal files a trial is a dead worker's
    when silent for `grace_s` (default: the storage's grace period); RDB storages judge
    that themselves."""
    if _rdb_interval(storage):
        before = {t.number for t in study.get_trials(deepcopy=False,
                                                      states=(TrialState.RUNNING,))}
        with warnings.catch_warnings():  # "experimental", yet what optimize() calls too
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(deepcopy=False,
                                                     states=(TrialState.RUNNING,))}
        return sorted(before - after)
    if grace_s is None:
        _, grace_s = liveness(storage)
    failed = []
    now = time.time()
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        stamp = frozen.user_attrs.get(schema.ATTR_HEARTBEAT)
        if stamp is None and frozen.datetime_start is not None:
            stamp = frozen.datetime_start.timestamp()
        if stamp is None or now - stamp <= grace_s:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            _study_id(storage, study), frozen.number)
        try:
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            failed.append(frozen.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
    return failed
