"""The shift suite: every requested cell once, deterministic, cached, named for MLflow."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from harness.config import study_from_dict
from harness.data import SegDataset, synthetic_split
from harness.data.corruptions import CORRUPTION_GROUPS, corrupt_images
from harness.errors import HarnessError
from harness.evaluate.metrics import METRICS
from harness.evaluate.segment import evaluate_dataset
from harness.evaluate.shifts import COLUMNS, evaluate_shifts, resolve_shifts, shift_metrics
from harness.model import build_model

CORRUPTIONS = ["gaussian_noise", "contrast"]
SEVERITIES = [1, 5]
JITTER = [0.1, 0.4]
SHIFT_IMAGES = 3  # of the 4 test images: the suite must cut masks along with images
MLFLOW_NAME = re.compile(r"[A-Za-z0-9_\-. /]+")

STUDY = {
    "model": {"preset": "tiny-32"},
    "data": {"domain": "shapes", "image_size": 32, "test_size": 4, "max_objects": 3, "seed": 0},
    "train": {"eval_batch_size": 2},  # 2 batches: batching must not change a score
    "methods": {"adamw": {}},
    "evaluate": {
        "shifts": [*CORRUPTIONS, "domain", "prompt"], "severities": SEVERITIES,
        "shift_images": SHIFT_IMAGES,
        "domains": ["lesions", "shapes"],  # "shapes" is the training domain: skipped
        "box_jitter_levels": JITTER,
        "workers": 0,  # in-process: a spawn pool costs more than 3 tiny images
    },
}


def study_test_split(cfg, cache_dir, seed=None):
    d = cfg.data
    return synthetic_split(d.domain, "test", d.test_size, d.image_size,
                           d.seed if seed is None else seed, d.max_objects, cache_dir)


def cache_files(cache_dir):
    return {p.name: p.stat().st_mtime_ns for p in (cache_dir / "corrupt").glob("*.npy")}


def restricted(dataset: SegDataset, n: int) -> SegDataset:
    keep = dataset.owner < n
    return SegDataset(dataset.images[:n], dataset.masks[keep], dataset.owner[keep], "first")


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """One tiny model evaluated twice on the same cache; file snapshots around the 2nd call."""
    torch.manual_seed(0)
    model = build_model("tiny-32")
    cfg = study_from_dict(STUDY)
    cache_dir = tmp_path_factory.mktemp("cache")
    test = study_test_split(cfg, cache_dir)
    first = evaluate_shifts(model, cfg, test, cache_dir, progress=False)
    files_before = cache_files(cache_dir)
    second = evaluate_shifts(model, cfg, test, cache_dir, progress=False)
    return {"model": model, "cfg": cfg, "cache_dir": cache_dir, "test": test, "table": first,
            "again": second, "files_before": files_before, "files_after": cache_files(cache_dir)}


# --------------------------------------------------------------------------- the table


def test_every_requested_cell_once_with_sane_metrics(suite):
    table, test = suite["table"], suite["test"]
    assert list(table.columns) == list(COLUMNS)
    expected = {("clean", "clean", 0), ("domain:lesions", "domain", 0),
                ("prompt:point", "prompt", 0)}
    expected |= {(c, "corruption", s) for c in CORRUPTIONS for s in SEVERITIES}
    expected |= {("prompt:box_jitter", "prompt", i) for i in range(1, len(JITTER) + 1)}
    cells = list(zip(table["shift"], table["kind"], table["severity"]))
    assert len(cells) == len(set(cells)) and set(cells) == expected

    values = table[list(METRICS)].to_numpy()
    assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()

    cfg = suite["cfg"]
    lesions = synthetic_split("lesions", "test", cfg.data.test_size, cfg.data.image_size,
                              cfg.data.seed, cfg.data.max_objects, None)
    n_clean = int((test.owner < SHIFT_IMAGES).sum())
    assert 0 < n_clean < len(test)  # the cut really drops masks
    domain = table["kind"] == "domain"
    assert (table.loc[~domain, "n_masks"] == n_clean).all()
    assert (table.loc[domain, "n_masks"] == (lesions.owner < SHIFT_IMAGES).sum()).all()

    jitter = table["shift"] == "prompt:box_jitter"
    assert table.loc[jitter].sort_values("severity")["level"].tolist() == JITTER
    assert table.loc[~jitter, "level"].isna().all()


def test_rows_equal_evaluate_dataset_on_the_same_data(suite):
    model, cfg, table = suite["model"], suite["cfg"], suite["table"]
    clean = restricted(suite["test"], SHIFT_IMAGES)
    kw = {"batch_size": cfg.train.eval_batch_size}

    def row(shift, severity=0):
        found = table[(table["shift"] == shift) & (table["severity"] == severity)]
        return found.iloc[0][list(METRICS)].to_dict()

    def scores(dataset, **extra):
        out = evaluate_dataset(model, dataset, **kw, **extra)
        return {m: out[m] for m in METRICS}

    assert row("clean") == scores(clean)
    # corrupted pixels are the documented pure function of (images, corruption, severity, seed)
    noisy = corrupt_images(clean.images, "gaussian_noise", 5, seed=cfg.data.seed)
    assert row("gaussian_noise", 5) == scores(clean.with_images(noisy, "noisy"))
    assert row("prompt:box_jitter", 2) == scores(clean, box_jitter=JITTER[1], seed=cfg.data.seed)
    assert row("prompt:point") == scores(clean, prompt="point")


def test_second_call_is_identical_and_reads_the_cache(suite):
    pd.testing.assert_frame_equal(suite["table"], suite["again"])
    assert len(suite["files_before"]) == len(CORRUPTIONS) * len(SEVERITIES)
    assert suite["files_after"] == suite["files_before"]  # same files, none rewritten


def test_other_data_makes_new_cache_files(suite):
    cfg, cache_dir = suite["cfg"], suite["cache_dir"]
    other = study_test_split(cfg, cache_dir, seed=cfg.data.seed + 1)
    before = cache_files(cache_dir)
    table = evaluate_shifts(suite["model"], cfg, other, cache_dir, shifts=["gaussian_noise"],
                            progress=False)
    after = cache_files(cache_dir)
    assert set(table["shift"]) == {"clean", "gaussian_noise"}
    assert len(set(after) - set(before)) == len(SEVERITIES)
    assert {name: after[name] for name in before} == before


def test_empty_spec_is_clean_only(suite):
    table = evaluate_shifts(suite["model"], suite["cfg"], suite["test"], suite["cache_dir"],
                            shifts=[], progress=False)
    columns = ["shift", *METRICS, "n_masks"]
    pd.testing.assert_frame_equal(table[columns], suite["table"][columns].iloc[:1])


# --------------------------------------------------------------------------- the spec


def test_resolve_shifts_expands_groups():
    assert resolve_shifts("noise, prompt") == {
        "corruptions": list(CORRUPTION_GROUPS["noise"]), "domain": False, "prompt": True}
    assert len(resolve_shifts("common")["corruptions"]) == 15
    everything = resolve_shifts(["all"])
    assert len(everything["corruptions"]) == 19
    assert not everything["domain"] and not everything["prompt"]  # named explicitly only
    spec = resolve_shifts(["fog", "common", "domain", "prompt"])
    assert spec["corruptions"][0] == "fog" and len(spec["corruptions"]) == 15
    assert spec["domain"] and spec["prompt"]
    assert resolve_shifts([]) == {"corruptions": [], "domain": False, "prompt": False}


@pytest.mark.parametrize("spec, bad", [
    (["noise", "gausian_noise"], "gausian_noise"), ("domain,prompts", "prompts"),
    (["Domain"], "Domain"),
])
def test_resolve_shifts_names_the_bad_entry(spec, bad):
    with pytest.raises(HarnessError, match=f"'{bad}'"):
        resolve_shifts(spec)


def test_config_validates_shifts(tiny_study_dict):
    tiny_study_dict["evaluate"] = {"shifts": ["common", "domain", "prompt"]}
    assert study_from_dict(tiny_study_dict).evaluate.shifts == ["common", "domain", "prompt"]
    tiny_study_dict["evaluate"] = {"shifts": ["noise", "rain"]}
    with pytest.raises(HarnessError, match=r"key 'evaluate\.shifts' has unknown shift 'rain'"):
        study_from_dict(tiny_study_dict)


# --------------------------------------------------------------------------- metric names


def test_shift_metrics_on_a_hand_made_table():
    nan = math.nan
    table = pd.DataFrame([
        ("clean", "clean", 0, nan, 0.8, 0.6),
        ("gaussian_noise", "corruption", 1, nan, 0.6, 0.4),
        ("gaussian_noise", "corruption", 5, nan, 0.2, 0.2),
        ("contrast", "corruption", 1, nan, 0.7, 0.5),
        ("contrast", "corruption", 5, nan, 0.3, 0.1),
        ("domain:lesions", "domain", 0, nan, 0.4, 0.3),
        ("domain:odd+name", "domain", 0, nan, 0.0, 0.0),
        ("prompt:box_jitter", "prompt", 1, 0.1, 0.75, 0.5),
        ("prompt:box_jitter", "prompt", 2, 0.4, 0.5, 0.25),
        ("prompt:point", "prompt", 0, nan, 0.5, 0.45),
    ], columns=["shift", "kind", "severity", "level", "miou", "biou"])
    copy = table.copy()
    out = shift_metrics(table)
    pd.testing.assert_frame_equal(table, copy)  # pure: the input is untouched

    expected = {
        "shift/clean/miou": 0.8, "shift/clean/biou": 0.6,
        "shift/mean/miou": 0.45, "shift/mean/biou": 0.3,  # (.6+.2+.7+.3)/4, (.4+.2+.5+.1)/4
        "shift/relative/miou": 0.45 / 0.8, "shift/relative/biou": 0.5,
        "shift/relative": 0.45 / 0.8,
        "shift/gaussian_noise/miou": 0.4, "shift/gaussian_noise/biou": 0.3,
        "shift/contrast/miou": 0.5, "shift/contrast/biou": 0.3,
        "shift/s1/miou": 0.65, "shift/s1/biou": 0.45,
        "shift/s5/miou": 0.25, "shift/s5/biou": 0.15,
        "shift/gaussian_noise/s1/miou": 0.6, "shift/gaussian_noise/s1/biou": 0.4,
        "shift/gaussian_noise/s5/miou": 0.2, "shift/gaussian_noise/s5/biou": 0.2,
        "shift/contrast/s1/miou": 0.7, "shift/contrast/s1/biou": 0.5,
        "shift/contrast/s5/miou": 0.3, "shift/contrast/s5/biou": 0.1,
        "shift/domain/lesions/miou": 0.4, "shift/domain/lesions/biou": 0.3,
        "shift/domain/lesions/relative": 0.5,
        "shift/domain/odd_name/miou": 0.0, "shift/domain/odd_name/biou": 0.0,
        "shift/domain/odd_name/relative": 0.0,
        "shift/prompt/box_jitter/l1/miou": 0.75, "shift/prompt/box_jitter/l1/biou": 0.5,
        "shift/prompt/box_jitter/l2/miou": 0.5, "shift/prompt/box_jitter/l2/biou": 0.25,
        "shift/prompt/point/miou": 0.5, "shift/prompt/point/biou": 0.45,
    }
    assert set(out) == set(expected)
    assert out == pytest.approx(expected)


def test_shift_metrics_of_a_real_table_are_loggable(suite):
    out = shift_metrics(suite["table"])
    assert all(MLFLOW_NAME.fullmatch(name) and "//" not in name for name in out)
    assert all(math.isfinite(v) for v in out.values())
    cells = len(CORRUPTIONS) * len(SEVERITIES)
    assert sum(name.endswith("/s1/miou") or name.endswith("/s5/miou") for name in out) == (
        cells + 2)  # every cell, plus the two per-severity means
    assert out["shift/clean/miou"] == suite["table"].iloc[0]["miou"]


def test_domain_shift_takes_datasets_of_any_source(home, tiny_study_dict):
    """evaluate.domains names synthetic domains or SOURCE:PATH specs (here the bundled VOC
    image): each becomes a domain cell scored like the synthetic ones."""
    from harness.config import study_from_dict
    from harness.data.sources import load_split
    from harness.errors import HarnessError
    from harness.model import build_model

    tiny_study_dict["evaluate"] = {"shifts": ["domain"], "domains": ["lesions", "builtin:voc"],
                                   "workers": 0}
    cfg = study_from_dict(tiny_study_dict)
    table = evaluate_shifts(build_model("tiny-32"), cfg, load_split(cfg.data, "test"),
                            home / "cache", progress=False)
    voc = table[table["shift"] == "domain:builtin:voc"]
    # every VOC instance big enough at the study's 32 px is a test mask of the cell
    from harness.data.sources import domain_data
    expected = load_split(domain_data(cfg.data, "builtin:voc"), "test")
    assert len(voc) == 1 and voc["n_masks"].iloc[0] == len(expected.masks) > 0
    assert "shift/domain/builtin_voc/miou" in shift_metrics(table)
    tiny_study_dict["evaluate"]["domains"] = ["builtin:mars"]
    with pytest.raises(HarnessError, match="'evaluate.domains'.*mars"):
        study_from_dict(tiny_study_dict)
    tiny_study_dict["evaluate"]["domains"] = ["nowhere:x"]
    with pytest.raises(HarnessError, match="unknown source 'nowhere'"):
        study_from_dict(tiny_study_dict)
