"""SAM-E: aggregation rules, ensembles of identical members, and the ensemble run of a study."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from harness.config import study_from_dict
from harness.data import synthetic_split
from harness.errors import HarnessError
from harness.evaluate.ensemble import AGGREGATIONS, Ensemble, aggregate
from harness.evaluate.segment import evaluate_dataset, predict_dataset
from harness.model import build_model
from harness.tracking.mlflow_log import runs_with_tags
from harness.tracking.store import get_experiment_id, tracking_client
from harness.experiment.study import run_study

# Three pixels where the rules disagree (K = 3 members, one row per member):
#   (+8, -2, -2): mean logit +4/3 → fg; mean prob (0.9997 + 2·0.1192)/3 = 0.41 → bg; 1 vote → bg
#   (-8, +1, +1): mean logit -2 → bg;   mean prob (0.0003 + 2·0.7311)/3 = 0.49 → bg; 2 votes → fg
#   (-8, +2, +2): mean logit -4/3 → bg; mean prob (0.0003 + 2·0.8808)/3 = 0.59 → fg; 2 votes → fg
LOGITS = torch.tensor([[8.0, -8.0, -8.0], [-2.0, 1.0, 2.0], [-2.0, 1.0, 2.0]])
EXPECTED = {"mean-logit": [True, False, False], "mean-prob": [False, False, True],
            "vote": [False, True, True]}


@pytest.mark.parametrize("rule", AGGREGATIONS)
def test_rules_differ_where_they_should(rule):
    assert (aggregate(LOGITS, rule) > 0).tolist() == EXPECTED[rule]


def test_aggregate_values_by_hand():
    logits = torch.tensor([[1.0, -3.0], [3.0, 1.0]])
    torch.testing.assert_close(aggregate(logits, "mean-logit"), torch.tensor([2.0, -1.0]))
    p = torch.sigmoid(logits).mean(0)
    torch.testing.assert_close(aggregate(logits, "mean-prob"), torch.log(p / (1 - p)))
    torch.testing.assert_close(aggregate(logits, "vote"), torch.tensor([0.5, 0.0]))


def test_vote_tie_is_background():
    assert not (aggregate(torch.tensor([[1.0], [-1.0]]), "vote") > 0).item()


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(LOGITS, "median")
    with pytest.raises(ValueError, match="aggregation"):
        Ensemble([torch.nn.Linear(1, 1)], "median")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return synthetic_split("shapes", "test", 4, 32, 0, 3, tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("rule", AGGREGATIONS)
def test_identical_members_equal_the_member(rule, tiny_data):
    torch.manual_seed(0)
    member = build_model("tiny-32")
    clones = [copy.deepcopy(member) for _ in range(3)]
    ensemble = Ensemble(clones, rule)
    np.testing.assert_array_equal(predict_dataset(ensemble, tiny_data, batch_size=3),
                                  predict_dataset(member, tiny_data, batch_size=3))
    single = evaluate_dataset(member, tiny_data)
    together = evaluate_dataset(ensemble, tiny_data)
    for key in ("miou", "mdice", "biou"):
        assert together[key] == single[key]


def test_mean_logit_ensemble_averages_member_logits(tiny_data):
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(build_model("tiny-32"))
    logits = [predict_dataset(m, tiny_data, return_logits=True) for m in members]
    np.testing.assert_allclose(predict_dataset(Ensemble(members), tiny_data, return_logits=True),
                               (logits[0] + logits[1]) / 2, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- config

@pytest.mark.parametrize("ensemble, key", [
    ({"members": "sam"}, "ensembles.sam-e.members"),
    ({"aggregation": "median"}, "ensembles.sam-e.aggregation"),
    ({"size": 3}, "ensembles.sam-e.size"),
    ({"colour": 1}, "ensembles.sam-e.colour"),
])
def test_config_errors_name_the_key(tiny_study_dict, ensemble, key):
    tiny_study_dict["ensembles"] = {"sam-e": ensemble}
    with pytest.raises(HarnessError, match=key.replace(".", r"\.")):
        study_from_dict(tiny_study_dict)


def test_ensemble_may_not_take_a_method_name(tiny_study_dict):
    tiny_study_dict["ensembles"] = {"asam": {"members": "adamw"}}
    with pytest.raises(HarnessError, match="ensembles.asam"):
        study_from_dict(tiny_study_dict)


# --------------------------------------------------------------------------- in a study

SHIFTS = {"shifts": ["gaussian_noise", "domain", "prompt"], "severities": [2],
          "shift_images": 2, "box_jitter_levels": [0.2], "workers": 0}


@pytest.fixture(scope="module")
def ensemble_study(tmp_path_factory):
    from tests.conftest import TINY_STUDY

    study = copy.deepcopy(TINY_STUDY)
    study["methods"].pop("asam")
    study["tuning"]["trials_per_method"] = 1
    study["tuning"]["n_startup_trials"] = 1
    study["evaluate"] = SHIFTS
    study["ensembles"] = {"sam-e": {"members": "adamw"},
                          "vote-e": {"members": "adamw", "aggregation": "vote", "size": 2}}
    home = tmp_path_factory.mktemp("home") / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_HOME", str(home))
        cfg = study_from_dict(study)
        run_study(cfg, progress=False)
        summary = run_study(cfg, progress=False)  # resumes: nothing new to do
        client = tracking_client()
        runs = client.search_runs([get_experiment_id(client, cfg.name)], max_results=1000)
    return summary, runs


def test_ensemble_runs_link_their_members(ensemble_study):
    summary, runs = ensemble_study
    # one run per ensemble although the study ran twice
    assert summary["sam-e"] == summary["vote-e"] == {"final": {"FINISHED": 1}}
    ensembles = [r for r in runs if r.data.tags.get("harness.role") == "ensemble"]
    assert sorted(r.data.tags["harness.method"] for r in ensembles) == ["sam-e", "vote-e"]
    finals = {int(r.data.tags["harness.seed"]): r for r in runs
              if r.data.tags.get("harness.phase") == "final"
              and r.data.tags.get("harness.role") == "trial"}
    parent = next(r for r in runs if r.data.tags["harness.role"] == "study")
    for run in ensembles:
        assert run.info.status == "FINISHED" and run.data.tags["harness.status"] == "ok"
        assert run.data.tags["harness.members"] == ",".join(
            finals[s].info.run_id for s in (1, 2))
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["ensemble_size"] == "2"
        assert run.data.tags["harness.phase"] == "final"


def test_ensemble_covers_the_same_shift_cells_and_sums_costs(ensemble_study):
    _, runs = ensemble_study
    ensemble = next(r for r in runs if r.data.tags.get("harness.method") == "sam-e")
    members = [r for r in runs if r.info.run_id in ensemble.data.tags["harness.members"]]
    single = {k for k in members[0].data.metrics if k.startswith("shift/")}
    assert single and {k for k in ensemble.data.metrics if k.startswith("shift/")} == single
    m = ensemble.data.metrics
    assert m["cost/train_seconds"] == pytest.approx(
        sum(r.data.metrics["cost/train_seconds"] for r in members))
    assert m["cost/infer_ratio_vs_member"] == pytest.approx(
        m["cost/infer_ms_per_image"] / m["cost/member_infer_ms_per_image"])
    assert 0 <= m["test/miou"] <= 1 and "val/miou" in m


def test_missing_members_are_stated_on_the_parent(home, tiny_study_dict):
    # AdamW diverges at lr 1e30: no final runs, so no ensemble; the parent says why.
    tiny_study_dict["methods"]["adamw"] = {"lr": 1.0e30}
    tiny_study_dict["train"]["grad_clip"] = None
    tiny_study_dict["ensembles"] = {"sam-e": {"members": "adamw"}}
    tiny_study_dict["tuning"]["trials_per_method"] = 1
    cfg = study_from_dict(tiny_study_dict)
    run_study(cfg, progress=False)
    client = tracking_client()
    exp = get_experiment_id(client, cfg.name)
    parent = runs_with_tags(client, [exp], {"harness.role": "study"})[0]
    assert "seed(s) 1, 2" in parent.data.tags["harness.no_final.sam-e"]
    assert not runs_with_tags(client, [exp], {"harness.role": "ensemble"})


def test_eval_on_demand_rebuilds_an_ensemble_and_keeps_its_suite(home, tiny_study_dict):
    from click.testing import CliRunner

    from harness.cli import cli

    tiny_study_dict["methods"].pop("asam")
    tiny_study_dict["tuning"]["trials_per_method"] = 1
    tiny_study_dict["evaluate"] = {**SHIFTS, "shifts": ["gaussian_noise"]}
    tiny_study_dict["ensembles"] = {"sam-e": {"members": "adamw"}}
    cfg = study_from_dict(tiny_study_dict)
    run_study(cfg, progress=False)
    client = tracking_client()
    exp = get_experiment_id(client, cfg.name)
    run = runs_with_tags(client, [exp], {"harness.role": "ensemble"})[0]
    before = run.data.metrics
    result = CliRunner().invoke(cli, ["eval", run.info.run_id, "--shifts", "contrast",
                                      "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    after = client.get_run(run.info.run_id).data.metrics
    # the new cell is added; the recorded cell is re-read (same value), not dropped
    assert "shift/contrast/s2/miou" in after
    assert after["shift/gaussian_noise/s2/miou"] == before["shift/gaussian_noise/s2/miou"]
    assert after["shift/mean/miou"] == pytest.approx(
        (after["shift/contrast/s2/miou"] + after["shift/gaussian_noise/s2/miou"]) / 2)
    probe = CliRunner().invoke(cli, ["probe", run.info.run_id])
    assert probe.exit_code == 2 and "ensemble" in probe.output
