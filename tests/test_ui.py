"""Browsing a recorded study: its descriptions, the UI's URL, optuna-dashboard on the same
storage (a real server process, ended whole by SIGTERM)."""

import copy
import json
import subprocess
import urllib.request

import optuna
import pytest
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from conftest import TINY_STUDY, free_port
from harness.cli import cli
from harness.config import study_from_dict
from harness.experiment.study import run_study
from harness.subprocess_group import group_alive, port_open, wait_for_port
from harness.tracking.dashboard import dashboard_command
from harness.tracking import schema
from harness.tracking.store import default_tracking_uri, optuna_storage
from harness.tracking.ui import WORKFLOW
from server_process import kill_leftovers, start, stop

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
DESCRIPTION = "Does the UI open on the study?\nA second line."


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A tiny study (AdamW, 1 tuning trial, 1 final seed) run with preset `smaller`."""
    home = tmp_path_factory.mktemp("ui") / "runs"
    data = copy.deepcopy(TINY_STUDY)
    data["methods"].pop("asam")
    data["tuning"]["trials_per_method"] = 1
    data["description"] = DESCRIPTION
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_HOME", str(home))
        run_study(study_from_dict(data, "smaller"), progress=False)
        client = MlflowClient(default_tracking_uri())
        experiment = client.get_experiment_by_name("tiny")
        yield home, data, experiment, client


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_experiment_and_parent_run_carry_the_description_and_preset(recorded):
    _, _, experiment, client = recorded
    parent, = client.search_runs([experiment.experiment_id],
                                 f"tags.`{schema.ROLE}` = '{schema.ROLE_STUDY}'")
    assert parent.data.tags[schema.NOTE] == f"{DESCRIPTION}\n\nPreset: smaller"
    note = experiment.tags[schema.NOTE]
    assert note.startswith(DESCRIPTION) and "Presets recorded: smaller;" in note


def test_ui_prints_the_model_training_url_of_the_study(recorded, tmp_path):
    _, data, experiment, _ = recorded
    url = f"http://127.0.0.1:5123/#/experiments/{experiment.experiment_id}?{WORKFLOW}"
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    for study in (["tiny"], ["tiny", "--preset", "smaller"], [str(path)]):
        result = invoke("ui", *study, "--dry-run", "--port", "5123")
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[0].endswith(f" at {url}")
    listing = invoke("ui", "--dry-run", "--port", "5123").output
    assert f"at http://127.0.0.1:5123/#/experiments?{WORKFLOW}\n" in listing


@pytest.mark.parametrize("args, needle", [
    (["ui", "nope"], "no study 'nope' recorded in sqlite:///"),
    (["ui", "tiny", "--preset", "big"], "study 'tiny@big' is not recorded in sqlite:///"),
    (["dashboard", "--storage", "sqlite:////no/such/optuna.db"],
     "no Optuna storage at /no/such/optuna.db"),
    (["dashboard", "--storage", "journal:///no/such/journal.log"],
     "no Optuna storage at /no/such/journal.log"),
])
def test_browsing_mistakes_are_one_line(recorded, args, needle):
    result = invoke(*args)
    assert result.exit_code == 2 and needle in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_ui_without_a_store_for_a_study_is_one_line(home):
    result = invoke("ui", "tiny")
    assert result.exit_code == 2
    assert f"no MLflow store at {home / 'mlflow.db'}" in result.output


def _studies_served(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=60) as answer:
        return {s["study_name"] for s in json.load(answer)["study_summaries"]}


@pytest.mark.slow
def test_dashboard_serves_the_studies_storage_and_ends_its_group(recorded, tmp_path):
    home = recorded[0]
    port = free_port()
    served = start(["dashboard", "--port", str(port)], home, port, tmp_path / "dashboard.log")
    try:
        # the method phases, and one bookkeeping study per prior (recorded exactly once)
        priors = {f"tiny@smaller/reference/{p}" for p in ("box-fill", "ellipse-in-box",
                                                           "point-disc")}
        assert _studies_served(port) == {"tiny@smaller/tune/adamw",
                                         "tiny@smaller/final/adamw"} | priors
        assert stop(served) == 143
        assert not group_alive(served.group)
        assert not port_open("127.0.0.1", port)
    finally:
        kill_leftovers(served)


def test_dashboard_opens_a_journal_file(tmp_path):
    """optuna-dashboard's own URL parser knows no journal:// URLs: the harness's child
    process opens the storage itself."""
    url = f"journal://{tmp_path / 'journal.log'}"
    study = optuna.create_study(study_name="journal-study", storage=optuna_storage(url))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    port = free_port()
    child = subprocess.Popen(dashboard_command(url, "127.0.0.1", port),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_port("127.0.0.1", port, alive=lambda: child.poll() is None)
        assert _studies_served(port) == {"journal-study"}
    finally:
        child.kill()
        child.wait()
