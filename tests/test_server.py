"""`harness server`: a real MLflow tracking server that a worker with another HARNESS_HOME
logs a study to over HTTP (artifacts included), ended whole by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import free_port
from harness.config import study_from_dict
from harness.experiment.study import run_study
from harness.subprocess_group import group_alive, port_open
from harness.tracking import schema

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _wait_until(condition, timeout_s: float, alive) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        if condition():
            return True
        time.sleep(0.25)
    return condition()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the server's processes in /proc")
def test_a_worker_logs_through_harness_server(tmp_path, monkeypatch, tiny_study_dict):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_home, worker_home = tmp_path / "server", tmp_path / "worker"
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "server", "--port", str(port),
             "--workers", "1"], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "HARNESS_HOME": str(server_home), "OMP_NUM_THREADS": "1"})
    try:
        alive = lambda: server.poll() is None  # noqa: E731
        assert _wait_until(lambda: _healthy(url), 180, alive), log.read_text()
        assert _wait_until(lambda: f"--tracking-uri {url}\n" in log.read_text(), 30, alive)
        [group] = _children(server.pid)  # mlflow server, leader of its own process group
        assert os.getpgid(group) == group != os.getpgid(server.pid)

        # the worker: its own HARNESS_HOME (Optuna's SQLite there), runs and artifacts remote
        monkeypatch.setenv("HARNESS_HOME", str(worker_home))
        tiny_study_dict["methods"].pop("asam")
        tiny_study_dict["tuning"]["trials_per_method"] = 1
        tiny_study_dict["final_seeds"] = [1]
        tiny_study_dict["evaluate"] = {"priors": []}
        cfg = study_from_dict(tiny_study_dict)
        summary = run_study(cfg, tracking_uri=url, progress=False)
        assert summary == {"adamw": {"tune": {"COMPLETE": 1}, "final": {"COMPLETE": 1}}}

        client = MlflowClient(url)
        experiment = client.get_experiment_by_name(cfg.name)
        assert experiment.artifact_location.startswith("mlflow-artifacts:")
        runs = client.search_runs([experiment.experiment_id])
        [parent] = [r for r in runs if r.data.tags[schema.ROLE] == schema.ROLE_STUDY]
        children = [r for r in runs if r.data.tags[schema.ROLE] == schema.ROLE_TRIAL]
        assert parent.info.status == "FINISHED" and len(children) == 2
        assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id and
                   0 <= r.data.metrics[schema.TEST_MIOU] <= 1 for r in children)
        final = next(r for r in children if r.data.tags[schema.PHASE] == schema.PHASE_FINAL)
        assert {"config.yaml", "model"} <= {a.path for a in client.list_artifacts(
            final.info.run_id)}
        config = Path(client.download_artifacts(final.info.run_id, "config.yaml", tmp_path))
        assert "seed: 1" in config.read_text()
        # uploaded through the server into its artifact root; nothing tracked locally
        assert list((server_home / "mlartifacts").rglob("state_dict.pt"))
        assert not (worker_home / "mlflow.db").exists()
        assert not (worker_home / "mlartifacts").exists()
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    assert code == 128 + signal.SIGTERM, log.read_text()
    assert not group_alive(group)  # mlflow, uvicorn and its workers
    assert not port_open("127.0.0.1", port)
