"""The study runner: equal-budget tuning per method, then every final seed of each best config.

Protocol
--------
- phase `tune`: for each method its own Optuna study `<key>/tune/<method>` (TPE over that
  method's search space, objective = clean *validation* mIoU, the median over
  `tuning.seeds`). Every method gets exactly `tuning.trials_per_method` finished trials
  (COMPLETE, or PRUNED when training diverged — a divergence is a result and uses budget),
  however many workers share the study.
- phase `final`: for each method, its best tuned config × every seed in `final_seeds`, in
  `<key>/final/<method>`; these runs are the ones compared on the test split. Each final
  trial and run names the tuning trial whose hyperparameters it trained with (user attr
  `tune_trial`, tag `harness.tune_trial`). When the best tuning trial changes (a larger
  budget found a better one), the finals are trained again from the new best and the old
  ones are kept but superseded (:mod:`harness.experiment.supersede`), their ensembles too.
- ensembles: each is one queued trial in `<key>/ensemble/<name>`, so exactly one worker
  evaluates it; its slot names its member runs, so new members make it run again.

Both phases are work queues (:mod:`harness.experiment.queue`): each tuning slot and each
final seed is one queued Optuna trial that exactly one worker claims and runs; an interrupted
worker hands its slot back, a dead one's slot is freed once its heartbeat is stale. A worker
moves on from a phase only when no trial of it is queued or running, so the best tuned
configuration is chosen from the whole budget.

Every trial is an MLflow child run under one parent run per study (`harness.role=study`); the
Optuna trial records its run id in user attr `mlflow_run_id`. Running again resumes: finished
trials are skipped.
"""

from __future__ import annotations

import itertools
import statistics
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from harness import interrupt
from harness.config import StudyConfig, dump_yaml
from harness.errors import HarnessError
from harness.experiment import queue
from harness.experiment.base import starting_weights
from harness.experiment.ensemble import ensemble_members, recorded_ensemble, run_ensemble
from harness.experiment.reference import reference_names, reference_runs
from harness.experiment.supersede import current, supersede_finals
from harness.experiment.trial import TrialSpec, method_hparams, run_trial, study_tags
from harness.model import build_model
from harness.optim import Hparams, get_method
from harness.tracking import schema
from harness.tracking.mlflow_log import flatten, log_metrics, log_params, log_text, runs_with_tags
from harness.tracking.notes import describe_study
from harness.tracking.store import get_experiment_id, optuna_storage, tracking_client
from harness.train.loop import TrainingDiverged


def study_key(cfg: StudyConfig) -> str:
    return schema.study_key(cfg.name, cfg.preset)


def optuna_name(cfg: StudyConfig, phase: str, method: str) -> str:
    return schema.optuna_study_name(study_key(cfg), phase, method)


@dataclass
class StudyContext:
    cfg: StudyConfig
    storage: optuna.storages.BaseStorage
    client: object
    experiment_id: str
    parent_run_id: str
    progress: bool = True


def _sampler(cfg: StudyConfig, method: str, n_existing: int) -> optuna.samplers.BaseSampler:
    t = cfg.tuning
    # Offset the seed by the trials already run so a resumed study does not replay suggestions.
    seed = (t.sampler_seed + zlib.crc32(method.encode()) + n_existing) % 2**31
    if t.sampler == "grid":  # every trial is a queued grid point: nothing left to sample
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=t.n_startup_trials, multivariate=t.multivariate,
        constant_liar=t.constant_liar,
    )


def _suggest(trial: optuna.Trial, cfg: StudyConfig, method: str) -> Hparams:
    values = {}
    for name, space in cfg.methods[method].search.items():
        if space.choices is not None:
            values[name] = trial.suggest_categorical(name, space.choices)
        else:
            values[name] = trial.suggest_float(name, space.low, space.high, log=space.log)
    return method_hparams(cfg, method, values)


def _run(ctx: StudyContext, trial: optuna.Trial, method: str, phase: str, seed: int,
         hparams: Hparams, bar: tqdm, tags: dict[str, str] | None = None) -> float:
    """One trial's MLflow run (with `tags` besides the usual); its validation mIoU, or
    TrialPruned when training diverged."""
    interrupt.check()
    spec = TrialSpec(method, hparams, seed, phase, trial.number,
                     tags={schema.OPTUNA_STUDY: trial.study.study_name, **(tags or {})})
    try:
        metrics = run_trial(
            ctx.cfg, spec, ctx.client, ctx.experiment_id, ctx.parent_run_id,
            on_run_created=lambda rid: _record_run(trial, rid),
            progress=ctx.progress,
        )
    except TrainingDiverged as exc:
        trial.set_user_attr(schema.ATTR_FAIL_REASON, str(exc))
        bar.update()
        bar.write(f"{method} {phase} #{trial.number}: diverged ({exc})")
        raise optuna.TrialPruned(str(exc)) from None
    bar.update()
    bar.write(f"{method} {phase} #{trial.number} seed {seed}: val mIoU "
              f"{metrics.get(schema.VAL_MIOU, float('nan')):.4f}  test mIoU "
              f"{metrics.get(schema.TEST_MIOU, float('nan')):.4f}")
    return metrics[schema.VAL_MIOU]


