"""Study configs: presets merge, and every user mistake names the key and the file."""

import pytest
import yaml

from harness.config import load_study, study_from_dict
from harness.errors import HarnessError


def write(tmp_path, data, name="s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_study_loads_with_every_preset():
    for preset in (None, "smoke", "cpu", "gpu"):
        cfg = load_study("asam-vs-adamw", preset)
        assert set(cfg.methods) == {"adamw", "asam"}
        assert cfg.preset == preset
    smoke = load_study("asam-vs-adamw", "smoke")
    assert smoke.model.preset == "tiny-64" and smoke.data.image_size == 64
    # deep merge: the preset changed data sizes but kept the rest of the base's
    assert smoke.data.max_objects == 3 and smoke.data.seed == 0 and smoke.data.domain == "lesions"
    assert smoke.data.box_margin == 0.25  # loose prompts: the box alone does not give the mask
    for preset in ("smoke", None):  # fine-tuned from a base of another domain, never from scratch
        assert load_study("asam-vs-adamw", preset).model.base.domain == "shapes"
    for preset in ("litemedsam", "gpu"):  # pretrained presets start from their own weights
        assert load_study("asam-vs-adamw", preset).model.base is None


@pytest.mark.parametrize("study", ["asam-vs-adamw", "optimizers-under-shift", "rho-sweep",
                                   "real-shift"])
def test_every_shipped_study_loads_with_each_of_its_presets(study):
    from harness.config import resolve_study_path

    presets = yaml.safe_load(resolve_study_path(study).read_text())["presets"]
    assert "smoke" in presets and "cpu" in presets
    for preset in (None, *presets):
        assert load_study(study, preset).preset == preset


def test_four_way_study_is_what_the_issue_asks_for():
    cfg = load_study("optimizers-under-shift")
    assert set(cfg.methods) == {"adamw", "sam", "asam"}
    assert cfg.ensembles["sam-e"].members == "adamw" and len(cfg.final_seeds) >= 5
    assert {"common", "domain", "prompt"} <= set(cfg.evaluate.shifts)
    assert cfg.evaluate.severities == [1, 2, 3, 4, 5] and cfg.probes.enabled
    sweep = load_study("rho-sweep")
    assert sweep.tuning.sampler == "grid" and sweep.train.min_loss_drop


def test_preset_deep_merges(tiny_study_dict):
    cfg = study_from_dict(tiny_study_dict, "smaller")
    assert cfg.final_seeds == [1] and cfg.data.train_size == 8


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d["data"].update(trainsize=3), "data.trainsize"),
    (lambda d: d.update(epochs=3), "epochs"),
    (lambda d: d["train"].update(epochs="three"), "train.epochs"),
    (lambda d: d["train"].update(epochs=True), "train.epochs"),
    (lambda d: d["methods"]["asam"]["search"].update(momentum={"low": 0, "high": 1}),
     "methods.asam.search.momentum"),
    (lambda d: d["methods"]["adamw"].update(rho=0.1), "methods.adamw"),
    (lambda d: d["methods"].update(lion={}), "methods.lion"),
    (lambda d: d["model"].update(preset="vit_x"), "model.preset"),
    (lambda d: d["data"].update(domain="mars"), "data.domain"),
    (lambda d: d["methods"]["adamw"]["search"]["lr"].update(low=1.0), "methods.adamw.search.lr"),
    (lambda d: d.update(final_seeds=[1, 1]), "final_seeds"),
    (lambda d: d.update(probes={"trace_samples": 1}), "probes.trace_samples"),
    (lambda d: d.update(probes={"landscape_points": 4}), "probes.landscape_points"),
    (lambda d: d.update(probes={"hessian_k": 3, "hessian_iters": 2}), "probes.hessian_iters"),
    (lambda d: d.update(evaluate={"shifts": ["rain"]}), "evaluate.shifts"),
    (lambda d: d.update(evaluate={"severities": [6]}), "evaluate.severities"),
    (lambda d: d["model"].update(trainable="decoder"), "model.trainable"),
])
def test_bad_keys_name_key_and_file(tmp_path, tiny_study_dict, mutate, key):
    mutate(tiny_study_dict)
    path = write(tmp_path, tiny_study_dict)
    with pytest.raises(HarnessError) as info:
        load_study(str(path))
    message = str(info.value)
    assert f"'{key}'" in message and str(path) in message and "\n" not in message


def test_unknown_preset_and_missing_file(tmp_path, tiny_study_dict):
    path = write(tmp_path, tiny_study_dict)
    with pytest.raises(HarnessError, match="no preset 'huge'"):
        load_study(str(path), "huge")
    with pytest.raises(HarnessError, match="nope.yaml"):
        load_study(str(tmp_path / "nope.yaml"))
    with pytest.raises(HarnessError, match="no study named 'nope'"):
        load_study("nope")


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(HarnessError, match="broken.yaml: invalid YAML"):
        load_study(str(path))


def test_bad_key_inside_preset_names_the_preset(tmp_path, tiny_study_dict):
    tiny_study_dict["presets"]["smaller"]["train"] = {"epoch": 2}
    path = write(tmp_path, tiny_study_dict)
    with pytest.raises(HarnessError, match=r"preset smaller.*'train.epoch'"):
        load_study(str(path), "smaller")


def test_no_tuning_is_allowed_but_not_with_a_grid_or_below_zero(tiny_study_dict):
    tiny_study_dict["tuning"]["trials_per_method"] = 0
    assert study_from_dict(tiny_study_dict).tuning.trials_per_method == 0
    tiny_study_dict["tuning"]["trials_per_method"] = -1
    with pytest.raises(HarnessError, match="'tuning.trials_per_method' must be ≥ 0"):
        study_from_dict(tiny_study_dict)
    tiny_study_dict["tuning"].update(trials_per_method=0, sampler="grid")
    tiny_study_dict["methods"] = {"sam": {"search": {"rho": {"choices": [0.05]}}}}
    with pytest.raises(HarnessError, match="'tuning.trials_per_method' is 0 but"):
        study_from_dict(tiny_study_dict)


def test_a_claims_file_run_as_a_study_points_to_harness_claims():
    with pytest.raises(HarnessError, match="a claims file, not a study: run it with "
                                           "`harness claims article-claims`"):
        load_study("article-claims")
