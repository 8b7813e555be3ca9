"""Several hosts: studies on a real PostgreSQL server (Optuna storage and MLflow tracking from
postgresql:// URLs), several worker processes, and a killed worker's trial run again after
the study's grace period.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from conftest import free_port, start_workers
from test_final_queue import _together
from harness.config import study_from_dict
from harness.errors import HarnessError
from harness.experiment.queue import claim, fail_stale, heartbeat, liveness, queued_study
from harness.experiment.study import optuna_name, run_study
from harness.tracking import schema
from harness.tracking.server import serve
from harness.tracking.store import database_url, exclusive, optuna_storage
from postgres_server import create_database, missing, postgres_server

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
_names = itertools.count()


@pytest.fixture(scope="module")
def server():
    if (reason := missing()) is not None:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.fixture
def databases(server):
    """(Optuna storage URL, MLflow tracking URL): two new databases (both libraries keep an
    alembic_version table, so they cannot share one)."""
    n = next(_names)
    return create_database(server, f"optuna{n}"), create_database(server, f"mlflow{n}")


def _trials(cfg, storage_url: str) -> dict[tuple[str, str], list]:
    storage = optuna.storages.RDBStorage(database_url(storage_url))
    return {(phase, method): optuna.load_study(study_name=optuna_name(cfg, phase, method),
                                               storage=storage).get_trials()
            for phase in schema.PHASES for method in cfg.methods}


def _trial_runs(cfg, tracking_url: str) -> list:
    client = MlflowClient(database_url(tracking_url))
    experiment = client.get_experiment_by_name(cfg.name)
    return client.search_runs([experiment.experiment_id], max_results=1000)


def test_postgres_urls_use_psycopg_3_unless_a_driver_is_named():
    assert database_url("postgresql://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    assert database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("postgresql+pg8000://u@h/db") == "postgresql+pg8000://u@h/db"
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_an_unreachable_server_is_one_line_with_the_password_masked(tmp_path):
    url = f"postgresql://someone:s3cret@127.0.0.1:{free_port()}/nowhere"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "study", "list", "--storage",
                           url], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HARNESS_HOME": str(tmp_path / "runs")})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: cannot reach")
    assert "someone:***@127.0.0.1" in done.stderr and "s3cret" not in done.stderr
    with pytest.raises(HarnessError, match=r"cannot reach .*someone:\*\*\*@") as refused:
        serve(backend_store_uri=url.replace("postgresql://", "postgres://"))
    assert "s3cret" not in str(refused.value)


def test_grace_period_must_leave_room_for_a_missed_heartbeat(tiny_study_dict):
    tiny_study_dict["tuning"].update(heartbeat_seconds=5, grace_seconds=9)
    with pytest.raises(HarnessError, match=r"tuning.grace_seconds.*≥ 2 × .*\(10\)"):
        study_from_dict(tiny_study_dict)


@pytest.mark.parametrize("scheme", ["sqlite", "journal"])
def test_the_grace_period_is_the_storages(tmp_path, scheme):
    """Heartbeat interval and grace period given to optuna_storage decide when a silent
    trial is a dead worker's, on RDB storages (Optuna's heartbeats) and journal files."""
    url = (f"sqlite:///{tmp_path / 'optuna.db'}" if scheme == "sqlite"
           else f"journal://{tmp_path / 'optuna.log'}")
    storage = optuna_storage(url, heartbeat_s=1, grace_s=1)
    assert liveness(storage) == (1, 1)
    study = queued_study(storage, "tune", {0: {}})
    dead = claim(storage, study)
    with heartbeat(storage, dead):
        pass  # one beat, then its worker is gone
    assert fail_stale(storage, study) == []
    time.sleep(2.1)  # SQLite stamps heartbeats to the whole second
    assert fail_stale(storage, study) == [dead.number]


@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_workers_seeing_new_slots_at_once_queue_each_once(tmp_path, request, kind):
    """Seeds added to a study that exists: every worker sees them free at the same moment;
    the storage's lock lets one queue them."""
    url = (f"journal://{tmp_path / 'optuna.log'}" if kind == "journal"
           else request.getfixturevalue("databases")[0])
    queued_study(optuna_storage(url), "final", {1: {}})
    storages = [optuna_storage(url) for _ in range(4)]
    _together(4, lambda i: queued_study(storages[i], "final", {s: {} for s in range(1, 7)}))
    trials = optuna.load_study(study_name="final", storage=storages[0]).get_trials()
    assert sorted(t.user_attrs[schema.ATTR_SLOT] for t in trials) == [1, 2, 3, 4, 5, 6]


def test_a_study_on_postgresql_completes(home, tiny_study_dict, databases):
    storage, tracking = databases
    cfg = study_from_dict(tiny_study_dict)
    # both spellings PostgreSQL documents: postgresql:// and postgres://
    summary = run_study(cfg, storage, tracking.replace("postgresql://", "postgres://"),
                        progress=False)
    assert {m: summary[m] for m in cfg.methods} == {
        m: {"tune": {"COMPLETE": 2}, "final": {"COMPLETE": 2}} for m in ("adamw", "asam")}
    trials = _trials(cfg, storage)
    assert {key: len(ts) for key, ts in trials.items()} == {
        (p, m): 2 for p in schema.PHASES for m in cfg.methods}
    runs = _trial_runs(cfg, tracking)
    children = [r for r in runs if r.data.tags[schema.ROLE] == schema.ROLE_TRIAL]
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
    assert {t.user_attrs[schema.ATTR_RUN_ID] for ts in trials.values() for t in ts} == {
        r.info.run_id for r in children}
    assert not (home / "optuna.db").exists() and not (home / "mlflow.db").exists()


