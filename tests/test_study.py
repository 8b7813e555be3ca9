"""The study runner against real MLflow and Optuna stores in a temporary HARNESS_HOME."""

import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from conftest import run_workers
from harness.config import study_from_dict
from harness.errors import HarnessError
from harness.model import build_model
from harness.tracking.store import default_storage_url, default_tracking_uri
from harness.experiment.study import optuna_name, run_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _runs(name):
    client = MlflowClient(default_tracking_uri())
    exp = client.get_experiment_by_name(name)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_study_records_parent_and_one_child_per_trial(home, tiny_study_dict):
    cfg = study_from_dict(tiny_study_dict)
    summary = run_study(cfg, progress=False)
    assert {m: summary[m] for m in cfg.methods} == {
        m: {"tune": {"COMPLETE": 2}, "final": {"COMPLETE": 2}} for m in ("adamw", "asam")}
    # and one run per prompt-only prior, scored like the finals (no zero-shot: not pretrained)
    assert {m: v for m, v in summary.items() if m not in cfg.methods} == {
        p: {"final": {"FINISHED": 1}} for p in cfg.evaluate.priors}

    mlflow.set_tracking_uri(default_tracking_uri())
    df = mlflow.search_runs(experiment_names=["tiny"])
    parents = df[df["tags.harness.role"] == "study"]
    children = df[df["tags.harness.role"] == "trial"]
    assert len(parents) == 1 and len(children) == 8
    assert (children["tags.mlflow.parentRunId"] == parents["run_id"].iloc[0]).all()
    assert children["metrics.test/miou"].between(0, 1).all()
    assert (children["status"] == "FINISHED").all()

    # Optuna trials point at their MLflow runs; tune trials all used the tuning seed.
    storage = default_storage_url()
    tune = optuna.load_study(study_name=optuna_name(cfg, "tune", "asam"), storage=storage)
    final = optuna.load_study(study_name=optuna_name(cfg, "final", "asam"), storage=storage)
    assert {t.user_attrs["seed"] for t in tune.trials} == {cfg.tuning.seed}
    assert sorted(t.user_attrs["seed"] for t in final.trials) == [1, 2]
    best = max(tune.trials, key=lambda t: t.value)
    assert all(t.user_attrs["hparams"] == best.user_attrs["hparams"] for t in final.trials)
    assert set(children["run_id"]) >= {t.user_attrs["mlflow_run_id"] for t in final.trials}

    # One child in detail: params, curves, artifacts, and weights that reproduce the metric.
    client = MlflowClient(default_tracking_uri())
    run = client.get_run(final.trials[0].user_attrs["mlflow_run_id"])
    assert run.data.params["method"] == "asam" and run.data.params["phase"] == "final"
    assert float(run.data.params["rho"]) == best.params["rho"]
    curve = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in curve] == list(range(1, len(curve) + 1)) and len(curve) >= 2
    assert len(client.get_metric_history(run.info.run_id, "val/miou")) == cfg.train.epochs
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "model"} <= artifacts
    config = yaml.safe_load(open(client.download_artifacts(run.info.run_id, "config.yaml")))
    assert config["trial"]["seed"] == final.trials[0].user_attrs["seed"]
    weights = client.download_artifacts(run.info.run_id, "model/state_dict.pt")
    model = build_model("tiny-32", checkpoint=weights)
    from harness.evaluate.segment import evaluate_dataset
    from harness.data.sources import load_splits
    test = load_splits(cfg.data, ["test"])["test"]
    assert evaluate_dataset(model, test)["miou"] == pytest.approx(
        run.data.metrics["test/miou"], abs=1e-9)
    # per-mask scores, in mask order, average to the logged metric (the report pairs them)
    import pandas as pd
    scores = pd.read_csv(client.download_artifacts(run.info.run_id, "scores/test.csv"))
    assert list(scores["mask"]) == list(range(len(test))) and len(scores) == len(test.masks)
    assert scores["iou"].mean() == pytest.approx(run.data.metrics["test/miou"], abs=1e-9)
    parent = client.get_run(parents["run_id"].iloc[0])
    assert parent.data.metrics["final/asam/n"] == 2


def test_rerun_resumes_without_redoing_and_can_extend(home, tiny_study_dict):
    cfg = study_from_dict(tiny_study_dict)
    run_study(cfg, progress=False)
    _, before = _runs("tiny")
    run_study(cfg, progress=False)
    _, after = _runs("tiny")
    assert {r.info.run_id for r in after} == {r.info.run_id for r in before}
    cfg.final_seeds = [1, 2, 3]  # more seeds is a resumable change: only the new ones run
    run_study(cfg, progress=False)
    _, extended = _runs("tiny")
    assert len(extended) == len(before) + 2


def test_changed_config_is_refused(home, tiny_study_dict):
    run_study(study_from_dict(tiny_study_dict), progress=False)
    tiny_study_dict["train"]["epochs"] = 2
    with pytest.raises(HarnessError, match="different configuration .*train.epochs"):
        run_study(study_from_dict(tiny_study_dict), progress=False)