def _record_run(trial: optuna.Trial, run_id: str) -> None:
    """The trial's first MLflow run is its run; a multi-seed tuning trial lists them all."""
    if schema.ATTR_RUN_ID not in trial.user_attrs:
        trial.set_user_attr(schema.ATTR_RUN_ID, run_id)
    trial.set_user_attr(schema.ATTR_RUN_IDS,
                        [*trial.user_attrs.get(schema.ATTR_RUN_IDS, []), run_id])


def _tune_objective(ctx: StudyContext, method: str, bar: tqdm) -> Callable:
    def objective(trial: optuna.Trial) -> float:
        seeds = tuning_seeds(ctx.cfg)
        hparams = _suggest(trial, ctx.cfg, method)
        trial.set_user_attr(schema.ATTR_SEED, seeds[0])
        trial.set_user_attr(schema.ATTR_SEEDS, seeds)
        trial.set_user_attr(schema.ATTR_HPARAMS, hparams.as_dict())
        # the median over seeds: one lucky or unlucky initialisation does not pick the config
        return statistics.median(_run(ctx, trial, method, schema.PHASE_TUNE, seed, hparams, bar)
                                 for seed in seeds)
    return objective


def tuning_seeds(cfg: StudyConfig) -> list[int]:
    """The training seeds each tuning trial is scored over (``tuning.seeds``, else
    ``tuning.seed`` alone)."""
    return list(cfg.tuning.seeds) or [cfg.tuning.seed]


def _close_orphans(ctx: StudyContext, study: optuna.Study) -> None:
    """Mark KILLED the runs of failed trials that were left RUNNING.

    A trial's own handler closes its run on Ctrl+C, but not when the process was killed, nor
    when the interrupt landed inside an MLflow write and the closing write failed too.
    """
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = trial.user_attrs.get(schema.ATTR_RUN_ID)
        if run_id and ctx.client.get_run(run_id).info.status == "RUNNING":
            ctx.client.set_terminated(run_id, "KILLED")


def _label(study: optuna.Study, ctx: StudyContext, phase: str, method: str) -> None:
    for key, value in {schema.STUDY: ctx.cfg.name, schema.PRESET: ctx.cfg.preset or "",
                       "phase": phase, "method": method}.items():
        study.set_user_attr(key, value)
    _close_orphans(ctx, study)


def _tune(ctx: StudyContext, method: str, bar: tqdm) -> optuna.Study:
    """Every method gets exactly ``trials_per_method`` tuning trials (finished or diverged),
    however many workers share the study: each is a queued slot, run once."""
    t = ctx.cfg.tuning

    def prepare(study: optuna.Study) -> None:
        _label(study, ctx, schema.PHASE_TUNE, method)
        study.sampler = _sampler(ctx.cfg, method, len(study.trials))
        # a grid is run as queued points (no sampler involved), but it is still a grid search
        name = "GridSampler" if t.sampler == "grid" else type(study.sampler).__name__
        study.set_user_attr(schema.ATTR_SAMPLER, {
            "name": name, "seed": t.sampler_seed,
            "n_startup_trials": t.n_startup_trials, "multivariate": t.multivariate,
            "constant_liar": t.constant_liar})

    return queue.drain(ctx.storage, optuna_name(ctx.cfg, schema.PHASE_TUNE, method),
                       _tuning_slots(ctx.cfg, method), _tune_objective(ctx, method, bar),
                       prepare)


def tuning_budget(cfg: StudyConfig, method: str) -> int:
    """How many tuning trials `method` gets: ``trials_per_method``, or its grid's size."""
    return len(_tuning_slots(cfg, method))


def _tuning_slots(cfg: StudyConfig, method: str) -> dict[int, dict]:
    """The tuning budget as slots: TPE samples each trial; a grid fixes each to one point."""
    if cfg.tuning.sampler != "grid":
        return {i: {} for i in range(cfg.tuning.trials_per_method)}
    space = cfg.methods[method].search
    points = itertools.product(*(p.choices for p in space.values()))
    return {i: {queue.PARAMS: dict(zip(space, point))} for i, point in enumerate(points)}


