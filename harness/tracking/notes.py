"""Descriptions MLflow shows on a study's experiment and parent run (tag mlflow.note.content).

The UI puts a run's or an experiment's note above its page, so someone browsing the store
sees what a study asks and which presets were run without opening its YAML.
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from harness.tracking import schema
from harness.tracking.mlflow_log import runs_with_tags


def describe_study(client: MlflowClient, experiment_id: str, parent_run_id: str,
                   description: str, preset: str | None) -> None:
    """Note the study YAML's `description` and the preset on the parent run, and on the
    experiment (shared by every preset of the study) the presets it holds."""
    text = description.strip() or "(the study YAML has no description)"
    client.set_tag(parent_run_id, schema.NOTE, f"{text}\n\nPreset: {preset or 'none'}")
    parents = runs_with_tags(client, [experiment_id], {schema.ROLE: schema.ROLE_STUDY})
    presets = sorted({run.data.tags.get(schema.PRESET) or "none" for run in parents})
    client.set_experiment_tag(experiment_id, schema.NOTE, (
        f"{text}\n\nPresets recorded: {', '.join(presets)}; one parent run per preset, "
        "its trials nested under it."))
