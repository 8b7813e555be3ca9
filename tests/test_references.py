"""Pretrained bases, and the reference rows (priors, zero-shot) a study records beside its runs."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from harness.config import study_from_dict
from harness.data.sources import load_splits
from harness.evaluate.priors import PRIORS
from harness.evaluate.segment import evaluate_dataset
from harness.experiment.base import BASES_EXPERIMENT, base_path
from harness.experiment.study import run_study
from harness.model import build_model
from harness.tracking import schema
from harness.tracking.store import default_tracking_uri

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

BASE = {"domain": "lesions", "train_size": 8, "epochs": 1, "batch_size": 4, "lr": 2e-3}


def _study(tiny_study_dict, name="tiny", base=True):
    tiny_study_dict["name"] = name
    tiny_study_dict["model"]["base"] = dict(BASE) if base else None
    tiny_study_dict["methods"].pop("asam")
    tiny_study_dict["tuning"]["trials_per_method"] = 1
    tiny_study_dict["final_seeds"] = [1]
    return study_from_dict(tiny_study_dict)


def _runs(client, experiment, **tags):
    exp = client.get_experiment_by_name(experiment)
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return client.search_runs([exp.experiment_id], query, max_results=100)


def test_study_on_a_base_records_priors_and_zero_shot(home, tiny_study_dict):
    cfg = _study(tiny_study_dict)
    summary = run_study(cfg, progress=False)
    for name in ("box-fill", "ellipse-in-box", "point-disc", "zero-shot"):
        assert summary[name] == {"final": {"FINISHED": 1}}, summary

    client = MlflowClient(default_tracking_uri())
    base_runs = _runs(client, BASES_EXPERIMENT, **{schema.ROLE: schema.ROLE_BASE})
    assert len(base_runs) == 1 and base_runs[0].info.status == "FINISHED"
    assert base_path(cfg).is_file()

    splits = load_splits(cfg.data, ("train", "test"))
    # the zero-shot row is the base itself, scored like a final run
    zero = _runs(client, "tiny", **{schema.ROLE: schema.ROLE_ZERO_SHOT})
    assert len(zero) == 1
    base_model = build_model(cfg.model.preset, base_path(cfg))
    assert zero[0].data.metrics[schema.TEST_MIOU] == pytest.approx(
        evaluate_dataset(base_model, splits["test"])["miou"], abs=1e-9)
    # every prior is scored on the same test images as the trained runs
    for name in ("box-fill", "ellipse-in-box"):
        (run,) = _runs(client, "tiny", **{schema.ROLE: schema.ROLE_BASELINE,
                                          schema.METHOD: name})
        expected = evaluate_dataset(PRIORS[name](splits["train"]), splits["test"])["miou"]
        assert run.data.metrics[schema.TEST_MIOU] == pytest.approx(expected, abs=1e-9)
        assert {a.path for a in client.list_artifacts(run.info.run_id, schema.SCORES_DIR)} \
            >= {schema.scores_artifact("test")}
    # the trained final run started from the base, not from random weights
    (final,) = _runs(client, "tiny", **{schema.ROLE: schema.ROLE_TRIAL,
                                        schema.PHASE: schema.PHASE_FINAL})
    assert final.data.metrics[schema.TEST_MIOU] != zero[0].data.metrics[schema.TEST_MIOU]

    # resuming records no reference twice
    run_study(cfg, progress=False)
    assert len(_runs(client, "tiny", **{schema.ROLE: schema.ROLE_BASELINE})) == 3


def test_second_study_reuses_the_cached_base(home, tiny_study_dict):
    import copy

    first = _study(copy.deepcopy(tiny_study_dict), "first")
    run_study(first, progress=False)
    stamp = base_path(first).stat().st_mtime_ns
    second = _study(copy.deepcopy(tiny_study_dict), "second")
    assert base_path(second) == base_path(first)
    run_study(second, progress=False)
    client = MlflowClient(default_tracking_uri())
    assert len(_runs(client, BASES_EXPERIMENT, **{schema.ROLE: schema.ROLE_BASE})) == 1
    assert base_path(first).stat().st_mtime_ns == stamp
    # a different recipe is a different base
    tiny_study_dict["model"]["base"] = {**BASE, "epochs": 2}
    other = study_from_dict({**tiny_study_dict, "name": "third"})
    assert base_path(other) != base_path(first)


def test_base_and_checkpoint_are_exclusive(tiny_study_dict):
    from harness.errors import HarnessError

    tiny_study_dict["model"] = {"preset": "tiny-32", "checkpoint": "x.pt", "base": BASE}
    with pytest.raises(HarnessError, match="'model.base'"):
        study_from_dict(tiny_study_dict)
    tiny_study_dict["model"] = {"preset": "tiny-32", "base": {**BASE, "domain": "mars"}}
    with pytest.raises(HarnessError, match="'model.base.domain'"):
        study_from_dict(tiny_study_dict)


def test_eval_on_a_prior_run_rebuilds_the_prior(home, tiny_study_dict):
    from click.testing import CliRunner

    from harness.cli import cli

    cfg = _study(tiny_study_dict, base=False)
    run_study(cfg, progress=False)
    client = MlflowClient(default_tracking_uri())
    (run,) = _runs(client, "tiny", **{schema.ROLE: schema.ROLE_BASELINE,
                                      schema.METHOD: "ellipse-in-box"})
    result = CliRunner().invoke(cli, ["eval", run.info.run_id, "--shifts", "prompt", "--quiet"])
    assert result.exit_code == 0, result.output
    assert schema.point_metric("miou") in client.get_run(run.info.run_id).data.metrics
    probed = CliRunner().invoke(cli, ["probe", run.info.run_id])
    assert probed.exit_code == 2 and "prior" in probed.output


def _disc_folder(root, n=2, size=64):
    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    rng = np.random.default_rng(0)
    for i in range(n):
        cy, cx, r = 20 + 10 * i, 30, 12
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        image = (rng.normal(30, 8, (size, size)) + 170 * mask).clip(0, 255).astype(np.uint8)
        Image.fromarray(np.stack([image] * 3, -1)).save(root / "images" / f"d{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"d{i}.png")
    return root


@pytest.mark.slow
def test_eval_pretrained_scores_and_records_zero_shot(home, tmp_path):
    from click.testing import CliRunner

    from harness.cli import cli

    folder = _disc_folder(tmp_path / "discs")
    result = CliRunner().invoke(cli, ["eval", "--pretrained", "litemedsam", "--data",
                                      f"folder:{folder}", "--quiet"])
    assert result.exit_code == 0, result.output
    dice = float(next(line.split()[1] for line in result.output.splitlines()
                      if line.startswith("test/mdice")))
    assert dice >= 0.8  # a real pretrained model on bright discs
    client = MlflowClient(default_tracking_uri())
    (run,) = _runs(client, "zero-shot", **{schema.ROLE: schema.ROLE_ZERO_SHOT})
    assert run.info.status == "FINISHED" and run.data.metrics[schema.TEST_MIOU] > 0.6
    assert run.info.run_id in result.output


@pytest.mark.parametrize("args, needle", [
    (["--pretrained", "tiny-64", "--data", "builtin:nuclei"], "no weights of its own"),
    (["--pretrained", "litemedsam", "--data", "nuclei"], "SOURCE:PATH"),
    (["--pretrained", "litemedsam"], "--data"),
    (["--pretrained", "litemedsam", "--data", "folder:/no/such/folder"], "/no/such/folder"),
])
def test_eval_pretrained_refuses_bad_input(home, args, needle):
    from click.testing import CliRunner

    from harness.cli import cli

    result = CliRunner().invoke(cli, ["eval", *args])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert "Traceback" not in result.output


def test_a_reference_cut_by_kill_9_is_closed_and_recorded_once(home, tiny_study_dict):
    """What kill -9 leaves while a prior is being scored: its queued trial RUNNING (one
    heartbeat, then silence) and its MLflow run RUNNING. The next start fails the trial once
    stale, closes the run KILLED and records the prior again: one finished run, none
    RUNNING."""
    import time

    from harness.experiment.outcome import create_run
    from harness.experiment.queue import claim, heartbeat, queued_study
    from harness.experiment.study import open_study, optuna_name

    tiny_study_dict["methods"] = {"adamw": {"lr": 1e-3}}
    tiny_study_dict["tuning"].update(trials_per_method=0, heartbeat_seconds=1, grace_seconds=2)
    tiny_study_dict["final_seeds"] = [1]
    tiny_study_dict["evaluate"] = {"priors": ["box-fill"]}
    cfg = study_from_dict(tiny_study_dict)
    ctx = open_study(cfg, progress=False)
    study = queued_study(ctx.storage, optuna_name(cfg, schema.PHASE_REFERENCE, "box-fill"),
                         {"box-fill": {}})
    trial = claim(ctx.storage, study)
    with heartbeat(ctx.storage, trial):
        dead = create_run(ctx.client, ctx.experiment_id, {
            schema.PARENT_RUN: ctx.parent_run_id, schema.ROLE: schema.ROLE_BASELINE,
            schema.METHOD: "box-fill", schema.PHASE: schema.PHASE_FINAL}).info.run_id
        trial.set_user_attr(schema.ATTR_RUN_ID, dead)
    time.sleep(3)  # the dead process's heartbeat goes stale
    run_study(cfg, progress=False)
    client = MlflowClient(default_tracking_uri())
    assert client.get_run(dead).info.status == "KILLED"
    runs = client.search_runs([ctx.experiment_id], f"tags.`{schema.METHOD}` = 'box-fill'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    assert not client.search_runs([ctx.experiment_id], "attributes.status = 'RUNNING'")
    run_study(cfg, progress=False)  # resuming records nothing again
    assert len(client.search_runs([ctx.experiment_id],
                                  f"tags.`{schema.METHOD}` = 'box-fill'")) == 2
