"""`harness ui STUDY` in a real browser: headless Chromium (the system's, driven by
playwright; nothing is downloaded) finds the study's runs, and SIGTERM leaves nothing behind."""

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import free_port
from harness.config import study_from_dict
from harness.experiment.study import run_study
from harness.subprocess_group import group_alive, port_open
from harness.tracking import schema
from harness.tracking.store import default_tracking_uri
from harness.tracking.ui import WORKFLOW
from server_process import kill_leftovers, start, stop

CHROMIUM = Path("/usr/bin/chromium")  # .ci/run installs Debian's package when it is missing
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 180_000  # MLflow's React UI renders slowly on 2 busy cores
SCREENSHOT_COPY = Path("/tmp/ui_screenshot.png")
DESCRIPTION = "Browser test: does the UI show the study?"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="no /usr/bin/chromium (Debian package `chromium`; .ci/run "
                              "installs it with apt-get where apt exists)"),
]


@pytest.fixture
def recorded(home, tiny_study_dict):
    """A tiny study (AdamW, 1 tuning trial, 1 final seed): its parent run and a final run."""
    tiny_study_dict["methods"].pop("asam")
    tiny_study_dict["tuning"]["trials_per_method"] = 1
    tiny_study_dict["final_seeds"] = [1]
    tiny_study_dict["description"] = DESCRIPTION
    run_study(study_from_dict(tiny_study_dict), progress=False)
    client = MlflowClient(default_tracking_uri())
    experiment_id = client.get_experiment_by_name("tiny").experiment_id
    runs = client.search_runs([experiment_id])
    parent, = [r for r in runs if r.data.tags[schema.ROLE] == schema.ROLE_STUDY]
    final, = [r for r in runs if r.data.tags.get(schema.PHASE) == schema.PHASE_FINAL
              and r.data.tags[schema.ROLE] == schema.ROLE_TRIAL]
    return experiment_id, parent, final


def test_the_ui_opens_on_the_study_runs_and_ends_its_whole_group(recorded, home, tmp_path):
    from playwright.sync_api import sync_playwright

    experiment_id, parent, final = recorded
    port = free_port()
    served = start(["ui", "tiny", "--port", str(port)], home, port, tmp_path / "ui.log")
    try:
        url = served.output().splitlines()[0].split(" at ")[-1]
        assert url == f"http://127.0.0.1:{port}/#/experiments/{experiment_id}?{WORKFLOW}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": 1680, "height": 1000})
            page.goto(url)
            # the runs list: the study's parent run, its trials nested under it
            parent_link = page.locator(f'a[href$="/runs/{parent.info.run_id}"]')
            parent_link.wait_for(timeout=WAIT_MS)
            assert parent_link.inner_text() == parent.info.run_name == "tiny"
            page.get_by_text(DESCRIPTION).first.wait_for(timeout=WAIT_MS)  # the experiment's
            page.locator("[role=gridcell]", has=parent_link).locator("button").first.click()
            child_link = page.locator(f'a[href$="/runs/{final.info.run_id}"]')
            child_link.wait_for(timeout=WAIT_MS)
            assert child_link.inner_text() == final.info.run_name
            runs_shot = tmp_path / "ui_runs.png"
            page.screenshot(path=str(runs_shot))
            shutil.copyfile(runs_shot, SCREENSHOT_COPY)
            # the trial's page shows the test mIoU the store holds
            child_link.click()
            metric = page.locator("[role=row]", has=page.get_by_role(
                "link", name=schema.TEST_MIOU, exact=True))
            metric.wait_for(timeout=WAIT_MS)
            metric.scroll_into_view_if_needed()
            shown = metric.locator("[role=cell]").nth(1).inner_text()
            assert float(shown) == pytest.approx(final.data.metrics[schema.TEST_MIOU], rel=1e-9)
            page.screenshot(path=str(tmp_path / "ui_run.png"))
            browser.close()

        assert stop(served) == 143
        assert not group_alive(served.group)  # mlflow ui and all it started
        assert not port_open("127.0.0.1", port)
    finally:
        kill_leftovers(served)
