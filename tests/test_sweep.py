"""Grid tuning (the rho sweep): each grid point once, failures recorded with a reason."""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from harness.config import study_from_dict
from harness.errors import HarnessError
from harness.tracking.store import default_storage_url, default_tracking_uri
from harness.experiment.study import optuna_name, run_study

RHOS = [0.05, 1.0e12]  # 1e12 perturbs the weights past float32: non-finite at step 0


def sweep_dict(study: dict) -> dict:
    study["methods"] = {"sam": {"lr": 1.0e-3, "search": {"rho": {"choices": RHOS}}}}
    study["tuning"] = {"sampler": "grid", "trials_per_method": len(RHOS)}
    study["final_seeds"] = [1]
    return study


def test_grid_visits_every_point_once_and_records_failures(home, tiny_study_dict):
    cfg = study_from_dict(sweep_dict(tiny_study_dict))
    summary = run_study(cfg, progress=False)
    assert summary["sam"]["tune"] == {"COMPLETE": 1, "PRUNED": 1}
    assert summary["sam"]["final"] == {"COMPLETE": 1}
    tune = optuna.load_study(study_name=optuna_name(cfg, "tune", "sam"),
                             storage=default_storage_url())
    assert sorted(t.params["rho"] for t in tune.trials) == RHOS
    failed = next(t for t in tune.trials if t.state == TrialState.PRUNED)
    assert failed.params["rho"] == RHOS[1] and "non-finite" in failed.user_attrs["fail_reason"]
    assert tune.user_attrs["sampler"]["name"] == "GridSampler"
    run = MlflowClient(default_tracking_uri()).get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["harness.status"] == "diverged"
    # resuming runs nothing new
    assert run_study(cfg, progress=False) == summary


@pytest.mark.parametrize("change, key", [
    ({"tuning": {"sampler": "grid", "trials_per_method": 3}}, "tuning.trials_per_method"),
    ({"tuning": {"sampler": "random"}}, "tuning.sampler"),
    ({"train": {"min_loss_drop": 1.5}}, "train.min_loss_drop"),
])
def test_sweep_config_errors_name_the_key(tiny_study_dict, change, key):
    study = sweep_dict(tiny_study_dict)
    for section, values in change.items():
        study[section] = {**study.get(section, {}), **values}
    with pytest.raises(HarnessError, match=key.replace(".", r"\.")):
        study_from_dict(study)


def test_grid_needs_choices(tiny_study_dict):
    tiny_study_dict["tuning"] = {"sampler": "grid", "trials_per_method": 2}
    with pytest.raises(HarnessError, match=r"methods\.adamw\.search\.lr.*choices"):
        study_from_dict(tiny_study_dict)


def test_runs_of_failed_trials_left_running_are_closed(home, tiny_study_dict):
    tiny_study_dict["methods"].pop("asam")
    tiny_study_dict["tuning"]["trials_per_method"] = 1
    cfg = study_from_dict(tiny_study_dict)
    # what a worker killed mid-trial leaves behind: a FAIL trial whose run is still RUNNING
    client = MlflowClient(default_tracking_uri())
    orphan = client.create_run(client.create_experiment("elsewhere")).info.run_id
    study = optuna.create_study(study_name=optuna_name(cfg, "tune", "adamw"),
                                storage=default_storage_url(), direction="maximize")
    trial = study.ask()
    trial.set_user_attr("mlflow_run_id", orphan)
    study.tell(trial, state=TrialState.FAIL)
    run_study(cfg, progress=False)
    assert client.get_run(orphan).info.status == "KILLED"
