"""`harness ui`: MLflow's UI on the harness store, opened on a study's training runs.

MLflow 3 opens its UI in GenAI mode, on an empty "Traces" page. Measured with MLflow 3.17 in
headless Chromium: the experiment tag ``mlflow.experimentKind`` does not change that, the URL
parameter ``workflowType=machine_learning`` does — it opens the model-training runs list, a
study's trials nested under its parent run. So we print (and may open) that URL.
"""

from __future__ import annotations

import os
import sys
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.home import harness_home
from harness.subprocess_group import connect_host, run_group
from harness.tracking.store import default_tracking_uri, tracking_client
from harness.tracking.studies import parent_run, require_store

WORKFLOW = "workflowType=machine_learning"  # the model-training view, not GenAI's
# One person browsing needs one server worker and none of MLflow's background jobs (GenAI
# evaluation, trace archival): `mlflow ui` then runs 2 processes instead of 16 (measured,
# MLflow 3.17) and answers in about 12 s instead of 19 s on 2 cores.
UI_WORKERS = 1
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@dataclass
class UiPlan:
    tracking_uri: str
    host: str
    port: int
    url: str  # what to open: the study's runs, or the list of experiments
    command: list[str] = field(default_factory=list)


def ui_url(host: str, port: int, experiment_id: str | None = None) -> str:
    """The UI's page of experiment `experiment_id` (the list of experiments when None), in
    the model-training view."""
    page = f"experiments/{experiment_id}" if experiment_id is not None else "experiments"
    return f"http://{connect_host(host)}:{port}/#/{page}?{WORKFLOW}"


def ui_command(tracking_uri: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--default-artifact-root", (harness_home() / "mlartifacts").as_uri(),
            "--host", host, "--port", str(port), "--workers", str(UI_WORKERS)]


def plan_ui(tracking_uri: str | None, host: str, port: int, study: str | None = None,
            preset: str | None = None) -> UiPlan:
    """What `harness ui` runs and opens; a study that is not recorded is a one-line error
    before anything starts."""
    uri = tracking_uri or default_tracking_uri()
    experiment_id = None
    if study is not None:
        require_store(uri, "MLflow store")
        experiment_id = parent_run(tracking_client(uri), study, preset, uri).info.experiment_id
    return UiPlan(uri, host, port, ui_url(host, port, experiment_id),
                  ui_command(uri, host, port))


def serve_ui(plan: UiPlan, open_browser: bool = False,
             echo: Callable[[str], None] = print) -> int:
    """Run the UI until SIGTERM / SIGINT (its whole process group is ended then); its exit
    code, 143 / 130 when stopped so. Says when it answers, and then opens `plan.url` in a
    web browser if asked."""
    def ready() -> None:
        echo(f"ready: {plan.url}")
        if open_browser:
            webbrowser.open(plan.url)

    return run_group(plan.command, ready, address=(connect_host(plan.host), plan.port),
                     env={**os.environ, **UI_ENV})
