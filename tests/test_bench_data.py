"""``harness bench data`` generates a folder dataset, loads it uncached and cached through the
folder source, and reports what it loaded (the counts are checked here, never the timings)."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from harness.cli import cli

IMAGES = 200


def _drawn(root):
    """Images and instances as the generated files hold them, read independently."""
    masks = sorted((root / "masks").glob("*.png"))
    per_image = [np.count_nonzero(np.unique(np.asarray(Image.open(p)))) for p in masks]
    return len(list((root / "images").glob("*.png"))), per_image


def test_bench_data_loads_what_it_generated_and_reuses_the_folder(home, tmp_path):
    root = tmp_path / "generated"
    runner = CliRunner()
    first = runner.invoke(cli, ["bench", "data", "--images", str(IMAGES), "--repeats", "2",
                                "--root", str(root)])
    assert first.exit_code == 0, first.output
    n_files, per_image = _drawn(root)
    assert n_files == len(per_image) == IMAGES and set(per_image) == {1, 2, 3}
    for row in ("seconds: index (list, pair, split)", "seconds: cache key (stat every file)",
                "images/s: uncached load", "images/s: cached load",
                "cached ÷ uncached images/s", f"{IMAGES} generated 32×32 PNG images"):
        assert row in first.output
    assert f"loaded {IMAGES} images, {sum(per_image)} instances" in first.output

    written = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    again = runner.invoke(cli, ["bench", "data", "--images", str(IMAGES), "--repeats", "1",
                                "--root", str(root), "--json"])
    assert again.exit_code == 0, again.output
    result = json.loads(again.stdout)
    assert result["reused_folder"] and {p: p.stat().st_mtime_ns for p in written} == written
    assert result["instances_generated"] == sum(per_image)
    assert (result["loaded_images"], result["loaded_instances"]) == (IMAGES, sum(per_image))
    assert (result["cached_images"], result["cached_instances"]) == (IMAGES, sum(per_image))
    assert result["cached_identical"] and result["cached_read_from_cache"]
    assert not (home / "cache").exists()  # the bench's caches are its own temporary folders


def test_bench_data_refuses_a_root_it_did_not_generate(home, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    out = CliRunner().invoke(cli, ["bench", "data", "--images", "4", "--root", str(tmp_path)])
    assert out.exit_code == 2
    assert f"--root {tmp_path} is not empty" in out.output
    assert (tmp_path / "mine.txt").read_text() == "keep me"
