"""Final runs that no longer follow their method's best tuned configuration.

Raising the tuning budget can make a later tuning trial the best. The final runs trained
from the previous best are then not the method's result any more: the study trains the new
best with every final seed (each final trial names its tuning trial, see
:mod:`harness.experiment.study`), and the old runs stay in the store, tagged
``harness.superseded`` with the reason. An ensemble with a superseded member is superseded
with it, and evaluated again from the new members. Everything that reads results — ensemble
members, the study status, the parent run's summary, the report — reads :func:`current`
runs only, so the old runs are kept as a record but never counted or averaged.
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from harness.tracking import schema
from harness.tracking.mlflow_log import runs_with_tags


def is_current(run) -> bool:
    return schema.SUPERSEDED not in run.data.tags


def current(runs: list) -> list:
    """`runs` without the superseded ones."""
    return [run for run in runs if is_current(run)]


def supersede_finals(client: MlflowClient, experiment_id: str, parent_run_id: str,
                     method: str, best_trial: int) -> list[str]:
    """Tag superseded every final run of `method` trained from another tuning trial than
    `best_trial`, and every ensemble run with a superseded member; the ids tagged now."""
    finals = runs_with_tags(client, [experiment_id], {
        schema.PARENT_RUN: parent_run_id, schema.ROLE: schema.ROLE_TRIAL,
        schema.METHOD: method, schema.PHASE: schema.PHASE_FINAL})
    # a best never comes back: a later trial must beat it, and ties keep the earlier one
    old = [run for run in finals if run.data.tags.get(schema.TUNE_TRIAL) != str(best_trial)]
    tagged = []
    for run in current(old):
        used = run.data.tags.get(schema.TUNE_TRIAL) or "?"
        client.set_tag(run.info.run_id, schema.SUPERSEDED,
                       f"trained with tuning trial #{used}; the best tuning trial of {method} "
                       f"is now #{best_trial}")
        tagged.append(run.info.run_id)
    gone = {run.info.run_id for run in old}
    ensembles = runs_with_tags(client, [experiment_id], {
        schema.PARENT_RUN: parent_run_id, schema.ROLE: schema.ROLE_ENSEMBLE})
    for run in current(ensembles):
        stale = [i for i in run.data.tags.get(schema.MEMBERS, "").split(",") if i in gone]
        if stale:
            client.set_tag(run.info.run_id, schema.SUPERSEDED,
                           f"its member run(s) {', '.join(stale)} were superseded")
            tagged.append(run.info.run_id)
    return tagged
