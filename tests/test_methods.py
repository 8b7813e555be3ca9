"""The method table drives config, CLI, optimizers; hyper-parameters are typed and bounded."""

from __future__ import annotations

import dataclasses
import stat

import pytest
import torch
from click.testing import CliRunner

import harness.optim
from harness.atomic import atomic_write
from harness.cli import cli
from harness.config import hparams_of, method_config, study_from_dict
from harness.errors import HarnessError
from harness.optim import METHODS, get_method, needs_closure
from harness.optim.methods import hparam_names


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_is_usable_everywhere_from_its_entry(name, tiny_study_dict):
    method = METHODS[name]
    # the class is exported by name, and builds from the typed defaults
    assert getattr(harness.optim, method.optimizer.__name__) is method.optimizer
    opt = method.build(torch.nn.Linear(3, 2).parameters(), method.defaults())
    assert isinstance(opt, method.optimizer) and needs_closure(opt) == method.sharpness_aware
    assert method.passes == (2 if method.sharpness_aware else 1)
    # a study may name it with its own keys, tune its tunable keys, and nothing else
    values = method.defaults().as_dict()
    search = {key: {"low": 0.1, "high": 0.2} for key in method.tunable}
    tiny_study_dict["methods"] = {name: {**values, "search": search}}
    cfg = study_from_dict(tiny_study_dict)
    assert hparams_of(cfg.methods[name]) == method.defaults()
    assert set(method.tunable) <= set(hparam_names(method.hparams))
    # and `harness train` has an option for each of its settings
    help_text = CliRunner().invoke(cli, ["train", "--help"]).output
    assert all(f"--{k.replace('_', '-')}" in help_text for k in hparam_names(method.hparams))
    assert name in help_text


def test_method_defaults_are_the_optimizers_defaults():
    asam = get_method("asam").defaults()
    assert (asam.rho, asam.eta) == (0.5, 0.01)  # Kwon et al.
    assert get_method("sam").defaults().rho == 0.05  # Foret et al.
    section = method_config("asam", rho=0.3)
    assert hparams_of(section) == dataclasses.replace(asam, rho=0.3) and section.search == {}


@pytest.mark.parametrize("method, values, key", [
    ("asam", {"rho": -1.0}, "methods.asam.rho"),
    ("adamw", {"lr": 0.0}, "methods.adamw.lr"),
    ("adamw", {"weight_decay": -5.0}, "methods.adamw.weight_decay"),
    ("sam", {"every_k": 0}, "methods.sam.every_k"),
    ("asam", {"search": {"rho": {"low": -1.0, "high": 1.0}}}, "methods.asam.search.rho"),
    ("sam", {"search": {"lr": {"choices": [0.1, 0.0]}}}, "methods.sam.search.lr"),
])
def test_out_of_range_hyperparameters_are_refused_at_load(tiny_study_dict, method, values, key):
    tiny_study_dict["methods"] = {method: values}
    with pytest.raises(HarnessError) as info:
        study_from_dict(tiny_study_dict, source="s.yaml")
    assert f"'{key}'" in str(info.value) and "\n" not in str(info.value)


def test_cli_refuses_out_of_range_and_foreign_settings(home):
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--preset", "smoke", "--method", "asam", "--rho",
                                 "-1"])
    assert result.exit_code == 2 and "--rho" in result.output and "≥ 0" in result.output
    result = runner.invoke(cli, ["train", "--preset", "smoke", "--method", "adamw", "--lr",
                                 "0"])
    assert result.exit_code == 2 and "--lr" in result.output
    assert not (home / "mlflow.db").exists()  # refused before anything was recorded


def test_trial_restores_the_callers_thread_count(home, tiny_study_dict):
    from harness.experiment.trial import TrialSpec, method_hparams, run_trial
    from harness.tracking.store import get_experiment_id, tracking_client

    tiny_study_dict["train"]["threads"] = 2
    cfg = study_from_dict(tiny_study_dict)
    client = tracking_client()
    spec = TrialSpec("adamw", method_hparams(cfg, "adamw"), 0, "single")
    before = torch.get_num_threads()  # 1, set by the session fixture
    run_trial(cfg, spec, client, get_experiment_id(client, "threads"), progress=False)
    assert torch.get_num_threads() == before != cfg.train.threads


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half")
            raise RuntimeError("crash mid-write")
    assert not target.exists() and list(target.parent.iterdir()) == []
    with atomic_write(target) as f:
        f.write(b"whole")
    assert target.read_bytes() == b"whole" and list(target.parent.iterdir()) == [target]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_equal_compute_control_and_budget_in_passes(home, tiny_study_dict):
    """adamw-2x trains twice the epochs of the study; every run records its budget in
    forward/backward passes (steps × passes per step), and train time leaves out validation."""
    from harness.experiment.trial import TrialSpec, method_hparams, run_trial
    from harness.tracking import schema
    from harness.tracking.store import get_experiment_id, tracking_client

    tiny_study_dict["methods"] = {"adamw": {}, "adamw-2x": {}, "asam": {}}
    cfg = study_from_dict(tiny_study_dict)
    client = tracking_client()
    experiment = get_experiment_id(client, "budget")
    steps, passes = {}, {}
    for method in cfg.methods:
        ids = []
        run_trial(cfg, TrialSpec(method, method_hparams(cfg, method), 0, "single"), client,
                  experiment, on_run_created=ids.append, progress=False)
        steps[method] = len(client.get_metric_history(ids[0], schema.TRAIN_LOSS))
        metrics = client.get_run(ids[0]).data.metrics
        passes[method] = metrics[schema.COST_PASSES]
        assert metrics[schema.COST_VALIDATION] > 0
    assert steps["adamw-2x"] == 2 * steps["adamw"] and steps["asam"] == steps["adamw"]
    assert passes == {"adamw": steps["adamw"], "adamw-2x": 2 * steps["adamw"],
                      "asam": 2 * steps["adamw"]}


def test_training_time_leaves_validation_out():
    import time

    from harness.data import synthetic_split
    from harness.model import build_model
    from harness.train.loop import train

    data = synthetic_split("shapes", "train", 4, 32, 0, 2, None)

    def slow_validation(model):
        time.sleep(0.3)
        return {"val/miou": 0.0}

    start = time.perf_counter()
    result = train(build_model("tiny-32"), data, "adamw", get_method("adamw").defaults(),
                   epochs=2, batch_size=4, seed=0, validate=slow_validation, progress=False)
    wall = time.perf_counter() - start
    assert result.validation_seconds >= 0.6 and result.seconds <= wall - 0.6


def test_asam_scales_weight_matrices_only_when_asked(tiny_study_dict):
    tiny_study_dict["methods"] = {"asam": {"adaptive_1d": False}}
    hparams = hparams_of(study_from_dict(tiny_study_dict).methods["asam"])
    assert hparams.adaptive_1d is False and get_method("asam").defaults().adaptive_1d is True
    opt = get_method("asam").build(torch.nn.Linear(3, 2).parameters(), hparams)
    assert opt.param_groups[0]["adaptive_1d"] is False
    tiny_study_dict["methods"] = {"asam": {"adaptive_1d": "weights"}}
    with pytest.raises(HarnessError, match="'methods.asam.adaptive_1d'"):
        study_from_dict(tiny_study_dict)
