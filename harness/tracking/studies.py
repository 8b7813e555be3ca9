"""Find a recorded study in an MLflow store: its experiment and its parent run.

A study's runs live in the experiment named after it; each preset it was run with has its own
parent run (tag ``harness.study_key`` = ``name@preset``). Readers (`harness report`,
`harness ui`) resolve a name and an optional preset the same way: without a preset, the only
recorded one. Reading never creates a store.
"""

from __future__ import annotations

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from harness.errors import HarnessError
from harness.tracking import schema
from harness.tracking.mlflow_log import runs_with_tags
from harness.tracking.store import local_file


def require_store(uri: str, what: str) -> None:
    """A one-line error when the local file behind `uri` does not exist."""
    path = local_file(uri)
    if path is not None and not path.is_file():
        raise HarnessError(f"no {what} at {path} (set HARNESS_HOME or pass the URI)")


def recorded_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of study `name`'s experiment; a one-line error naming the recorded ones."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        raise HarnessError(f"no study {name!r} recorded in {uri} (recorded: "
                           f"{', '.join(names) or 'none'})")
    return experiment.experiment_id


def recorded_key(name: str, preset: str | None, keys: list[str]) -> str:
    """The study key to read among the recorded `keys`: ``name@preset``, else the only
    one (or the preset-less one)."""
    if preset is not None:
        return schema.study_key(name, preset)
    if len(keys) == 1 or name in keys:
        return keys[0] if len(keys) == 1 else name
    raise HarnessError(f"study {name!r} was recorded with several presets "
                       f"({', '.join(keys) or 'none'}); pass --preset")


def not_recorded(key: str, keys: list[str], uri: str) -> HarnessError:
    return HarnessError(f"study {key!r} is not recorded in {uri} (recorded: "
                        f"{', '.join(keys) or 'none'})")


def parent_run(client: MlflowClient, name: str, preset: str | None, uri: str) -> Run:
    """Study `name`'s parent run for `preset` (the first, should a race have made two)."""
    experiment_id = recorded_experiment(client, name, uri)
    parents = runs_with_tags(client, [experiment_id], {schema.ROLE: schema.ROLE_STUDY})
    keys = sorted({run.data.tags.get(schema.STUDY_KEY, "") for run in parents})
    key = recorded_key(name, preset, keys)
    mine = [run for run in parents if run.data.tags.get(schema.STUDY_KEY) == key]
    if not mine:
        raise not_recorded(key, keys, uri)
    return min(mine, key=lambda run: run.info.start_time)