UNTUNED = -1  # the "tuning trial" of finals that train the configured values


def _best(ctx: StudyContext, method: str, tuned: optuna.Study) -> tuple[int, Hparams] | None:
    """The tuning trial the finals train (its number and values), or None when every one
    diverged. Without tuning, the configured values, as trial number -1."""
    if ctx.cfg.tuning.trials_per_method == 0:
        return UNTUNED, method_hparams(ctx.cfg, method, {})
    complete = tuned.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    best = max(complete, key=lambda t: t.value)  # ties: the earlier trial
    return best.number, get_method(method).from_dict(best.user_attrs[schema.ATTR_HPARAMS])


def _final(ctx: StudyContext, method: str, tuned: optuna.Study, bar: tqdm) -> None:
    chosen = _best(ctx, method, tuned)
    if chosen is None:
        bar.write(f"{method}: every tuning trial diverged; no final runs")
        ctx.client.set_tag(ctx.parent_run_id, schema.no_final(method),
                           "every tuning trial diverged")
        return
    best, hparams = chosen

    def prepare(study: optuna.Study) -> None:
        _label(study, ctx, schema.PHASE_FINAL, method)
        study.set_user_attr(schema.ATTR_BEST_TUNE_TRIAL, best)
        superseded = supersede_finals(ctx.client, ctx.experiment_id, ctx.parent_run_id,
                                      method, best)
        if superseded:
            bar.write(f"{method}: tuning trial #{best} is the best now; "
                      f"{len(superseded)} final/ensemble run(s) of the previous best are "
                      "superseded and trained again")

    def work(trial: optuna.Trial) -> float:
        # a trial's own attrs say what it trains: the weights and their provenance agree
        return _run(ctx, trial, method, schema.PHASE_FINAL, trial.user_attrs[schema.ATTR_SEED],
                    get_method(method).from_dict(trial.user_attrs[schema.ATTR_HPARAMS]), bar,
                    tags={schema.TUNE_TRIAL: str(trial.user_attrs.get(schema.ATTR_TUNE_TRIAL))})

    # the tuning trial is part of the slot's work: a new best queues every seed again
    slots = {seed: {schema.ATTR_SEED: seed, schema.ATTR_HPARAMS: hparams.as_dict(),
                    schema.ATTR_TUNE_TRIAL: best}
             for seed in ctx.cfg.final_seeds}
    queue.drain(ctx.storage, optuna_name(ctx.cfg, schema.PHASE_FINAL, method), slots, work,
                prepare)
    # a worker started with a smaller budget (an older best) may have finished one since
    supersede_finals(ctx.client, ctx.experiment_id, ctx.parent_run_id, method, best)


def _ensemble(ctx: StudyContext, name: str, bar: tqdm) -> None:
    """Ensemble `name` evaluated once, by one worker: a queued trial whose slot names the
    member runs (new members after a change of best make it a new slot)."""
    members = ensemble_members(ctx.cfg, name, ctx.client, ctx.experiment_id,
                               ctx.parent_run_id)
    bar.update()
    if members is None:
        return

    def work(trial: optuna.Trial) -> float:
        metrics = run_ensemble(ctx.cfg, name, ctx.client, ctx.experiment_id,
                               ctx.parent_run_id, ctx.progress,
                               on_run_created=lambda rid: _record_run(trial, rid))
        if metrics is None:  # recorded by a worker that died before closing its trial
            recorded = recorded_ensemble(ctx.cfg, name, ctx.client, ctx.experiment_id,
                                         ctx.parent_run_id)
            return recorded.data.metrics[schema.VAL_MIOU]
        bar.write(f"{name} ensemble: val mIoU {metrics.get(schema.VAL_MIOU, float('nan')):.4f}"
                  f"  test mIoU {metrics.get(schema.TEST_MIOU, float('nan')):.4f}  inference "
                  f"×{metrics[schema.COST_INFER_RATIO]:.2f} of one member")
        return metrics[schema.VAL_MIOU]

    slot = {schema.ATTR_MEMBERS: [run.info.run_id for run in members]}
    queue.drain(ctx.storage, optuna_name(ctx.cfg, schema.PHASE_ENSEMBLE, name), {name: slot},
                work, lambda study: _label(study, ctx, schema.PHASE_ENSEMBLE, name))


