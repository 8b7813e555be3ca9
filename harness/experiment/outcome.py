"""How every run this harness starts ends up recorded: finished, failed with a reason, killed.

Trials, bases, ensembles and reference runs all close their MLflow run through
:func:`create_run` and :func:`recorded_outcome`, so an interrupt anywhere from the moment a run
is created closes it (KILLED)
instead of leaving it RUNNING, and a training failure is tagged with what kind it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from harness import interrupt
from harness.tracking import schema
from harness.train.loop import TrainingCollapsed, TrainingDiverged


def create_run(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> Run:
    """``client.create_run`` that a signal cannot cut in half: cut inside, the run would exist
    but its id would never reach :func:`recorded_outcome`, and it would stay RUNNING."""
    with interrupt.deferred():
        return client.create_run(experiment_id, tags=tags)


@contextmanager
def recorded_outcome(client: MlflowClient, run_id: str) -> Iterator[None]:
    """Close `run_id` as the block ends: FINISHED with ``harness.status=ok``; FAILED with
    ``harness.status=diverged`` (or ``collapsed``) and the reason when training failed;
    KILLED otherwise. A signal that arrived while the run was made (:func:`create_run`) is
    raised here, where the run can be closed."""
    try:
        interrupt.check()
        yield
    except TrainingDiverged as exc:
        client.set_tag(run_id, schema.STATUS, schema.STATUS_COLLAPSED
                       if isinstance(exc, TrainingCollapsed) else schema.STATUS_DIVERGED)
        client.set_tag(run_id, schema.FAIL_REASON, str(exc))
        client.set_terminated(run_id, "FAILED")
        raise
    except BaseException:
        client.set_terminated(run_id, "KILLED")
        raise
    # the work is done: a signal now must not leave it RUNNING half-closed; the caller's next
    # interrupt.check() raises it
    with interrupt.deferred():
        client.set_tag(run_id, schema.STATUS, schema.STATUS_OK)
        client.set_terminated(run_id, "FINISHED")