def _inside_a_trial(storage: optuna.storages.BaseStorage, client: MlflowClient) -> int:
    """How many workers are inside a trial: RUNNING trials whose MLflow run is RUNNING."""
    ids = [storage.get_study_id_from_name(s.study_name) for s in storage.get_all_studies()]
    runs = [t.user_attrs[schema.ATTR_RUN_ID] for study_id in ids
            for t in storage.get_all_trials(study_id, deepcopy=False,
                                            states=(TrialState.RUNNING,))
            if schema.ATTR_RUN_ID in t.user_attrs]
    return sum(client.get_run(run_id).info.status == "RUNNING" for run_id in runs)


def _waiting_for_a_lock(server_url: str) -> int:
    """How many sessions of the server wait for an advisory lock."""
    import psycopg

    with psycopg.connect(f"{server_url}/postgres") as connection:
        return connection.execute("SELECT count(*) FROM pg_locks WHERE locktype = "
                                  "'advisory' AND NOT granted").fetchone()[0]


def _freeze(procs) -> None:
    """SIGSTOP `procs` and return once they are stopped (not merely signalled)."""
    for p in procs:
        p.send_signal(signal.SIGSTOP)
    for p in procs:
        while Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            time.sleep(0.001)


def _kill_one_inside_a_trial(storage_url: str, tracking_url: str, procs,
                             timeout_s: float = 240) -> bool:
    """kill -9 procs[0] at a moment when both workers are inside a trial; whether that moment
    came. The workers are frozen (SIGSTOP) while the stores are read, so what they say still
    holds when the kill lands."""
    storage = optuna.storages.RDBStorage(database_url(storage_url))
    client = MlflowClient(database_url(tracking_url))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if _inside_a_trial(storage, client) == 2:
            _freeze(procs)
            both = _inside_a_trial(storage, client) == 2
            if both:
                procs[0].send_signal(signal.SIGKILL)
            for p in procs:
                p.send_signal(signal.SIGCONT)
            if both:
                return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_a_killed_workers_trial_is_run_again_after_its_grace(home, tmp_path, tiny_study_dict,
                                                             server, databases):
    """Two `harness study run` processes on one PostgreSQL storage and tracking database;
    one is killed (-9) inside a trial. The other finds that trial's heartbeat stale after the
    study's grace period, fails it, closes its run and runs the slot again: every slot
    ends COMPLETE exactly once, nothing is left RUNNING."""
    storage, tracking = databases
    tiny_study_dict["methods"].pop("asam")
    tiny_study_dict["tuning"].update(heartbeat_seconds=1, grace_seconds=2)
    tiny_study_dict["evaluate"] = {"priors": []}
    # as the README asks, the study is created (parent run, tuning, a first seed) before
    # several workers start; they share the seeds added then
    run_study(study_from_dict({**tiny_study_dict, "final_seeds": [1]}), storage, tracking,
              progress=False)
    tiny_study_dict["final_seeds"] = [1, 2, 3, 4, 5]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_study_dict))
    cfg = study_from_dict(tiny_study_dict)

    # Held by the test, the lock workers take to open the storage (and to queue work) makes
    # them start together: their imports take seconds, a tiny trial less than one.
    with exclusive(database_url(storage)):
        procs = start_workers(home, path, storage, 2, ("--tracking-uri", tracking))
        deadline = time.monotonic() + 240
        while _waiting_for_a_lock(server) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    try:
        inside = _kill_one_inside_a_trial(storage, tracking, procs)
        outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert inside, "\n".join(outputs)
    assert procs[0].returncode == -signal.SIGKILL
    assert procs[1].returncode == 0 and "Traceback" not in outputs[1], outputs[1]

    trials = _trials(cfg, storage)
    complete = {key: sorted(t.user_attrs[schema.ATTR_SLOT] for t in ts
                            if t.state == TrialState.COMPLETE) for key, ts in trials.items()}
    slots = {schema.PHASE_TUNE: [0, 1], schema.PHASE_FINAL: cfg.final_seeds}
    assert complete == {(p, m): slots[p] for p in schema.PHASES for m in cfg.methods}
    states = sorted(t.state.name for ts in trials.values() for t in ts)
    assert states == ["COMPLETE"] * 7 + ["FAIL"]  # the killed worker's trial, once
    dead = next(t for ts in trials.values() for t in ts if t.state == TrialState.FAIL)

    runs = _trial_runs(cfg, tracking)
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]  # parent included
    assert [r.data.tags[schema.ROLE] for r in runs].count(schema.ROLE_STUDY) == 1
    status = {r.info.run_id: r.info.status for r in runs
              if r.data.tags[schema.ROLE] == schema.ROLE_TRIAL}
    assert status[dead.user_attrs[schema.ATTR_RUN_ID]] == "KILLED"
    assert sorted(status.values()) == ["FINISHED"] * 7 + ["KILLED"]
