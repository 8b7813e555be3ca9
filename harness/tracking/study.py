"""The study runner: equal-budget tuning per method, then every final seed of each best config.

Protocol
--------
- phase `tune`: for each method its own Optuna study `<key>/tune/<method>` (TPE over that
  method's search space, objective = clean *validation* mIoU). Every method gets exactly
  `tuning.trials_per_method` finished trials (COMPLETE, or PRUNED when training diverged — a
  divergence is a result and uses budget). Trials that crashed or were interrupted are FAIL
  and are redone on the next run.
- phase `final`: for each method, its best tuned config × every seed in `final_seeds`, in
  `<key>/final/<method>`; these runs are the ones compared on the test split.

Every trial is an MLflow child run under one parent run per study (`harness.role=study`); the
Optuna trial records its run id in user attr `mlflow_run_id`. Running again resumes: finished
trials are skipped. Several workers can share one storage (journal file or PostgreSQL).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from harness import interrupt
from harness.config import StudyConfig, dump_yaml
from harness.errors import HarnessError
from harness.tracking.ensemble_run import run_ensemble
from harness.tracking.mlflow_log import flatten, log_metrics, log_params, runs_with_tags
from harness.tracking.store import get_experiment_id, optuna_storage, tracking_client
from harness.tracking.trial import TrialSpec, method_hparams, run_trial
from harness.train.loop import TrainingDiverged

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
PHASES = ("tune", "final")
# Keys that may change between runs of one study without invalidating what was recorded.
RESUMABLE_KEYS = ("tuning.trials_per_method", "final_seeds", "description", "ensembles")


def key_for(name: str, preset: str | None) -> str:
    """A study's key: its name, with the preset when one was applied (``name@preset``)."""
    return f"{name}@{preset}" if preset else name


def study_key(cfg: StudyConfig) -> str:
    return key_for(cfg.name, cfg.preset)


def optuna_study_name(key: str, phase: str, method: str) -> str:
    """The Optuna study holding one phase of one method of the study with `key`."""
    return f"{key}/{phase}/{method}"


def optuna_name(cfg: StudyConfig, phase: str, method: str) -> str:
    return optuna_study_name(study_key(cfg), phase, method)


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
    if t.sampler == "grid":
        # GridSampler itself skips grid points already finished or running in the storage
        space = {name: p.choices for name, p in cfg.methods[method].search.items()}
        return optuna.samplers.GridSampler(space, seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=t.n_startup_trials, multivariate=t.multivariate,
        constant_liar=t.constant_liar,
    )


def _suggest(trial: optuna.Trial, cfg: StudyConfig, method: str) -> dict:
    values = {}
    for name, space in cfg.methods[method].search.items():
        if space.choices is not None:
            values[name] = trial.suggest_categorical(name, space.choices)
        else:
            values[name] = trial.suggest_float(name, space.low, space.high, log=space.log)
    return method_hparams(cfg, method, values)


def _objective(ctx: StudyContext, method: str, phase: str, bar: tqdm, final_hparams=None,
               seeds=None):
    def objective(trial: optuna.Trial) -> float:
        interrupt.check()
        if phase == "tune":
            seed, hparams = ctx.cfg.tuning.seed, _suggest(trial, ctx.cfg, method)
        else:
            seed = _claim_seed(trial, seeds)
            if seed is None:  # another worker took the last seed meanwhile
                trial.set_user_attr("skipped", True)
                trial.study.stop()
                raise optuna.TrialPruned("no final seed left")
            hparams = final_hparams
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("hparams", hparams)
        spec = TrialSpec(method, hparams, seed, phase, trial.number,
                         tags={"optuna.study": trial.study.study_name})
        try:
            metrics = run_trial(
                ctx.cfg, spec, ctx.client, ctx.experiment_id, ctx.parent_run_id,
                on_run_created=lambda rid: trial.set_user_attr("mlflow_run_id", rid),
                progress=ctx.progress,
            )
        except TrainingDiverged as exc:
            trial.set_user_attr("fail_reason", str(exc))
            bar.update()
            bar.write(f"{method} {phase} #{trial.number}: diverged ({exc})")
            raise optuna.TrialPruned(str(exc)) from None
        bar.update()
        bar.write(f"{method} {phase} #{trial.number} seed {seed}: val mIoU "
                  f"{metrics.get('val/miou', float('nan')):.4f}  test mIoU "
                  f"{metrics.get('test/miou', float('nan')):.4f}")
        return metrics["val/miou"]
    return objective


