"""Read one recorded study back from MLflow: its runs as one tidy table, its config, its methods.

Read-only: a store that does not exist is an error, never created, and MLflow's process-wide
tracking URI is left alone (see `mlflow_read`). One row per trial or ensemble run, with
MLflow's own column names (`schema.metric_column`, `params.<name>`, `schema.tag_column`) plus
the columns every section needs: `method`, `phase`, `role`, `seed`, `ok`, `outcome`,
`fail_reason`. A "final" run is any trial or ensemble run of phase `final`; runs tagged
superseded (trained from a method's previous best configuration) are left out. The
reference runs (prompt-only priors, the zero-shot model) are kept apart in `references`:
they are not methods, and no section should average or tune over them by accident.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import yaml
from mlflow.tracking import MlflowClient

from harness.errors import HarnessError
from harness.report.mlflow_read import read_artifact, runs_frame
from harness.tracking import schema
from harness.tracking.schema import metric_column, tag_column
from harness.tracking.store import default_storage_url, default_tracking_uri
from harness.tracking.studies import not_recorded, recorded_experiment, recorded_key, require_store

REFERENCE = "adamw"
# how a run ended, beyond harness.status: interrupted (KILLED), still running, or failed
# without saying why (a crash outside training)
KILLED, RUNNING, FAILED = "killed", "running", "failed"


@dataclass
class StudyData:
    name: str
    key: str
    preset: str
    parent: pd.Series  # the study's parent run (MLflow columns)
    runs: pd.DataFrame  # every trial / ensemble run of the study, all methods
    methods: list[str]  # the methods the report shows, reference first
    all_methods: list[str]  # every method of the study (colours do not depend on a filter)
    config: dict  # parsed study.yaml; {} when the artifact is missing
    config_text: str
    client: MlflowClient
    tracking_uri: str
    storage_url: str
    no_final: dict[str, str] = field(default_factory=dict)  # method -> why it has no finals
    # successful reference runs (baselines, zero-shot), same columns as `runs`; may be empty
    references: pd.DataFrame = field(default_factory=pd.DataFrame)
    _finals: dict = field(default_factory=dict, repr=False)

    def final(self, method: str | None = None) -> pd.DataFrame:
        """Successful final runs (of `method`), ordered by seed. Cached: sections ask often
        and the frame is wide (one column per metric)."""
        if method not in self._finals:
            runs = self.runs[(self.runs["phase"] == schema.PHASE_FINAL) & self.runs["ok"]]
            if method is not None:
                runs = runs[runs["method"] == method]
            self._finals[method] = runs.sort_values("seed")
        return self._finals[method]

    def column(self, runs: pd.DataFrame, name: str) -> pd.Series:
        """Metric `name` of `runs` (NaN where a run lacks it)."""
        col = metric_column(name)
        return runs[col] if col in runs.columns else pd.Series(math.nan, index=runs.index)

    def by_seed(self, method: str, metric: str) -> dict:
        runs = self.final(method)
        return dict(zip(runs["seed"], self.column(runs, metric)))

    def failure(self, method: str) -> str | None:
        """Why `method` has no successful final run, or None when it has one."""
        if len(self.final(method)):
            return None
        if method in self.no_final:
            return self.no_final[method]
        runs = self.runs[self.runs["method"] == method]
        if runs.empty:
            return "no runs were recorded"
        finals = runs[runs["phase"] == schema.PHASE_FINAL]
        reasons = [r for r in finals["fail_reason"] if r]
        if reasons:
            return f"every final run failed ({reasons[0]})"
        if finals.empty:
            return "no final runs were recorded (tuning unfinished or every trial failed)"
        return "its final runs have not finished"


def _parent(client: MlflowClient, experiment_id: str, name: str, preset: str | None,
            uri: str) -> tuple[pd.Series, pd.DataFrame]:
    runs = runs_frame(client, [experiment_id])
    key_col = tag_column(schema.STUDY_KEY)
    role = runs.get(tag_column(schema.ROLE), pd.Series(dtype=object))
    parents = runs[role == schema.ROLE_STUDY]
    keys = sorted(set(parents.get(key_col, pd.Series(dtype=object))))
    key = recorded_key(name, preset, keys)
    mine = parents[parents[key_col] == key] if keys else parents.iloc[:0]
    if mine.empty:
        raise not_recorded(key, keys, uri)
    return mine.sort_values("start_time").iloc[0], runs


def _tag(runs: pd.DataFrame, name: str) -> pd.Series:
    col = tag_column(name)
    return runs[col].fillna("") if col in runs.columns else pd.Series("", index=runs.index)


def _outcome(status: str, mlflow_status: str) -> str:
    """ok / diverged / collapsed from the harness tag; without one (an ensemble, an older or
    an interrupted run) MLflow's own status decides."""
    if status:
        return status
    return {"FINISHED": schema.STATUS_OK, "KILLED": KILLED, "FAILED": FAILED}.get(
        mlflow_status, RUNNING)


