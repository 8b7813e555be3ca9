"""Fine-tuning modes end to end: a study trains, logs and reloads in decoder, LoRA and
layer-decay modes, and frozen weights stay exactly as the base left them."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

from harness.config import study_from_dict
from harness.errors import HarnessError
from harness.data.sources import load_split
from harness.evaluate.segment import evaluate_dataset
from harness.experiment.base import base_path
from harness.experiment.ondemand import load_logged_model
from harness.experiment.study import run_study
from harness.model import build_model
from harness.tracking import schema
from harness.tracking.store import default_tracking_uri

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _finals(name):
    client = MlflowClient(default_tracking_uri())
    exp = client.get_experiment_by_name(name)
    return client, client.search_runs(
        [exp.experiment_id], f"tags.`{schema.ROLE}` = 'trial' and tags.`{schema.PHASE}` = 'final'")


@pytest.mark.parametrize("model, train", [
    ({"trainable": "decoder"}, {}),
    ({"trainable": "lora", "lora": {"rank": 2, "alpha": 4.0}}, {}),
    ({"trainable": "all"}, {"layer_decay": 0.5}),
])
def test_mode_trains_logs_and_reloads(home, tiny_study_dict, model, train):
    tiny_study_dict["model"].update(model, base={"domain": "lesions", "train_size": 8,
                                                 "epochs": 1, "batch_size": 4})
    tiny_study_dict["train"].update(train)
    tiny_study_dict["methods"] = {"asam": {"lr": 1e-3}}
    tiny_study_dict["tuning"]["trials_per_method"] = 1
    tiny_study_dict["final_seeds"] = [1]
    tiny_study_dict["evaluate"] = {"priors": []}
    cfg = study_from_dict(tiny_study_dict)
    run_study(cfg, progress=False)
    client, (final,) = _finals("tiny")
    assert final.data.tags[schema.STATUS] == schema.STATUS_OK
    _, _, reloaded = load_logged_model(final.info.run_id, client=client)
    test = load_split(cfg.data, "test")
    # the logged weights, rebuilt in their mode, score what the run recorded
    assert evaluate_dataset(reloaded, test)["miou"] == pytest.approx(
        final.data.metrics[schema.TEST_MIOU], abs=1e-9)
    base = build_model(cfg.model.preset, base_path(cfg)).state_dict()
    after = reloaded.state_dict()
    frozen = [k for k, p in build_model(cfg.model.preset, base_path(cfg), cfg.model.trainable,
                                        cfg.model.lora_spec()).named_parameters()
              if not p.requires_grad]
    if cfg.model.trainable == "all":
        assert not frozen
    for key in frozen:  # peft renames the wrapped layers' own weights to base_layer
        original = key.replace(".base_layer", "")
        assert torch.equal(after[key], base[original]), key


def test_frozen_modes_need_pretrained_weights(tiny_study_dict):
    tiny_study_dict["model"] = {"preset": "tiny-32", "trainable": "lora"}
    with pytest.raises(HarnessError, match="'model.trainable'"):
        study_from_dict(tiny_study_dict)
    tiny_study_dict["model"] = {"preset": "litemedsam", "trainable": "decoder"}
    assert study_from_dict(tiny_study_dict).model.pretrained  # brings its own weights
    tiny_study_dict["train"]["layer_decay"] = 1.5
    with pytest.raises(HarnessError, match="'train.layer_decay'"):
        study_from_dict(tiny_study_dict)
