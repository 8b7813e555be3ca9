"""`train.nproc`: one run trained by 2 CPU processes (torchrun, gloo) equals one process on
the global batch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from harness.config import study_from_dict
from harness.data import synthetic_split
from harness.experiment.study import run_study
from harness.model import build_model
from harness.optim import get_method
from harness.tracking import schema
from harness.tracking.store import default_tracking_uri
from harness.train.batches import make_batch, shard
from harness.train.loop import train
from harness.train.processes import train_in_processes


def test_shards_split_a_batch_by_image_and_keep_every_prompt_once(tmp_path):
    data = synthetic_split("shapes", "train", 5, 32, 0, 3, tmp_path)
    batch = make_batch(data, np.arange(5), np.random.default_rng(0), 0.1,
                       point_fraction=0.5, max_points=2)
    parts = [shard(batch, r, 2) for r in range(2)]
    assert [p.images.shape[0] for p in parts] == [3, 2]  # images 0, 2, 4 | 1, 3
    assert sum(len(p.boxes) for p in parts) == len(batch.boxes)
    for r, part in enumerate(parts):
        mine = torch.isin(batch.image_index, torch.arange(r, 5, 2))
        assert torch.equal(part.boxes, batch.boxes[mine])
        assert torch.equal(part.points.used, batch.points.used[mine])
        # each prompt still points at its own image, renumbered within the shard
        assert torch.equal(part.images[part.image_index], batch.images[batch.image_index[mine]])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["adamw", "asam"])
def test_two_processes_train_what_one_process_trains_on_the_global_batch(tmp_path, method):
    data = synthetic_split("shapes", "train", 6, 32, 0, 3, tmp_path)
    torch.manual_seed(0)
    start = build_model("tiny-32")
    hparams = get_method(method).defaults(lr=1e-3)
    settings = dict(epochs=2, batch_size=4, seed=3, warmup_steps=1, box_jitter=0.1,
                    grad_clip=1.0, point_prompts=0.5, max_points=2)
    one = copy.deepcopy(start)
    expected = train(one, data, method, hparams, progress=False, **settings)
    two = copy.deepcopy(start)
    curves = []
    got = train_in_processes(two, data, method, hparams, nproc=2, val=data, threads=1,
                             log=lambda step, m: curves.append((step, m)), **settings)
    assert got.steps == expected.steps == 4
    assert got.final_loss == pytest.approx(expected.final_loss, rel=1e-4)
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values()):
        if name.endswith("k_proj.bias"):
            # softmax ignores a bias shared by every key: its true gradient is 0, and Adam
            # scales the float noise that remains up to steps of ~1e-5 either way
            assert torch.allclose(a, b, atol=1e-4), name
        else:
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name
    moved = [n for n, p in start.state_dict().items() if not torch.equal(p, two.state_dict()[n])]
    assert moved  # it trained
    assert [step for step, m in curves if "train/loss" in m] == [1, 2, 3, 4]
    assert [m["val/miou"] for _, m in curves if "val/miou" in m]  # validated on rank 0


@pytest.mark.slow
def test_a_study_trial_runs_under_torchrun(home, tiny_study_dict):
    tiny_study_dict["methods"] = {"asam": {"lr": 1e-3}}
    tiny_study_dict["tuning"]["trials_per_method"] = 0
    tiny_study_dict["final_seeds"] = [1]
    tiny_study_dict["train"]["nproc"] = 2
    tiny_study_dict["evaluate"] = {"priors": []}
    run_study(study_from_dict(tiny_study_dict), progress=False)
    client = MlflowClient(default_tracking_uri())
    exp = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([exp.experiment_id], f"tags.`{schema.ROLE}` = 'trial'")
    assert run.data.tags[schema.STATUS] == schema.STATUS_OK
    assert run.data.params["train.nproc"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2
    assert 0 <= run.data.metrics[schema.TEST_MIOU] <= 1