def _claim_seed(trial: optuna.Trial, seeds: list[int]) -> int | None:
    taken = {t.user_attrs.get("seed") for t in trial.study.get_trials(deepcopy=False)
             if t.number != trial.number and (t.state in DONE or t.state == TrialState.RUNNING)
             and not t.user_attrs.get("skipped")}
    free = [s for s in seeds if s not in taken]
    return free[0] if free else None


def _count(study: optuna.Study, states=DONE) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def _close_orphans(ctx: StudyContext, study: optuna.Study) -> None:
    """Mark KILLED the runs of failed trials that were left RUNNING.

    A trial's own handler closes its run on Ctrl+C, but not when the process was killed, nor
    when the interrupt landed inside an MLflow write and the closing write failed too.
    """
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id and ctx.client.get_run(run_id).info.status == "RUNNING":
            ctx.client.set_terminated(run_id, "KILLED")


def _load(ctx: StudyContext, phase: str, method: str, sampler=None) -> optuna.Study:
    study = optuna.create_study(
        study_name=optuna_name(ctx.cfg, phase, method), storage=ctx.storage,
        direction="maximize", load_if_exists=True, sampler=sampler,
    )
    for key, value in {"harness.study": ctx.cfg.name, "harness.preset": ctx.cfg.preset or "",
                       "phase": phase, "method": method}.items():
        study.set_user_attr(key, value)
    _close_orphans(ctx, study)
    return study


def _tune(ctx: StudyContext, method: str, bar: tqdm) -> optuna.Study:
    budget = ctx.cfg.tuning.trials_per_method
    study = _load(ctx, "tune", method)
    study.sampler = _sampler(ctx.cfg, method, len(study.trials))
    t = ctx.cfg.tuning
    study.set_user_attr("sampler", {
        "name": type(study.sampler).__name__, "seed": t.sampler_seed,
        "n_startup_trials": t.n_startup_trials, "multivariate": t.multivariate,
        "constant_liar": t.constant_liar})
    remaining = budget - _count(study)
    if remaining > 0:
        study.optimize(
            _objective(ctx, method, "tune", bar), n_trials=remaining,
            callbacks=[optuna.study.MaxTrialsCallback(budget, states=DONE)],
        )
    return study


def _final(ctx: StudyContext, method: str, tuned: optuna.Study, bar: tqdm) -> None:
    complete = tuned.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        bar.write(f"{method}: every tuning trial diverged; no final runs")
        ctx.client.set_tag(ctx.parent_run_id, f"harness.no_final.{method}",
                           "every tuning trial diverged")
        return
    best = max(complete, key=lambda t: t.value)
    study = _load(ctx, "final", method)
    study.set_user_attr("best_tune_trial", best.number)
    seeds = list(ctx.cfg.final_seeds)
    todo = len(seeds) - len({t.user_attrs.get("seed") for t in study.get_trials(
        deepcopy=False, states=DONE) if not t.user_attrs.get("skipped")} & set(seeds))
    if todo > 0:
        study.optimize(_objective(ctx, method, "final", bar, best.user_attrs["hparams"], seeds),
                       n_trials=todo)


def _ensemble(ctx: StudyContext, name: str, bar: tqdm) -> None:
    metrics = run_ensemble(ctx.cfg, name, ctx.client, ctx.experiment_id, ctx.parent_run_id,
                           ctx.progress)
    bar.update()
    if metrics is not None:
        bar.write(f"{name} ensemble: val mIoU {metrics.get('val/miou', float('nan')):.4f}  "
                  f"test mIoU {metrics.get('test/miou', float('nan')):.4f}  inference "
                  f"×{metrics['cost/infer_ratio_vs_member']:.2f} of one member")


