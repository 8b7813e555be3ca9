"""Cell scores are reused for the same weights and cell only, and a bad file is recomputed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from harness.config import study_from_dict
from harness.data import synthetic_split
from harness.evaluate.score_cache import ScoreCache, model_digest
from harness.evaluate.shifts import evaluate_shifts
from harness.model import build_model

STUDY = {
    "model": {"preset": "tiny-32"},
    "data": {"domain": "shapes", "image_size": 32, "test_size": 3, "max_objects": 2},
    "methods": {"adamw": {}},
    "evaluate": {"shifts": ["gaussian_noise", "prompt"], "severities": [2],
                 "box_jitter_levels": [0.2], "workers": 0},
}
N_CELLS = 4  # clean, gaussian_noise s2, box jitter 0.2, point


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny-32")
    cfg = study_from_dict(STUDY)
    d = cfg.data
    test = synthetic_split(d.domain, "test", d.test_size, d.image_size, d.seed, d.max_objects,
                           tmp_path)
    return model, cfg, test, tmp_path


def score_files(cache_dir, model):
    return sorted((cache_dir / "scores" / model_digest(model)).glob("*.npz"))


def test_second_evaluation_reads_every_cell_back(setup):
    model, cfg, test, cache_dir = setup
    first = evaluate_shifts(model, cfg, test, cache_dir, progress=False)
    files = score_files(cache_dir, model)
    assert len(files) == N_CELLS
    # Poison every file with a recognisable score: a table that shows it was read from disk.
    for path in files:
        with np.load(path) as f:
            scores = {k: f[k] for k in f.files}
        np.savez(path, **{k: np.full_like(v, 0.125) for k, v in scores.items()})
    again = evaluate_shifts(model, cfg, test, cache_dir, progress=False)
    assert (again[["miou", "mdice", "biou"]] == 0.125).all().all()
    fresh = evaluate_shifts(model, cfg, test, cache_dir, progress=False, reuse_scores=False)
    pd.testing.assert_frame_equal(first, fresh)


def test_cached_scores_equal_computed_ones(setup):
    model, cfg, test, cache_dir = setup
    first = evaluate_shifts(model, cfg, test, cache_dir, progress=False)
    again = evaluate_shifts(model, cfg, test, cache_dir, progress=False)
    pd.testing.assert_frame_equal(first, again)


def test_changed_weights_or_prompts_miss(setup):
    model, cfg, test, cache_dir = setup
    evaluate_shifts(model, cfg, test, cache_dir, progress=False)
    before = model_digest(model)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    assert model_digest(model) != before
    evaluate_shifts(model, cfg, test, cache_dir, progress=False)
    assert len(score_files(cache_dir, model)) == N_CELLS  # all recomputed under the new digest

    other_jitter = study_from_dict({**STUDY, "evaluate": {**STUDY["evaluate"],
                                                          "box_jitter_levels": [0.3]}})
    evaluate_shifts(model, other_jitter, test, cache_dir, progress=False)
    assert len(score_files(cache_dir, model)) == N_CELLS + 1  # only the new jitter cell


def test_unreadable_file_is_a_miss(setup, tmp_path):
    model, _, _, _ = setup
    cache = ScoreCache(tmp_path / "c", model)
    scores = {"iou": np.array([0.5, 1.0])}
    cache.put("cell", scores)
    np.testing.assert_array_equal(cache.get("cell")["iou"], scores["iou"])
    next(cache.folder.glob("*.npz")).write_bytes(b"not a zip")
    assert cache.get("cell") is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_digest_covers_buffers_and_module_settings():
    torch.manual_seed(0)
    a = torch.nn.BatchNorm1d(3)
    b = torch.nn.BatchNorm1d(3)
    assert model_digest(a) == model_digest(b)
    b.running_mean += 1
    assert model_digest(a) != model_digest(b)
    assert model_digest(torch.nn.BatchNorm1d(3, eps=1e-3)) != model_digest(a)


def test_shift_bench_runs_and_reports_identical_tables(tmp_path):
    import yaml

    from harness.bench.shifts import format_report, run_shift_bench

    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "name": "bench"}))
    result = run_shift_bench(str(path), None, rounds=1)
    assert result["cells"] == N_CELLS and result["second_table_identical"]
    assert all(result["seconds"][p]["median"] > 0 for p in ("first", "other", "second"))
    assert "first ÷ second" in format_report(result)
