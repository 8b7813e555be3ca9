"""`harness study run NAME --workers N`: real worker processes on a real journal file and MLflow
store in a temporary HARNESS_HOME."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from harness.config import study_from_dict
from harness.experiment.study import optuna_name
from harness.tracking import schema
from harness.tracking.store import default_tracking_uri, optuna_storage

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _study_file(tmp_path, tiny_study_dict, **changes):
    tiny_study_dict.update(changes)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_study_dict))
    return path, study_from_dict(tiny_study_dict)


def _harness(home, *args):
    env = {**os.environ, "HARNESS_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _journal(home):
    return optuna_storage(f"journal://{home / 'optuna.log'}")


def _trials(home, cfg, phase, method):
    return optuna.load_study(study_name=optuna_name(cfg, phase, method),
                             storage=_journal(home)).get_trials()


def _runs(cfg):
    client = MlflowClient(default_tracking_uri())
    experiment = client.get_experiment_by_name(cfg.name)
    return client.search_runs([experiment.experiment_id], max_results=1000)


def _assert_complete(home, cfg):
    """Exactly the budget, each unit once, nothing left running: in Optuna and in MLflow."""
    for method in cfg.methods:
        tune = _trials(home, cfg, "tune", method)
        final = _trials(home, cfg, "final", method)
        assert [t.state for t in tune if t.state != TrialState.FAIL] == [
            TrialState.COMPLETE] * cfg.tuning.trials_per_method, method
        done = [t for t in final if t.state == TrialState.COMPLETE]
        assert sorted(t.user_attrs["seed"] for t in done) == cfg.final_seeds, method
        assert not [t for t in tune + final if t.state in (TrialState.RUNNING,
                                                           TrialState.WAITING)]
    runs = _runs(cfg)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    ok = [r for r in runs if r.info.status == "FINISHED"]
    assert len([r for r in ok if r.data.tags[schema.ROLE] == schema.ROLE_STUDY]) == 1
    for method in cfg.methods:
        mine = [r for r in ok if r.data.tags.get(schema.METHOD) == method
                and r.data.tags[schema.ROLE] == schema.ROLE_TRIAL]
        assert len([r for r in mine if r.data.tags[schema.PHASE] == "tune"]) == (
            cfg.tuning.trials_per_method)
        assert sorted(int(r.data.tags[schema.SEED]) for r in mine
                      if r.data.tags[schema.PHASE] == "final") == cfg.final_seeds
    for name in [*cfg.ensembles, *cfg.evaluate.priors]:
        assert len([r for r in ok if r.data.tags.get(schema.METHOD) == name]) == 1, name


def test_workers_run_each_unit_of_a_study_once(home, tmp_path, tiny_study_dict):
    path, cfg = _study_file(tmp_path, tiny_study_dict, final_seeds=[1, 2, 3],
                            ensembles={"sam-e": {"members": "adamw"}},
                            evaluate={"priors": ["box-fill"]})
    started = time.monotonic()
    proc = _harness(home, "study", "run", str(path), "--workers", "3", "--quiet")
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "3 workers on journal://" in out, out
    _assert_complete(home, cfg)
    # one log per worker; each ran the study to its end
    logs = sorted((home / "logs").glob("tiny-worker*.log"))
    assert len(logs) == 3 and all("study tiny done" in p.read_text() for p in logs)
    # the table printed is `harness study status`, which finds the journal by itself
    table = out[out.index("method "):]
    status = _harness(home, "study", "status", str(path))
    assert status.communicate(timeout=120)[0] == table
    rows = [line.split() for line in table.splitlines()]
    assert ["adamw", "final", "complete", "3"] in rows and ["asam", "tune", "complete", "2"] in rows
    assert ["sam-e", "final", "finished", "1"] in rows, table
    assert time.monotonic() - started < 600


def test_a_signal_to_the_parent_stops_every_worker_cleanly(home, tmp_path, tiny_study_dict):
    tiny_study_dict["methods"].pop("asam")
    path, cfg = _study_file(tmp_path, tiny_study_dict, evaluate={"priors": []})
    proc = _harness(home, "study", "run", str(path), "--workers", "2", "--quiet")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if any(t.state == TrialState.COMPLETE for t in _trials(home, cfg, "tune", "adamw")):
                break
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=180)[0]
    assert proc.returncode == 143, out
    assert "Traceback" not in out and "run the same command to resume" in out, out
    # every worker got the signal and closed its records on the way out
    logs = sorted((home / "logs").glob("tiny-worker*.log"))
    assert len(logs) == 2
    assert all("run the same command to resume" in p.read_text() for p in logs)
    assert not [r for r in _runs(cfg) if r.info.status == "RUNNING"]
    for method in cfg.methods:
        for phase in ("tune", "final"):
            try:
                trials = _trials(home, cfg, phase, method)
            except KeyError:
                continue
            assert not [t for t in trials if t.state == TrialState.RUNNING], (phase, method)

    again = _harness(home, "study", "run", str(path), "--workers", "2", "--quiet")
    out = again.communicate(timeout=600)[0]
    assert again.returncode == 0, out
    _assert_complete(home, cfg)


def test_storages_workers_cannot_share_are_refused(home, tmp_path, tiny_study_dict):
    from click.testing import CliRunner

    from harness.cli import cli

    path, _ = _study_file(tmp_path, tiny_study_dict)
    result = CliRunner().invoke(cli, ["study", "run", str(path), "--workers", "2",
                                      "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --storage sqlite:///"), result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (home / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()
    # a study begun without --workers lives in the default SQLite file: not resumed in parallel
    home.mkdir()
    optuna.create_study(study_name="tiny/tune/adamw", storage=f"sqlite:///{home / 'optuna.db'}")
    result = CliRunner().invoke(cli, ["study", "run", str(path), "--workers", "2"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: study 'tiny' is recorded in"), result.output
    assert not (home / "optuna.log").exists() and not (home / "mlflow.db").exists()