def _parent_run(client, experiment_id: str, cfg: StudyConfig) -> str:
    """The study's parent run (created on first use); refuses a changed configuration."""
    key = study_key(cfg)
    runs = runs_with_tags(client, [experiment_id], {"harness.role": "study",
                                                     "harness.study_key": key})
    recorded_cfg = {k: str(v) for k, v in flatten(
        {k: v for k, v in cfg.to_dict().items() if k != "presets"}).items()}
    if runs:
        run = sorted(runs, key=lambda r: r.info.start_time)[0]
        changed = sorted(k for k, v in recorded_cfg.items()
                         if k in run.data.params and run.data.params[k] != v
                         and not k.startswith(RESUMABLE_KEYS))
        if changed:
            raise HarnessError(
                f"study {key!r} was recorded with a different configuration (changed: "
                f"{', '.join(changed)}); rename the study or use another HARNESS_HOME")
        client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id
    run = client.create_run(experiment_id, tags={
        "harness.role": "study", "harness.study": cfg.name, "harness.study_key": key,
        "harness.preset": cfg.preset or "", "mlflow.runName": key})
    log_params(client, run.info.run_id,
               {k: v for k, v in recorded_cfg.items() if not k.startswith(RESUMABLE_KEYS)})
    client.log_text(run.info.run_id, dump_yaml(cfg), "study.yaml")
    return run.info.run_id


def run_study(cfg: StudyConfig, storage_url: str | None = None, tracking_uri: str | None = None,
              progress: bool = True) -> dict:
    """Run (or resume) the whole study; returns a summary {method: {phase: n_done}}."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    client = tracking_client(tracking_uri)
    experiment_id = get_experiment_id(client, cfg.name)
    ctx = StudyContext(cfg, optuna_storage(storage_url), client, experiment_id,
                       _parent_run(client, experiment_id, cfg), progress)
    total = (len(cfg.methods) * (cfg.tuning.trials_per_method + len(cfg.final_seeds))
             + len(cfg.ensembles))
    bar = tqdm(total=total, desc=f"study {study_key(cfg)}", disable=not progress)
    try:
        tuned = {m: _tune(ctx, m, bar) for m in cfg.methods}
        for method, study in tuned.items():
            _final(ctx, method, study, bar)
        for name in cfg.ensembles:
            _ensemble(ctx, name, bar)
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
        runs = runs_with_tags(ctx.client, [ctx.experiment_id], {
            "mlflow.parentRunId": ctx.parent_run_id, "harness.method": method,
            "harness.phase": "final", "harness.status": "ok"})
        values = [r.data.metrics["test/miou"] for r in runs if "test/miou" in r.data.metrics]
        if values:
            metrics[f"final/{method}/test_miou_mean"] = sum(values) / len(values)
            metrics[f"final/{method}/n"] = len(values)
    log_metrics(ctx.client, ctx.parent_run_id, metrics)


def study_status(cfg: StudyConfig, storage_url: str | None = None,
                 tracking_uri: str | None = None) -> dict:
    """{method: {phase: {state_name: count}}} from the Optuna storage; ensembles (which have
    no Optuna trials) as {name: {"final": {run_status: count}}} from MLflow."""
    storage = optuna_storage(storage_url)
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    out: dict = {}
    for method in cfg.methods:
        for phase in PHASES:
            name = optuna_name(cfg, phase, method)
            counts: dict[str, int] = {}
            if name in existing:
                study = optuna.load_study(study_name=name, storage=storage)
                for t in study.get_trials(deepcopy=False):
                    if not t.user_attrs.get("skipped"):
                        counts[t.state.name] = counts.get(t.state.name, 0) + 1
            out.setdefault(method, {})[phase] = counts
    if cfg.ensembles:
        out.update(_ensemble_status(cfg, tracking_uri))
    return out


def _ensemble_status(cfg: StudyConfig, tracking_uri: str | None) -> dict:
    client = tracking_client(tracking_uri)
    experiment = client.get_experiment_by_name(cfg.name)
    parents = [] if experiment is None else runs_with_tags(client, [experiment.experiment_id], {
        "harness.role": "study", "harness.study_key": study_key(cfg)})
    out: dict = {}
    for name in cfg.ensembles:
        counts: dict[str, int] = {}
        for parent in parents:
            for run in runs_with_tags(client, [experiment.experiment_id], {
                    "mlflow.parentRunId": parent.info.run_id, "harness.role": "ensemble",
                    "harness.method": name}):
                counts[run.info.status] = counts.get(run.info.status, 0) + 1
        out[name] = {"final": counts}
    return out


def list_studies(storage_url: str | None = None) -> dict[str, dict[str, int]]:
    """{study key: {"<phase>/<method>": n_trials}} for every harness study in the storage."""
    out: dict[str, dict[str, int]] = {}
    for summary in optuna.get_all_study_summaries(optuna_storage(storage_url)):
        key, _, rest = summary.study_name.partition("/")
        out.setdefault(key, {})[rest] = summary.n_trials
    return out
