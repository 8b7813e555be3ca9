"""What was run, with which code, where and when; the study's key settings as a table (its
full config travels as a file: attached to the PDF and written next to it)."""

from __future__ import annotations

import pandas as pd

from harness.report import provenance
from harness.report.document import Section, Table
from harness.report.sections.base import Context, new_section
from harness.report.settings import key_settings
from harness.tracking.schema import PHASE_TUNE, STUDY_ARTIFACT

TITLE = "Provenance"


def build(ctx: Context, created: str) -> Section:
    section = new_section(__name__)
    data = ctx.data
    parent = data.parent
    runs = data.runs
    items = {
        "study": data.name,
        "study key": data.key,
        "preset": data.preset or "(none)",
        "parent MLflow run": parent["run_id"],
        "MLflow tracking URI": data.tracking_uri,
        "Optuna storage": data.storage_url,
        "study started": provenance.time_text(parent.get("start_time")),
        "study finished": provenance.time_text(parent.get("end_time")),
        "runs": f"{len(runs)} (final ok: {len(data.final())}, tune: "
                f"{int((runs['phase'] == PHASE_TUNE).sum())}, failed or diverged: "
                f"{int((~runs['ok']).sum())})",
        "report created": created,
        "git commit (report code)": provenance.git_commit(),
        **{f"version {k}": v for k, v in provenance.versions().items()},
        **provenance.machine(),
    }
    settings = key_settings(data.config)
    if settings:
        section.say(f"The study configuration as recorded with the parent run "
                    f"({STUDY_ARTIFACT}) is attached to this PDF and written next to it as "
                    f"{STUDY_ARTIFACT}; its key settings:")
        frame = pd.DataFrame(settings, columns=["setting", "value"])
        section.add(Table("settings", frame, frame,
                          f"Key settings of the study ({STUDY_ARTIFACT} has every one)."))
    else:
        section.say(f"The parent run has no {STUDY_ARTIFACT} artifact; the configuration "
                    "is available only as the parent run's parameters.")
    section.say("The report was generated from the recorded runs only (nothing retrained). "
                "The git commit and versions are those of the code that generated the "
                "report; the machine is where it was generated.")
    table = pd.DataFrame({"item": list(items), "value": [str(v) for v in items.values()]})
    section.add(Table("provenance", table, table, "Provenance of this report."))
    return section
