"""SAM-E in a study: an ensemble of a method's final runs, recorded as its own MLflow run.

The ensemble trains nothing. Its run (tags ``harness.role=ensemble``, ``harness.method=<name>``,
``harness.phase=final``) links its members (tag ``harness.members``: run ids in seed order;
param ``member_run_ids``; a Markdown note with links), and holds the same clean, shift and
Boundary IoU metrics as a single model, plus costs:

- ``cost/train_seconds``, ``cost/step_seconds``, ``cost/wall_seconds``: the members' sums
  (K models were trained);
- ``cost/peak_memory_mb``: the largest member's training peak (members train one at a time);
  ``cost/infer_peak_memory_mb``: measured while the ensemble predicted;
- ``cost/infer_ms_per_image`` and ``cost/member_infer_ms_per_image``: medians of interleaved
  timings on the test split, and their ratio ``cost/infer_ratio_vs_member`` (≈ K expected).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from mlflow.tracking import MlflowClient

from harness.config import StudyConfig, dump_yaml
from harness.data import SegDataset
from harness.data.sources import load_splits
from harness.evaluate.ensemble import Ensemble
from harness.evaluate.segment import predict_dataset
from harness.experiment.costs import PeakMemory
from harness.experiment.ondemand import load_logged_model
from harness.experiment.outcome import create_run, recorded_outcome
from harness.experiment.supersede import current
from harness.experiment.trial import clean_metrics, evaluate_extras, study_tags
from harness.tracking import schema
from harness.tracking.mlflow_log import log_metrics, log_params, log_text, runs_with_tags

TIMING_REPEATS = 3
SUMMED_COSTS = (schema.COST_TRAIN, schema.COST_STEP, schema.COST_WALL)


def ensemble_seeds(cfg: StudyConfig, name: str) -> list[int]:
    ens = cfg.ensembles[name]
    return list(cfg.final_seeds[:ens.size or len(cfg.final_seeds)])


def ensemble_key(cfg: StudyConfig, name: str) -> str:
    """What makes two ensemble runs the same ensemble: members, their seeds, aggregation."""
    ens = cfg.ensembles[name]
    seeds = ",".join(map(str, ensemble_seeds(cfg, name)))
    return f"{ens.members}:seeds={seeds}:{ens.aggregation}"


def member_runs(client: MlflowClient, experiment_id: str, parent_run_id: str, method: str,
                seeds: list[int]) -> dict[int, object]:
    """{seed: finished, current final run of `method`} for the seeds that have one."""
    runs = current(runs_with_tags(client, [experiment_id], {
        schema.PARENT_RUN: parent_run_id, schema.ROLE: schema.ROLE_TRIAL, schema.METHOD: method,
        schema.PHASE: schema.PHASE_FINAL, schema.STATUS: schema.STATUS_OK}))
    by_seed = {int(r.data.tags[schema.SEED]): r for r in runs if r.info.status == "FINISHED"}
    return {s: by_seed[s] for s in seeds if s in by_seed}


def ensemble_members(cfg: StudyConfig, name: str, client: MlflowClient, experiment_id: str,
                     parent_run_id: str) -> list | None:
    """The member runs of ensemble `name`, in seed order; None when some are missing (then
    the parent run gets tag ``harness.no_final.<name>``)."""
    ens = cfg.ensembles[name]
    seeds = ensemble_seeds(cfg, name)
    members = member_runs(client, experiment_id, parent_run_id, ens.members, seeds)
    missing = [s for s in seeds if s not in members]
    if missing:
        client.set_tag(parent_run_id, schema.no_final(name),
                       f"no finished {ens.members} final run for seed(s) "
                       f"{', '.join(map(str, missing))}")
        return None
    return [members[s] for s in seeds]


def recorded_ensemble(cfg: StudyConfig, name: str, client: MlflowClient, experiment_id: str,
                      parent_run_id: str):
    """The current, successful run of ensemble `name` (its members and aggregation as
    configured), or None."""
    runs = current(runs_with_tags(client, [experiment_id], {
        schema.PARENT_RUN: parent_run_id, schema.ROLE: schema.ROLE_ENSEMBLE,
        schema.ENSEMBLE_KEY: ensemble_key(cfg, name), schema.STATUS: schema.STATUS_OK}))
    return runs[0] if runs else None


def run_ensemble(cfg: StudyConfig, name: str, client: MlflowClient, experiment_id: str,
                 parent_run_id: str, progress: bool = True,
                 on_run_created: Callable[[str], None] | None = None) -> dict[str, float] | None:
    """Evaluate ensemble `name` of the study and record it; None when it exists already or
    members are missing (then the parent run gets tag ``harness.no_final.<name>``).
    `on_run_created(run_id)` is called as soon as its run exists."""
    if recorded_ensemble(cfg, name, client, experiment_id, parent_run_id) is not None:
        return None
    members = ensemble_members(cfg, name, client, experiment_id, parent_run_id)
    if members is None:
        return None
    seeds = ensemble_seeds(cfg, name)
    key = ensemble_key(cfg, name)
    ids = [r.info.run_id for r in members]
    run = create_run(client, experiment_id, {
        schema.PARENT_RUN: parent_run_id, schema.RUN_NAME: f"{name}-k{len(ids)}",
        **study_tags(cfg), schema.METHOD: name, schema.PHASE: schema.PHASE_FINAL,
        schema.ROLE: schema.ROLE_ENSEMBLE, schema.ENSEMBLE_KEY: key,
        schema.MEMBERS: ",".join(ids),
        schema.NOTE: "Members:\n" + "\n".join(
            f"- seed {s}: [{i}](#/experiments/{experiment_id}/runs/{i})"
            for s, i in zip(seeds, ids)),
    })
    with recorded_outcome(client, run.info.run_id):
        if on_run_created is not None:
            on_run_created(run.info.run_id)
        return _evaluate(cfg, name, seeds, members, client, run.info.run_id, progress)


def _evaluate(cfg: StudyConfig, name: str, seeds: list[int], members: list,
              client: MlflowClient, run_id: str, progress: bool) -> dict[str, float]:
    ens = cfg.ensembles[name]
    log_params(client, run_id, {
        "method": name, "phase": "final", schema.PARAM_MEMBERS: ens.members,
        schema.PARAM_ENSEMBLE_SIZE: len(members), schema.PARAM_AGGREGATION: ens.aggregation,
        "member_seeds": seeds,
        "member_run_ids": ",".join(r.info.run_id for r in members),
        "model": cfg.model.__dict__, "data": cfg.data.__dict__, "study": cfg.name,
        "preset": cfg.preset or ""})
    log_text(client, run_id, dump_yaml({"ensemble": {"name": name, **ens.__dict__},
                                        "study": cfg.to_dict()}), schema.CONFIG_ARTIFACT)
    models = [load_logged_model(r.info.run_id, client=client)[2] for r in members]
    ensemble = Ensemble(models, ens.aggregation)
    # no probes on an ensemble, so no training split: only what is evaluated
    splits = load_splits(cfg.data, tuple(dict.fromkeys([*cfg.evaluate.splits, "test"])))

    with PeakMemory(next(ensemble.parameters()).device) as memory:
        summary = clean_metrics(cfg, ensemble, splits, client, run_id)
    summary[schema.COST_INFER_MEMORY] = memory.peak_mb
    # replaces the single timing above with interleaved, repeated ones beside a member
    summary.update(inference_cost(ensemble, models[0], splits["test"],
                                  cfg.train.eval_batch_size))
    for key in SUMMED_COSTS:
        values = [r.data.metrics.get(key) for r in members]
        if None not in values:
            summary[key] = float(sum(values))
    peaks = [r.data.metrics.get(schema.COST_MEMORY) for r in members]
    if None not in peaks:
        summary[schema.COST_MEMORY] = float(max(peaks))
    log_metrics(client, run_id, summary)
    extra = evaluate_extras(cfg, ensemble, splits, client, run_id, progress, probes=False,
                            test_miou=summary.get(schema.TEST_MIOU))
    log_metrics(client, run_id, extra)
    return {**summary, **extra}


def inference_cost(ensemble: Ensemble, member, dataset: SegDataset,
                   batch_size: int) -> dict[str, float]:
    """Per-image prediction time of the ensemble and of one member, timed alternately in this
    process (medians of TIMING_REPEATS each), and their ratio."""
    times: dict[str, list[float]] = {"member": [], "ensemble": []}
    for _ in range(TIMING_REPEATS):
        for label, model in (("member", member), ("ensemble", ensemble)):
            start = time.perf_counter()
            predict_dataset(model, dataset, batch_size=batch_size)
            times[label].append(time.perf_counter() - start)
    per_image = {k: 1000 * statistics.median(v) / len(dataset.images) for k, v in times.items()}
    return {schema.COST_INFER: per_image["ensemble"],
            schema.COST_MEMBER_INFER: per_image["member"],
            schema.COST_INFER_RATIO: per_image["ensemble"] / per_image["member"]}
