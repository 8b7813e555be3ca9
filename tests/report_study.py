"""The studies the report tests read, recorded once per test session by the real study runner
(`report_home` in conftest.py): `tiny` (adamw + asam, 2 final seeds each, shifts, probes, the
runner's box priors) and `tiny-fail`, where every ASAM tuning trial diverges."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from harness.config import study_from_dict
from harness.experiment.study import run_study

EVALUATE = {"shifts": ["gaussian_noise", "domain", "prompt"], "severities": [1, 3],
            "shift_images": 2, "workers": 1}
PROBES = {"enabled": True, "batches": 1, "batch_size": 2, "hessian_iters": 2,
          "trace_samples": 2, "average_samples": 2, "landscape_points": 3}


def study_dict(name: str, **changes) -> dict:
    """The tiny test study with shifts and probes, renamed, with top-level `changes`."""
    from tests.conftest import TINY_STUDY

    study = copy.deepcopy(TINY_STUDY)
    study.update(name=name, evaluate=EVALUATE, probes=PROBES, **changes)
    return study


def record_report_studies(home: Path) -> Path:
    """Run `tiny` and `tiny-fail` into HARNESS_HOME `home`; returns `home`."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_HOME", str(home))
        run_study(study_from_dict(study_dict("tiny")), progress=False)
        failing = study_dict("tiny-fail", final_seeds=[1],
                             tuning={"trials_per_method": 1, "n_startup_trials": 1})
        failing["methods"]["asam"] = {"lr": 1.0e30, "search": {
            "weight_decay": {"low": 0.0, "high": 0.1}}}
        failing["train"]["grad_clip"] = None
        run_study(study_from_dict(failing), progress=False)
    return home