def test_diverged_trials_are_recorded_and_the_study_goes_on(home, tiny_study_dict):
    # AdamW at lr 1e30 always diverges; ASAM is fine.
    tiny_study_dict["methods"]["adamw"] = {"lr": 1.0e30, "search": {
        "weight_decay": {"low": 0.0, "high": 0.1}}}
    tiny_study_dict["train"]["grad_clip"] = None
    cfg = study_from_dict(tiny_study_dict)
    summary = run_study(cfg, progress=False)
    assert summary["adamw"] == {"tune": {"PRUNED": 2}, "final": {}}
    assert summary["asam"]["final"] == {"COMPLETE": 2}
    tune = optuna.load_study(study_name=optuna_name(cfg, "tune", "adamw"),
                             storage=default_storage_url())
    assert all("step" in t.user_attrs["fail_reason"] for t in tune.trials)
    client, runs = _runs("tiny")
    diverged = [r for r in runs if r.data.tags.get("harness.status") == "diverged"]
    assert len(diverged) == 2 and all(r.info.status == "FAILED" for r in diverged)
    assert all(client.get_metric_history(r.info.run_id, "train/loss") for r in diverged)
    parent = next(r for r in runs if r.data.tags["harness.role"] == "study")
    assert "diverged" in parent.data.tags["harness.no_final.adamw"]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_study_resumes(home, tiny_study_dict, tmp_path, signum, code):
    """Ctrl+C (or SIGTERM from `timeout`, a container stop, a scheduler) in the middle of a
    study: records are closed, finished trials survive, the rest are redone."""
    tiny_study_dict["tuning"]["trials_per_method"] = 3
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_study_dict))
    env = {**os.environ, "HARNESS_HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "study", "run", str(path),
                             "--quiet"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    cfg = study_from_dict(tiny_study_dict)
    name = optuna_name(cfg, "tune", "adamw")
    deadline = time.time() + 120
    completed = []
    while time.time() < deadline and proc.poll() is None:
        try:
            study = optuna.load_study(study_name=name, storage=default_storage_url())
            completed = study.get_trials(states=(TrialState.COMPLETE,))
        except (KeyError, Exception):
            completed = []
        if completed:
            break
        time.sleep(0.2)
    assert completed, proc.communicate()[0].decode()[-2000:]
    proc.send_signal(signum)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == code, out
    assert "Traceback" not in out and "run the same command to resume" in out
    storage = default_storage_url()
    for phase in ("tune", "final"):
        for method in cfg.methods:
            try:
                left = optuna.load_study(study_name=optuna_name(cfg, phase, method),
                                         storage=storage).get_trials(
                    states=(TrialState.RUNNING,))
            except KeyError:
                continue
            assert not left, f"{phase}/{method} left a RUNNING trial"
    _, runs = _runs("tiny")
    assert not [r for r in runs if r.info.status == "RUNNING"]  # parent included

    kept = {t.number: t.params for t in completed}
    summary = run_study(cfg, progress=False)
    assert summary["adamw"]["tune"].get("COMPLETE") == 3
    assert summary["asam"]["final"] == {"COMPLETE": 2}
    study = optuna.load_study(study_name=name, storage=default_storage_url())
    for number, params in kept.items():
        assert study.trials[number].params == params
    # every interrupted trial's run is closed as KILLED, never left RUNNING
    _, runs = _runs("tiny")
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_final_trials_log_every_shift_cell_and_probes(home, tiny_study_dict):
    tiny_study_dict["methods"].pop("asam")
    tiny_study_dict["tuning"]["trials_per_method"] = 1
    tiny_study_dict["final_seeds"] = [1]
    tiny_study_dict["evaluate"] = {"shifts": ["gaussian_noise", "contrast", "domain", "prompt"],
                                   "severities": [1, 3, 5], "workers": 0,
                                   "box_jitter_levels": [0.1, 0.3]}
    tiny_study_dict["probes"] = {"enabled": True, "batches": 1, "batch_size": 2,
                                 "hessian_iters": 3, "trace_samples": 2, "average_samples": 2,
                                 "landscape_points": 3}
    cfg = study_from_dict(tiny_study_dict)
    run_study(cfg, progress=False)
    client, runs = _runs("tiny")
    final = next(r for r in runs if r.data.tags.get("harness.phase") == "final"
                 and r.data.tags.get("harness.role") == "trial")
    tune = next(r for r in runs if r.data.tags.get("harness.phase") == "tune")
    import pandas as pd
    table = pd.read_csv(client.download_artifacts(final.info.run_id, "shifts.csv"))
    cells = set(zip(table["shift"], table["severity"]))
    assert {(c, s) for c in ("gaussian_noise", "contrast") for s in (1, 3, 5)} <= cells
    assert len(table) == 1 + 6 + 2 + 2 + 1  # clean, corruptions, 2 domains, 2 jitters, point
    metrics = final.data.metrics
    for c in ("gaussian_noise", "contrast"):
        for s in (1, 3, 5):
            assert 0 <= metrics[f"shift/{c}/s{s}/miou"] <= 1
    for key in ("shift/mean/miou", "shift/relative", "shift/domain/lesions/miou",
                "shift/prompt/point/miou", "probe/sharpness", "probe/asam_sharpness",
                "probe/hessian_trace", "probe/hessian_eig1", "gap/train_minus_test_miou",
                "gap/clean_minus_shift_miou", "probe_cost/total_seconds"):
        assert key in metrics, key
    assert {"probes/landscape_1d.png", "probes/landscape_1d.csv"} <= {
        a.path for a in client.list_artifacts(final.info.run_id, "probes")}
    assert not any(k.startswith(("shift/", "probe/")) for k in tune.data.metrics)


def test_eval_and_probe_on_demand_log_into_the_run(home, tiny_study_dict):
    from click.testing import CliRunner

    from harness.cli import cli

    tiny_study_dict["methods"].pop("asam")
    tiny_study_dict["tuning"]["trials_per_method"] = 1
    tiny_study_dict["final_seeds"] = [1]
    tiny_study_dict["evaluate"] = {"severities": [2], "workers": 0}
    tiny_study_dict["probes"] = {"batches": 1, "batch_size": 2, "hessian_iters": 3,
                                 "trace_samples": 2, "average_samples": 2,
                                 "landscape_points": 0}
    run_study(study_from_dict(tiny_study_dict), progress=False)
    client, runs = _runs("tiny")
    run_id = next(r.info.run_id for r in runs if r.data.tags.get("harness.phase") == "final"
                  and r.data.tags.get("harness.role") == "trial")
    result = CliRunner().invoke(cli, ["eval", run_id, "--shifts", "impulse_noise,prompt",
                                      "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["probe", run_id], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = client.get_run(run_id).data.metrics
    assert "shift/impulse_noise/s2/miou" in metrics and "shift/prompt/point/miou" in metrics
    assert "probe/hessian_trace" in metrics and "probe/landscape_1d/max_rise" not in metrics
    bad = CliRunner().invoke(cli, ["eval", run_id, "--shifts", "rain"])
    assert bad.exit_code == 2 and "rain" in bad.output
    missing = CliRunner().invoke(cli, ["probe", "0" * 32])
    assert missing.exit_code == 2 and "0" * 32 in missing.output


def test_tuning_over_several_seeds_scores_the_median(home, tiny_study_dict):
    tiny_study_dict["methods"].pop("asam")
    tiny_study_dict["tuning"].update(trials_per_method=1, seeds=[0, 1, 2])
    tiny_study_dict["final_seeds"] = [1]
    tiny_study_dict["evaluate"] = {"priors": []}
    cfg = study_from_dict(tiny_study_dict)
    run_study(cfg, progress=False)
    (trial,) = optuna.load_study(study_name=optuna_name(cfg, "tune", "adamw"),
                                 storage=default_storage_url()).trials
    client = MlflowClient(default_tracking_uri())
    runs = [client.get_run(i) for i in trial.user_attrs["mlflow_run_ids"]]
    assert [int(r.data.tags["harness.seed"]) for r in runs] == [0, 1, 2]
    values = sorted(r.data.metrics["val/miou"] for r in runs)
    assert trial.value == values[1] and trial.user_attrs["seeds"] == [0, 1, 2]
    assert trial.user_attrs["mlflow_run_id"] == runs[0].info.run_id


def test_wrong_checkpoint_is_refused_before_anything_is_recorded(home, tiny_study_dict, tmp_path):
    import torch

    bad = tmp_path / "other.pt"
    torch.save(build_model("tiny-64").state_dict(), bad)  # another architecture's weights
    tiny_study_dict["model"]["checkpoint"] = str(bad)
    with pytest.raises(HarnessError, match="other.pt"):
        run_study(study_from_dict(tiny_study_dict), progress=False)
    assert not (home / "mlflow.db").exists() and not (home / "optuna.db").exists()


def test_workers_started_together_on_a_new_home_all_run(home, tiny_study_dict, tmp_path):
    """MLflow creates and migrates a new SQLite store on first use; three workers started at
    once on a fresh HARNESS_HOME must not race that (they used to die with tracebacks)."""
    tiny_study_dict["methods"].pop("asam")
    tiny_study_dict["tuning"]["trials_per_method"] = 1
    tiny_study_dict["final_seeds"] = [1, 2, 3]
    tiny_study_dict["evaluate"] = {"priors": []}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_study_dict))
    storage = f"journal://{tmp_path / 'optuna.log'}"
    codes, outputs = run_workers(home, path, storage, 3)
    assert codes == [0, 0, 0], outputs
    assert not any("Traceback" in out for out in outputs)
    # three workers, one budget: exactly one tuning trial and one run per final seed
    cfg = study_from_dict(tiny_study_dict)
    journal = optuna.storages.journal.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.log")))
    tune = optuna.load_study(study_name=optuna_name(cfg, "tune", "adamw"), storage=journal)
    final = optuna.load_study(study_name=optuna_name(cfg, "final", "adamw"), storage=journal)
    assert [t.state for t in tune.trials] == [TrialState.COMPLETE]
    assert sorted(t.user_attrs["seed"] for t in final.trials) == [1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in final.trials)
