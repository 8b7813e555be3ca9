"""The `harness` command line: help that teaches, one-line errors with exit code 2."""

import re
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from harness.cli import cli



def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_lists_commands():
    out = invoke("--help").output
    for command in ("study", "train", "ui", "bench"):
        assert command in out
    assert "asam-vs-adamw --preset smoke" in out
    assert "--n-trials" in invoke("study", "run", "--help").output


@pytest.mark.parametrize("args, needle", [
    (("study", "run", "no-such-study"), "no study named 'no-such-study'"),
    (("study", "run", "asam-vs-adamw", "--preset", "huge"), "no preset 'huge'"),
    (("study", "run", "missing.yaml"), "study file not found: missing.yaml"),
    (("train", "--preset", "smoke", "--method", "adamw", "--rho", "0.1"),
     "--rho applies to sam, asam"),
])
def test_user_errors_exit_2_with_one_line(home, args, needle):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_bad_yaml_key_exits_2_naming_key_and_file(home, tmp_path, tiny_study_dict):
    tiny_study_dict["train"]["lr"] = 0.1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_study_dict))
    result = invoke("study", "run", str(path))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1 and "'train.lr'" in lines[0] and str(path) in lines[0]


def test_study_run_status_list_and_train(home, tmp_path, tiny_study_dict):
    tiny_study_dict["methods"].pop("asam")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_study_dict))
    result = invoke("study", "run", str(path), "--quiet", "--n-trials", "1")
    assert result.exit_code == 0, result.output
    status = invoke("study", "status", str(path)).output
    # columns widen to the longest name (the priors' rows), so match on words
    assert re.search(r"^adamw +tune +complete 1$", status, re.M)
    assert re.search(r"^adamw +final +complete 2$", status, re.M)
    assert re.search(r"^ellipse-in-box +final +finished 1$", status, re.M)
    assert "tiny  (final/adamw: 2, tune/adamw: 1)" in invoke("study", "list").output
    trained = invoke("train", "--config", str(path), "--method", "asam", "--rho", "0.3",
                     "--epochs", "1")
    assert trained.exit_code == 0, trained.output
    assert "test/miou" in trained.output and re.search(r"run [0-9a-f]{32}\n", trained.output)


def test_ui_dry_run_points_at_harness_store(home):
    out = invoke("ui", "--dry-run", "--port", "5123").output
    assert "http://127.0.0.1:5123" in out and str(home / "mlflow.db") in out


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "harness.cli", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "study" in result.stdout