def record_references(ctx: StudyContext, echo: Callable[[str], None]) -> None:
    """Every reference run (priors, zero-shot) recorded exactly once: each is the one queued
    slot of its own Optuna study, like an ensemble. A process killed while recording one
    leaves a RUNNING trial; a later start fails it once its heartbeat is stale, closes its
    MLflow run (KILLED) and records the reference again."""
    for role, name in reference_names(ctx.cfg):
        def work(trial: optuna.Trial, role=role, name=name) -> float:
            recorded = reference_runs(ctx.cfg, ctx.client, ctx.experiment_id,
                                      ctx.parent_run_id, ctx.progress, [(role, name)],
                                      lambda run_id: _record_run(trial, run_id))
            metrics = recorded.get(name, {})
            if metrics:
                echo(f"{name} reference: val mIoU "
                     f"{metrics.get(schema.VAL_MIOU, float('nan')):.4f}  test mIoU "
                     f"{metrics.get(schema.TEST_MIOU, float('nan')):.4f}")
            return metrics.get(schema.VAL_MIOU, 0.0)  # the run is the result, not this

        queue.drain(ctx.storage, optuna_name(ctx.cfg, schema.PHASE_REFERENCE, name),
                    {name: {}}, work,
                    lambda study, name=name: _label(study, ctx, schema.PHASE_REFERENCE, name))


def _parent_run(client, experiment_id: str, cfg: StudyConfig) -> str:
    """The study's parent run (created on first use); refuses a changed configuration."""
    key = study_key(cfg)
    runs = runs_with_tags(client, [experiment_id], {schema.ROLE: schema.ROLE_STUDY,
                                                     schema.STUDY_KEY: key})
    recorded_cfg = {k: str(v) for k, v in flatten(
        {k: v for k, v in cfg.to_dict().items() if k != "presets"}).items()}
    if runs:
        run = sorted(runs, key=lambda r: r.info.start_time)[0]
        changed = sorted(k for k, v in recorded_cfg.items()
                         if k in run.data.params and run.data.params[k] != v
                         and not k.startswith(schema.RESUMABLE_PARAMS))
        if changed:
            raise HarnessError(
                f"study {key!r} was recorded with a different configuration (changed: "
                f"{', '.join(changed)}); rename the study or use another HARNESS_HOME")
        client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id
    run = client.create_run(experiment_id, tags={
        schema.ROLE: schema.ROLE_STUDY, **study_tags(cfg), schema.STUDY_KEY: key,
        schema.RUN_NAME: key})
    log_params(client, run.info.run_id, {k: v for k, v in recorded_cfg.items()
                                         if not k.startswith(schema.RESUMABLE_PARAMS)})
    log_text(client, run.info.run_id, dump_yaml(cfg), schema.STUDY_ARTIFACT)
    return run.info.run_id


def open_study(cfg: StudyConfig, storage_url: str | None = None,
               tracking_uri: str | None = None, progress: bool = True) -> StudyContext:
    """The study's stores, MLflow experiment and parent run, created (or checked against the
    recorded configuration) once: what parallel workers need to exist before they start."""
    # the harness reports every trial itself; Optuna would add a traceback for an interrupt
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if cfg.model.checkpoint is not None:
        # a wrong or missing checkpoint is the user's to fix before anything is recorded
        build_model(cfg.model.preset, cfg.model.checkpoint, cfg.model.trainable,
                    cfg.model.lora_spec())
    client = tracking_client(tracking_uri)
    experiment_id = get_experiment_id(client, cfg.name)
    storage = optuna_storage(storage_url, cfg.tuning.heartbeat_seconds, cfg.tuning.grace_seconds)
    ctx = StudyContext(cfg, storage, client, experiment_id,
                       _parent_run(client, experiment_id, cfg), progress)
    describe_study(client, experiment_id, ctx.parent_run_id, cfg.description, cfg.preset)
    return ctx


def run_study(cfg: StudyConfig, storage_url: str | None = None, tracking_uri: str | None = None,
              progress: bool = True) -> dict:
    """Run (or resume) the whole study; returns a summary {method: {phase: n_done}}."""
    ctx = open_study(cfg, storage_url, tracking_uri, progress)
    client = ctx.client
    total = (len(cfg.methods) * (cfg.tuning.trials_per_method * len(tuning_seeds(cfg))
                                 + len(cfg.final_seeds)) + len(cfg.ensembles))
    bar = tqdm(total=total, desc=f"study {study_key(cfg)}", disable=not progress)
    try:
        starting_weights(cfg, client, progress)  # a base is built once, before any trial
        tuned = {m: _tune(ctx, m, bar) for m in cfg.methods}
        for method, study in tuned.items():
            _final(ctx, method, study, bar)
        for name in cfg.ensembles:
            _ensemble(ctx, name, bar)
        record_references(ctx, bar.write)
    except BaseException:
        client.set_terminated(ctx.parent_run_id, "KILLED")
        raise
    finally:
        bar.close()
    summary = study_status(cfg, storage_url, tracking_uri)
    _log_parent_summary(ctx)
    client.set_terminated(ctx.parent_run_id, "FINISHED")
    return summary


