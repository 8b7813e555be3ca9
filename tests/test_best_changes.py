"""Raising the tuning budget: finals follow the best tuned configuration, with provenance.

Real MLflow and Optuna stores in a temporary HARNESS_HOME. The search space is crafted so
that the outcome is decided by the data, not by chance: AdamW's lr is one of two values, one
of which wrecks a 1-epoch fine-tune of the tiny model (val mIoU ≈ 0) while the other leaves
it near its initial score, and the sampler seed gives the wrecking value to trial 0.
"""

import optuna
import pytest
from mlflow.tracking import MlflowClient

from harness.config import study_from_dict
from harness.experiment.study import optuna_name, run_study
from harness.report.collect import load_study_data
from harness.tracking import schema
from harness.tracking.store import default_storage_url, default_tracking_uri

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _config(tiny_study_dict, lrs, sampler_seed=0):
    tiny_study_dict["methods"].pop("asam")
    tiny_study_dict["methods"]["adamw"]["search"] = {"lr": {"choices": lrs}}
    tiny_study_dict["tuning"].update(trials_per_method=1, sampler_seed=sampler_seed)
    tiny_study_dict["ensembles"] = {"sam-e": {"members": "adamw"}}
    tiny_study_dict["evaluate"] = {"priors": []}
    return study_from_dict(tiny_study_dict)


def _runs(cfg):
    client = MlflowClient(default_tracking_uri())
    experiment = client.get_experiment_by_name(cfg.name)
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def _final_runs(runs, role=schema.ROLE_TRIAL):
    return [r for r in runs if r.data.tags.get(schema.ROLE) == role
            and r.data.tags.get(schema.PHASE) == schema.PHASE_FINAL]


def _study(cfg, phase, method="adamw"):
    return optuna.load_study(study_name=optuna_name(cfg, phase, method),
                             storage=default_storage_url())


def test_a_new_best_trains_the_finals_again_and_supersedes_the_old(home, tiny_study_dict):
    cfg = _config(tiny_study_dict, [1.0e-6, 3.0e-2], sampler_seed=2)
    run_study(cfg, progress=False)
    _, before = _runs(cfg)
    old_finals = {r.info.run_id for r in _final_runs(before)}
    (old_ensemble,) = _final_runs(before, schema.ROLE_ENSEMBLE)
    assert len(old_finals) == 2

    cfg.tuning.trials_per_method = 3  # `harness study run … --n-trials 3`
    summary = run_study(cfg, progress=False)
    tune = _study(cfg, "tune")
    best = max(tune.get_trials(states=(optuna.trial.TrialState.COMPLETE,)),
               key=lambda t: t.value)
    assert best.number != 0, (  # the crafted precondition; see the module docstring
        f"trial 0 is still the best: {[(t.number, t.params, t.value) for t in tune.trials]}")

    # status: the tuning budget, and the finals of the new best only
    assert summary["adamw"] == {"tune": {"COMPLETE": 3}, "final": {"COMPLETE": 2}}
    assert summary["sam-e"] == {"final": {"FINISHED": 1}}
    final = _study(cfg, "final")
    assert final.user_attrs[schema.ATTR_BEST_TUNE_TRIAL] == best.number
    current = [t for t in final.trials if t.user_attrs["tune_trial"] == best.number]
    assert sorted(t.user_attrs["seed"] for t in current) == [1, 2]
    assert all(t.state.name == "COMPLETE" for t in current)
    assert all(t.user_attrs["hparams"] == best.user_attrs["hparams"] for t in current)

    client, after = _runs(cfg)
    finals = _final_runs(after)
    superseded = [r for r in finals if schema.SUPERSEDED in r.data.tags]
    new = [r for r in finals if schema.SUPERSEDED not in r.data.tags]
    # the old runs are kept, marked, and name the trial they came from
    assert {r.info.run_id for r in superseded} == old_finals
    assert all(r.data.tags[schema.TUNE_TRIAL] == "0" for r in superseded)
    assert all(f"#{best.number}" in r.data.tags[schema.SUPERSEDED] for r in superseded)
    # provenance agrees with the weights: the tag names the best, the params are its params
    assert sorted(int(r.data.tags[schema.SEED]) for r in new) == [1, 2]
    assert {r.info.run_id for r in new} == {t.user_attrs["mlflow_run_id"] for t in current}
    for run in new:
        assert run.info.status == "FINISHED"
        assert run.data.tags[schema.TUNE_TRIAL] == str(best.number)
        assert float(run.data.params["lr"]) == best.params["lr"]
        assert float(run.data.params["lr"]) == best.user_attrs["hparams"]["lr"]

    # the ensemble of the old finals is superseded with them; a new one combines the new
    ensembles = _final_runs(after, schema.ROLE_ENSEMBLE)
    assert len(ensembles) == 2
    old = next(r for r in ensembles if r.info.run_id == old_ensemble.info.run_id)
    assert schema.SUPERSEDED in old.data.tags
    (fresh,) = [r for r in ensembles if schema.SUPERSEDED not in r.data.tags]
    assert set(fresh.data.tags[schema.MEMBERS].split(",")) == {r.info.run_id for r in new}

    # readers count only the current finals: the report's table and the parent's summary
    data = load_study_data(cfg.name)
    assert set(data.final("adamw")["run_id"]) == {r.info.run_id for r in new}
    assert list(data.final("sam-e")["run_id"]) == [fresh.info.run_id]
    assert not set(data.runs["run_id"]) & {r.info.run_id for r in superseded}
    parent = next(r for r in after if r.data.tags.get(schema.ROLE) == schema.ROLE_STUDY)
    assert parent.data.metrics["final/adamw/n"] == 2
    assert parent.data.metrics["final/adamw/test_miou_mean"] == pytest.approx(
        sum(r.data.metrics["test/miou"] for r in new) / 2)
    assert not [r for r in after if r.info.status == "RUNNING"]

    # a rerun changes nothing: the current finals are the ones the best asks for
    again = run_study(cfg, progress=False)
    _, rerun = _runs(cfg)
    assert again == summary and {r.info.run_id for r in rerun} == {r.info.run_id for r in after}


def test_a_larger_budget_with_the_same_best_keeps_the_finals(home, tiny_study_dict):
    # one value to choose from: every trial scores the same, and a tie keeps trial 0
    cfg = _config(tiny_study_dict, [1.0e-3])
    run_study(cfg, progress=False)
    _, before = _runs(cfg)
    cfg.tuning.trials_per_method = 3
    summary = run_study(cfg, progress=False)
    assert summary["adamw"] == {"tune": {"COMPLETE": 3}, "final": {"COMPLETE": 2}}
    assert summary["sam-e"] == {"final": {"FINISHED": 1}}
    assert _study(cfg, "final").user_attrs[schema.ATTR_BEST_TUNE_TRIAL] == 0
    _, after = _runs(cfg)
    # only the two new tuning runs were added: no final was trained again, none superseded
    assert {r.info.run_id for r in _final_runs(after)} == {
        r.info.run_id for r in _final_runs(before)}
    assert len(after) == len(before) + 2
    assert not [r for r in after if schema.SUPERSEDED in r.data.tags]
    assert all(r.data.tags[schema.TUNE_TRIAL] == "0" for r in _final_runs(after))
