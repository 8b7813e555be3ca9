"""`harness claims`: the verdict rule on hand-made estimates, claims-file errors, and a tiny
claims file run end to end on real MLflow and Optuna stores."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from harness.cli import cli
from test_report_latex import PDFLATEX, _assert_compiled, compile_tables
from harness.errors import HarnessError
from harness.report.claims.measures import savings_bracket
from harness.report.claims.spec import claims_from_dict
from harness.report.claims.verdict import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_TESTED,
    SUPPORTED,
    VERDICTS,
    combine,
    judge,
)
from harness.report.stats import Estimate, mean_ci
from harness.tracking import schema
from harness.tracking.store import default_tracking_uri


# ------------------------------------------------------------------ the verdict rule
@pytest.mark.parametrize(("low", "high", "claimed", "verdict"), [
    (1.22, 1.28, (1.2, 1.3), SUPPORTED),  # interval inside the claimed range
    (1.25, 1.40, (1.2, 1.3), INCONCLUSIVE),  # overlapping its upper edge
    (1.10, 1.25, (1.2, 1.3), INCONCLUSIVE),  # overlapping its lower edge
    (1.10, 1.40, (1.2, 1.3), INCONCLUSIVE),  # wider than the range on both sides
    (1.90, 2.10, (1.2, 1.3), CONTRADICTED),  # entirely above
    (0.90, 1.10, (1.2, 1.3), CONTRADICTED),  # entirely below
    (0.01, 0.05, (0.0, math.inf), SUPPORTED),  # "more robust": Δ > 0
    (-0.01, 0.05, (0.0, math.inf), INCONCLUSIVE),
    (-0.05, -0.01, (0.0, math.inf), CONTRADICTED),
    (-0.01, 0.01, (-0.02, math.inf), SUPPORTED),  # "no worse than 0.02"
])
def test_the_interval_decides_against_the_claimed_range(low, high, claimed, verdict):
    est = Estimate((low + high) / 2, low, high, 5)
    got, rule = judge(est, *claimed)
    assert got == verdict, rule
    assert "95 % CI" in rule


def test_too_few_runs_are_inconclusive_whatever_the_mean():
    est = mean_ci([2.0, 2.1])  # far outside the range, but n = 2: no interval
    assert not est.has_ci
    verdict, rule = judge(est, 1.2, 1.3)
    assert verdict == INCONCLUSIVE and "no 95 % interval" in rule and "n = 2" in rule
    assert judge(mean_ci([]), 1.2, 1.3)[0] == INCONCLUSIVE


def test_parts_combine_into_one_verdict():
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([SUPPORTED, CONTRADICTED]) == CONTRADICTED
    assert combine([INCONCLUSIVE, CONTRADICTED]) == CONTRADICTED
    assert combine([NOT_TESTED]) == NOT_TESTED
    assert combine([SUPPORTED, NOT_TESTED]) == INCONCLUSIVE  # half a statement is not all


def _diff(mean: float, half: float = 0.01, n: int = 5) -> Estimate:
    return Estimate(mean, mean - half, mean + half, n)


def test_label_savings_are_bracketed_by_the_rungs_that_surely_match_or_fail():
    """ASAM − AdamW@all per rung (all = 400 images), tolerance 0.02, by hand: 50 surely fails
    (upper −0.03), 100 is unsure, 200 and 400 surely match → saved between 1 − 200/400 and
    1 − 50/400; the point is the smallest size whose mean matches onwards (100)."""
    rungs = [(400, _diff(0.0)), (50, _diff(-0.05, 0.02)), (200, _diff(-0.005)),
             (100, _diff(-0.015, 0.02))]
    est, words = savings_bracket(rungs, 400, 0.02)
    assert (est.mean, est.low, est.high, est.n) == (0.75, 0.5, 0.875, 5)
    assert words.startswith("50: -0.050 [-0.070, -0.030]")
    assert judge(est, 0.4, 0.6)[0] == INCONCLUSIVE
    assert judge(savings_bracket(rungs, 400, 0.1)[0], 0.4, 0.6)[0] == CONTRADICTED  # > 0.6
    # no rung surely matches, every rung surely fails: no saving (0, not a negative guess)
    bad = [(n, _diff(-0.2)) for n in (50, 100, 400)]
    est = savings_bracket(bad, 400, 0.02)[0]
    assert (est.mean, est.low, est.high) == (0.0, 0.0, 0.0)
    assert judge(est, 0.4, 0.6)[0] == CONTRADICTED
    # a rung that fails above one that matches: the larger sizes decide the lower bound
    mixed = [(50, _diff(0.0)), (100, _diff(-0.2)), (200, _diff(0.0)), (400, _diff(0.0))]
    est = savings_bracket(mixed, 400, 0.02)[0]
    assert (est.mean, est.low, est.high) == (0.5, 0.5, 0.75)
    # a rung of two runs: a point, no interval, so the verdict is inconclusive
    two = Estimate(0.0, math.nan, math.nan, 2, "n = 2")
    few = savings_bracket([(200, two), (400, _diff(0.0))], 400, 0.02)[0]
    assert few.mean == 0.5 and not few.has_ci and judge(few, 0.4, 0.6)[0] == INCONCLUSIVE


# ------------------------------------------------------------------ a tiny claims file
def _claims(tiny_study_path) -> dict:
    return {
        "name": "tiny-claims",
        "study": str(tiny_study_path),
        "arms": {
            "main": {"set": {"ensembles": {"sam-e": {"members": "adamw"}}}},
            "noise": {"set": {"data": {"label_noise_boundary": 1, "label_noise_drop": 0.3}}},
            "rho": {"methods": ["asam"], "set": {
                "tuning": {"sampler": "grid", "trials_per_method": 2},
                "methods": {"asam": {"search": {"rho": {"choices": [0.5, 1.0e12]}}}},
                "final_seeds": [1], "evaluate": {"shifts": []}}},
            "labels-4": {"methods": ["asam"], "set": {  # a rung of the label ladder
                "data": {"train_size": 4}, "train": {"epochs": 2}, "evaluate": {"shifts": []}}},
            "other-size": {"set": {  # a second rung of a model-size ladder
                "model": {"preset": "tiny-64-s"}, "data": {"image_size": 64},
                "evaluate": {"shifts": []}}},
        },
        "statements": [
            {"id": 1, "text": "ASAM costs +20–30 % training compute.", "test": "ratio",
             "arm": "main", "method": "asam", "metric": "cost/train_seconds",
             "claimed": [1.2, 1.3]},
            {"id": 2, "text": "ASAM raises memory by about 15 %.", "test": "ratio",
             "arm": "main", "method": "asam", "metric": "cost/peak_memory_mb",
             "claimed": [1.1, 1.2], "device": "cuda"},
            {"id": 4, "text": "An ensemble costs K× at inference; ASAM is as robust.",
             "parts": [
                 {"test": "ensemble_cost", "arm": "main", "ensemble": "sam-e"},
                 {"test": "delta", "arm": "main", "method": "asam", "versus": "sam-e",
                  "metric": "shift/mean/miou", "claimed": [-0.02, None]}]},
            {"id": 7, "text": "A poor ρ destabilises training; 0.5 is the start.",
             "test": "divergence", "arm": "rho", "method": "asam", "param": "rho",
             "start": 0.5},
            {"id": 8, "text": "ASAM needs 40–60 % fewer labels.", "test": "label_savings",
             "arms": ["labels-4"], "method": "asam", "versus": "adamw", "versus_arm": "main",
             "claimed": [0.4, 0.6]},
            {"id": "9t", "text": "The gain shrinks for larger models.", "test": "size_trend",
             "arms": ["main", "other-size"], "method": "asam", "versus": "adamw",
             "claimed": [None, 0]},
            {"id": 9, "text": "ViT-L gains most.", "test": "untested", "measure": "size ladder",
             "reason": "needs a GPU", "tested_by": "preset gpu"},
            {"id": 11, "text": "ASAM amplifies annotation noise.", "test": "interaction",
             "arm": "noise", "baseline_arm": "main", "method": "asam", "versus": "adamw",
             "metric": "test/miou", "claimed": [None, 0]},
            {"id": 13, "text": "Noisy labels change ASAM.", "test": "delta", "arm": "noise",
             "method": "asam", "versus": "asam", "versus_arm": "main",
             "metric": "test/miou", "claimed": [0, None]},
        ],
    }


@pytest.fixture
def tiny_claims(tmp_path, tiny_study_dict):
    study = copy.deepcopy(tiny_study_dict)
    study["tuning"]["trials_per_method"] = 0  # the configured values: arms differ in one thing
    study["final_seeds"] = [1, 2, 3]
    study["evaluate"] = {"shifts": ["gaussian_noise"], "severities": [3]}
    study_path = tmp_path / "tiny.yaml"
    study_path.write_text(yaml.safe_dump(study))
    claims = _claims(study_path)
    path = tmp_path / "tiny-claims.yaml"
    path.write_text(yaml.safe_dump(claims, allow_unicode=True))
    return path, claims


@pytest.mark.parametrize(("change", "key"), [
    (lambda c: c.update(colour=1), "'colour'"),
    (lambda c: c["statements"][0].update(test="vibes"), "'statements[0].test'"),
    (lambda c: c["statements"][0].pop("metric"), "'statements[0].metric'"),
    (lambda c: c["statements"][0].update(arm="nowhere"), "'statements[0].arm'"),
    (lambda c: c["statements"][4].update(arms=["main", "nowhere"]), "'statements[4].arms'"),
    (lambda c: c["statements"][0].update(claimed=[2, 1]), "'statements[0].claimed'"),
    (lambda c: c["statements"][2]["parts"][0].update(extra=1), "'statements[2].parts[0].extra'"),
    (lambda c: c["arms"]["rho"].update(methods=["lion"]), "arms.rho.methods"),
    (lambda c: c["arms"]["main"].update(set={"train": {"epochs": 0}}), "'train.epochs'"),
    (lambda c: c.update(study_preset="nope"), "'study_preset'"),
])
def test_a_bad_claims_file_is_one_line_naming_the_key(home, tiny_claims, change, key):
    path, claims = tiny_claims
    change(claims)
    path.write_text(yaml.safe_dump(claims, allow_unicode=True))
    with pytest.raises(HarnessError, match=key.replace("[", r"\[").replace("]", r"\]")):
        claims_from_dict(claims, None, str(path))
    result = CliRunner().invoke(cli, ["claims", str(path)])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and key in result.output
    assert not (home / "mlflow.db").exists()  # nothing ran


def test_every_arm_starts_from_the_study_preset_then_the_common_changes(tiny_claims):
    path, claims = tiny_claims
    claims.update(study_preset="smaller", set={"train": {"epochs": 2}, "final_seeds": [4, 5]})
    spec = claims_from_dict(claims, None, str(path))
    main, rho = spec.arm_config("main"), spec.arm_config("rho")
    assert main.name == "tiny-claims.main" and main.train.epochs == rho.train.epochs == 2
    assert main.final_seeds == [4, 5] and rho.final_seeds == [1]  # the arm's own set wins
    assert list(rho.methods) == ["asam"] and not rho.ensembles
    assert list(main.ensembles) == ["sam-e"]


def test_claims_run_every_arm_judge_every_statement_and_write_every_file(home, tmp_path,
                                                                           tiny_claims):
    path, claims = tiny_claims
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["claims", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    for suffix in ("csv", "md", "tex", "pdf"):
        assert (out / f"claims.{suffix}").stat().st_size > 0
    rows = [line for line in (out / "claims.md").read_text().splitlines()
            if line.startswith("|")]
    assert len(rows) == 2 + len(claims["statements"])  # header, rule, one per statement
    assert len({row.count("|") for row in rows}) == 1  # no cell splits in two
    assert (out / "report" / "report.pdf").exists()  # the main arm's full report
    table = pd.read_csv(out / "claims.csv", dtype={"id": str})
    assert list(table["id"]) == [str(s["id"]) for s in claims["statements"]]
    assert set(table["verdict"]) <= set(VERDICTS)
    verdict = dict(zip(table["id"], table["verdict"]))
    assert verdict["7"] == SUPPORTED  # ρ = 1e12 diverged, 0.5 trained
    assert "1e+12" in table.set_index("id").loc["7", "rule"]
    assert verdict["9"] == NOT_TESTED
    # the label ladder: ASAM on 4 and on all 8 images against AdamW on all 8
    ladder = table.set_index("id").loc["8"]
    assert "on all 8" in ladder["measured"] and "(rungs, asam − adamw: 4: " in ladder["measured"]
    assert ladder["arms"] == "tiny-claims.labels-4, tiny-claims.main"
    assert ladder["mean"] in (0.0, 0.5) and ladder["n"] == "3"
    # the size ladder: the slope over 3 + 3 paired seeds, per doubling of parameters
    trend = table.set_index("id").loc["9t"]
    assert trend["n"] == "6" and math.isfinite(trend["ci_low"])
    assert "per doubling of model parameters" in trend["measured"]
    assert " M: " in trend["measured"] and trend["verdict"] in VERDICTS
    # CPU peak memory is the process's resident set: the memory claim waits for a GPU
    assert verdict["2"] == NOT_TESTED
    assert "needs runs on cuda; these ran on cpu" in table.set_index("id").loc["2", "rule"]
    assert table.set_index("id").loc["9", "tested_by"] == "preset gpu"
    # three seeds: an interval, so a real verdict from the rule
    ratio = table.set_index("id").loc["1"]
    assert ratio["n"] == "3" and math.isfinite(ratio["ci_low"])
    assert ratio["verdict"] == judge(Estimate(ratio["mean"], ratio["ci_low"],
                                              ratio["ci_high"], 3), 1.2, 1.3)[0]
    # the one ensemble run is a single value: its part cannot have an interval
    assert verdict["4"] in (INCONCLUSIVE, CONTRADICTED)
    # no tuning: the finals trained the configured values (tuning trial -1)
    client = MlflowClient(default_tracking_uri())
    main = client.get_experiment_by_name("tiny-claims.main")
    runs = client.search_runs([main.experiment_id], f"tags.`{schema.ROLE}` = 'trial'")
    assert {r.data.tags[schema.PHASE] for r in runs} == {schema.PHASE_FINAL}
    assert {r.data.tags[schema.TUNE_TRIAL] for r in runs} == {"-1"}
    assert {float(r.data.params["lr"]) for r in runs} == {1.0e-3}
    assert {r.data.tags[schema.DEVICE] for r in runs} == {"cpu"}
    # the claims files are on the main arm's parent run
    parent = client.search_runs([main.experiment_id], f"tags.`{schema.ROLE}` = 'study'")[0]
    logged = {f.path for f in client.list_artifacts(parent.info.run_id, "claims")}
    assert logged == {f"claims/claims.{s}" for s in ("csv", "md", "tex", "pdf")}
    # again: every arm is resumed, nothing is trained twice, the table is the same
    before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    again = CliRunner().invoke(cli, ["claims", str(path), "--out", str(out), "--quiet",
                                     "--no-report"])
    assert again.exit_code == 0, again.output
    after = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    assert after == before
    pd.testing.assert_frame_equal(pd.read_csv(out / "claims.csv", dtype={"id": str}), table)
    if PDFLATEX:  # the claims table compiles like every report table
        run, pdf = compile_tables([out / "claims.tex"], tmp_path)
        assert "ViT-L gains most" in _assert_compiled(run, pdf, [out / "claims.tex"])