def _log_parent_summary(ctx: StudyContext) -> None:
    """Mean final test mIoU per method on the parent run, for a glance in the MLflow UI."""
    metrics = {}
    for method in [*ctx.cfg.methods, *ctx.cfg.ensembles]:
        runs = current(runs_with_tags(ctx.client, [ctx.experiment_id], {
            schema.PARENT_RUN: ctx.parent_run_id, schema.METHOD: method,
            schema.PHASE: schema.PHASE_FINAL, schema.STATUS: schema.STATUS_OK}))
        values = [r.data.metrics[schema.TEST_MIOU] for r in runs
                  if schema.TEST_MIOU in r.data.metrics]
        if values:
            metrics[schema.parent_metric(method, "test_miou_mean")] = sum(values) / len(values)
            metrics[schema.parent_metric(method, "n")] = len(values)
    log_metrics(ctx.client, ctx.parent_run_id, metrics)


def study_status(cfg: StudyConfig, storage_url: str | None = None,
                 tracking_uri: str | None = None) -> dict:
    """{method: {phase: {state_name: count}}} from the Optuna storage; ensembles and
    reference runs as {name: {"final": {run_status: count}}} from MLflow. Superseded final
    trials and runs (of a previous best configuration) are not counted."""
    storage = optuna_storage(storage_url)
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    out: dict = {}
    for method in cfg.methods:
        for phase in schema.PHASES:
            name = optuna_name(cfg, phase, method)
            counts: dict[str, int] = {}
            if name in existing:
                study = optuna.load_study(study_name=name, storage=storage)
                for t in _current_trials(study, phase):
                    counts[t.state.name] = counts.get(t.state.name, 0) + 1
            out.setdefault(method, {})[phase] = counts
    recorded = [(schema.ROLE_ENSEMBLE, name) for name in cfg.ensembles]
    recorded += [(role, name) for role, name in reference_names(cfg)]
    if recorded:
        out.update(_run_status(cfg, tracking_uri, recorded))
    return out


def _current_trials(study: optuna.Study, phase: str) -> list:
    """`study`'s trials that are results: in the final phase, those of the best tuning
    trial the finals were last queued for."""
    trials = study.get_trials(deepcopy=False)
    if phase != schema.PHASE_FINAL:
        return trials
    best = study.user_attrs.get(schema.ATTR_BEST_TUNE_TRIAL)
    return [t for t in trials if t.user_attrs.get(schema.ATTR_TUNE_TRIAL) == best]


def _run_status(cfg: StudyConfig, tracking_uri: str | None,
                recorded: list[tuple[str, str]]) -> dict:
    """Runs without Optuna trials (ensembles, references): {name: {"final": {status: n}}}."""
    client = tracking_client(tracking_uri)
    experiment = client.get_experiment_by_name(cfg.name)
    parents = [] if experiment is None else runs_with_tags(client, [experiment.experiment_id], {
        schema.ROLE: schema.ROLE_STUDY, schema.STUDY_KEY: study_key(cfg)})
    out: dict = {}
    for role, name in recorded:
        counts: dict[str, int] = {}
        for parent in parents:
            for run in current(runs_with_tags(client, [experiment.experiment_id], {
                    schema.PARENT_RUN: parent.info.run_id, schema.ROLE: role,
                    schema.METHOD: name})):
                counts[run.info.status] = counts.get(run.info.status, 0) + 1
        out[name] = {"final": counts}
    return out


def list_studies(storage_url: str | None = None) -> dict[str, dict[str, int]]:
    """{study key: {"<phase>/<method>": n_trials}} for every harness study in the storage."""
    out: dict[str, dict[str, int]] = {}
    for summary in optuna.get_all_study_summaries(optuna_storage(storage_url)):
        key, rest = schema.parse_optuna_study_name(summary.study_name)
        if rest.startswith(f"{schema.PHASE_REFERENCE}/"):  # bookkeeping: one slot per prior
            out.setdefault(key, {})
            continue
        out.setdefault(key, {})[rest] = summary.n_trials
    return out