def _tidy(runs: pd.DataFrame, parent: pd.Series, name: str, preset: str,
          roles: tuple[str, ...]) -> pd.DataFrame:
    parent_id = _tag(runs, schema.PARENT_RUN)
    ours = (parent_id == parent["run_id"]) | (
        (parent_id == "") & (_tag(runs, schema.STUDY) == name)
        & (_tag(runs, schema.PRESET) == preset))
    # superseded runs (of a method's previous best configuration) are a record, not a result
    current = _tag(runs, schema.SUPERSEDED) == ""
    runs = runs[ours & current & _tag(runs, schema.ROLE).isin(roles)].copy()
    runs["method"] = _tag(runs, schema.METHOD)
    runs["phase"] = _tag(runs, schema.PHASE)
    runs["role"] = _tag(runs, schema.ROLE)
    runs["seed"] = pd.to_numeric(_tag(runs, schema.SEED), errors="coerce")
    runs["outcome"] = [_outcome(s, m) for s, m in zip(_tag(runs, schema.STATUS), runs["status"])]
    runs["ok"] = runs["outcome"] == schema.STATUS_OK
    runs["fail_reason"] = _tag(runs, schema.FAIL_REASON)
    return runs.reset_index(drop=True)


def _references(runs: pd.DataFrame, parent: pd.Series, name: str, preset: str) -> pd.DataFrame:
    """The study's successful reference runs, one per name (the latest, should a rerun have
    recorded a second), in the order priors, then zero-shot."""
    refs = _tidy(runs, parent, name, preset, schema.REFERENCE_ROLES)
    refs = refs[refs["ok"] & (refs["phase"] == schema.PHASE_FINAL)]
    refs = refs.sort_values("start_time").drop_duplicates(["role", "method"], keep="last")
    order = {role: i for i, role in enumerate(schema.REFERENCE_ROLES)}
    return refs.sort_values(["role", "method"], key=lambda c: c.map(order) if c.name == "role"
                            else c).reset_index(drop=True)


def _config(client: MlflowClient, run_id: str) -> tuple[dict, str]:
    text = read_artifact(client, run_id, schema.STUDY_ARTIFACT, lambda p: p.read_text())
    if text is None:
        return {}, ""
    return (yaml.safe_load(text) or {}), text


def _order(config: dict, runs: pd.DataFrame) -> list[str]:
    seen = list(config.get("methods") or {}) + list(config.get("ensembles") or {})
    seen += [m for m in runs["method"] if m]
    unique = list(dict.fromkeys(seen))
    return sorted(unique, key=lambda m: (m != REFERENCE, unique.index(m)))


def load_study_data(study: str, preset: str | None = None, tracking_uri: str | None = None,
                    storage_url: str | None = None,
                    methods: list[str] | None = None) -> StudyData:
    """Everything recorded for `study` (an experiment name) with `preset`.

    Without `preset` the only recorded key is used. `methods` restricts what is shown; the
    AdamW reference stays available for ratios and Δ either way.
    """
    uri = tracking_uri or default_tracking_uri()
    require_store(uri, "MLflow store")
    client = MlflowClient(tracking_uri=uri)
    experiment_id = recorded_experiment(client, study, uri)
    parent, all_runs = _parent(client, experiment_id, study, preset, uri)
    key = parent[tag_column(schema.STUDY_KEY)]
    preset_name = parent.get(tag_column(schema.PRESET)) or ""
    runs = _tidy(all_runs, parent, study, preset_name, schema.RUN_ROLES)
    config, text = _config(client, parent["run_id"])
    order = all_methods = _order(config, runs)
    if methods:
        unknown = [m for m in methods if m not in order]
        if unknown:
            raise HarnessError(f"--methods: {', '.join(unknown)} not in study {key!r} "
                               f"(methods: {', '.join(order)})")
        order = [m for m in order if m in methods]
    prefix = tag_column(schema.NO_FINAL_PREFIX)
    no_final = {c[len(prefix):]: parent[c] for c in parent.index
                if c.startswith(prefix) and isinstance(parent[c], str)}
    return StudyData(study, key, preset_name, parent, runs, order, all_methods, config, text,
                     client, uri, storage_url or default_storage_url(), no_final,
                     _references(all_runs, parent, study, preset_name))
