"""`harness report`: statistics against hand computations, and reports built from real tiny
studies recorded in a temporary HARNESS_HOME (no mocks of MLflow or Optuna)."""

import copy
import math

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner
from pypdf import PdfReader

from harness.cli import cli
from harness.config import study_from_dict
from harness.errors import HarnessError
from harness.report import SECTION_TITLES, build_report
from harness.report.collect import load_study_data
from harness.report.figures import line_colors
from harness.report.sections import curves, severity
from harness.report.sections.base import Context, ShiftFilter
from harness.report.stats import kendall, mean_ci, paired
from harness.report.style import method_colors, report_style
from harness.experiment.study import run_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

EVALUATE = {"shifts": ["gaussian_noise", "domain", "prompt"], "severities": [1, 3],
            "shift_images": 2, "workers": 1}
PROBES = {"enabled": True, "batches": 1, "batch_size": 2, "hessian_iters": 2,
          "trace_samples": 2, "average_samples": 2, "landscape_points": 3}


# --------------------------------------------------------------------------- statistics


def test_bootstrap_ci_of_a_constant_sample_is_a_point():
    est = mean_ci([0.5, 0.5, 0.5])
    assert (est.mean, est.low, est.high, est.n) == (0.5, 0.5, 0.5, 3)


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    values = [0.1, 0.4, 0.2, 0.5, 0.3]
    est = mean_ci(values)
    assert est.mean == pytest.approx(0.3)
    # resampled means can never leave [min, max]; the interval is strictly inside here
    assert 0.1 < est.low < 0.3 < est.high < 0.5
    assert mean_ci(values) == est  # fixed seed


def test_small_samples_give_no_interval_instead_of_nan_warnings():
    one, none = mean_ci([0.7, math.nan]), mean_ci([])
    assert (one.mean, one.n) == (0.7, 1) and not one.has_ci
    assert one.text() == "0.700 (n=1, no CI)"
    assert none.n == 0 and none.text() == "–"
    assert mean_ci([1043.0]).text("sig3", ci=False) == "1043"
    assert mean_ci([0.08191]).text("sig3", ci=False) == "0.0819"


def test_paired_test_on_a_hand_built_example():
    # the differences a − b are 1..6 for seeds 1..6: all positive, distinct ranks
    b = {s: 0.5 for s in range(1, 7)}
    a = {s: 0.5 + s for s in range(1, 7)}
    test = paired(a, b)
    assert test.diff.mean == pytest.approx(3.5) and test.diff.n == 6
    assert test.diff.low > 0  # every resample's mean difference is positive
    # exact two-sided Wilcoxon: only the all-positive sign pattern is as extreme, 2 / 2⁶
    assert test.wilcoxon_p == pytest.approx(2 / 64)
    assert test.marks == "*†"


def test_paired_test_uses_only_common_seeds_and_skips_wilcoxon_below_six():
    test = paired({1: 0.6, 2: 0.7, 3: 0.8}, {1: 0.5, 2: 0.5, 4: 0.1})
    assert test.diff.n == 2 and test.diff.mean == pytest.approx(0.15)
    assert math.isnan(test.wilcoxon_p) and "†" not in test.marks
    constant = paired({1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0})
    assert constant.diff.mean == 0 and constant.marks == ""


def test_kendall_tau_on_a_known_ranking():
    # one swapped pair out of C(5, 2) = 10: τ = (9 − 1) / 10; exact p = 2 · 5 / 5!
    c = kendall([1, 2, 3, 4, 5], [1, 2, 3, 5, 4])
    assert c.tau == pytest.approx(0.8) and c.p == pytest.approx(10 / 120) and c.n == 5
    reverse = kendall([1, 2, 3], [3, 2, math.nan])  # the NaN pair is dropped: n = 2 < 3
    assert math.isnan(reverse.tau) and reverse.n == 2


def test_section_numbers_follow_the_order_of_the_sections(monkeypatch):
    from harness.report import sections
    from harness.report.sections.base import new_section

    monkeypatch.setattr(sections, "ORDER", tuple(reversed(sections.ORDER)))
    assert new_section(severity.__name__).heading == (
        f"{len(sections.ORDER) - 1}. {severity.TITLE}")


def test_every_sharpness_aware_method_gets_the_generic_cost_claims(monkeypatch):
    from dataclasses import replace

    from harness.optim.methods import METHODS
    from harness.report.sections import cost

    monkeypatch.setitem(METHODS, "gsam", replace(METHODS["sam"], name="gsam", display="GSAM"))
    claims = {(c.method, c.kind): c.stated for c in cost._all_claims()}
    assert claims["gsam", "train"].startswith("×2 (two forward–backward passes")
    assert claims["gsam", "inference"] == "+0 % (same network)"
    assert claims["asam", "train"] == "+20–30 %"  # the article's statement, not the generic
    assert ("adamw", "train") not in claims


def test_each_method_keeps_its_colour_whatever_the_other_methods():
    full = method_colors(["adamw", "sam", "asam", "sam-e", "custom"])
    assert len(set(full.values())) == 5
    assert method_colors(["asam", "custom"])["asam"] == full["asam"]


# --------------------------------------------------------------------------- from studies


def _study(name: str, **changes) -> dict:
    from tests.conftest import TINY_STUDY

    study = copy.deepcopy(TINY_STUDY)
    study.update(name=name, evaluate=EVALUATE, probes=PROBES, **changes)
    return study


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two studies in one store: `tiny` (adamw + asam, 2 final seeds each, shifts, probes)
    and `tiny-fail`, where every ASAM tuning trial diverges."""
    home = tmp_path_factory.mktemp("report") / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_HOME", str(home))
        run_study(study_from_dict(_study("tiny")), progress=False)
        failing = _study("tiny-fail", final_seeds=[1],
                         tuning={"trials_per_method": 1, "n_startup_trials": 1})
        failing["methods"]["asam"] = {"lr": 1.0e30, "search": {
            "weight_decay": {"low": 0.0, "high": 0.1}}}
        failing["train"]["grad_clip"] = None
        run_study(study_from_dict(failing), progress=False)
        yield home


@pytest.fixture(scope="module")
def report_dir(recorded, tmp_path_factory):
    return build_report("tiny", out=tmp_path_factory.mktemp("out") / "tiny")


def _pdf_text(path) -> str:
    return " ".join(" ".join(page.extract_text() for page in PdfReader(path).pages).split())


def test_report_pdf_has_every_section(report_dir):
    reader = PdfReader(report_dir / "report.pdf")
    assert len(reader.pages) > len(SECTION_TITLES)
    assert reader.metadata.title == "harness report: tiny"
    text = _pdf_text(report_dir / "report.pdf")
    for number, title in enumerate(SECTION_TITLES, 1):
        assert f"{number}. {title}" in text
    assert "Equal budget" in text and "No SAM-E ensemble was recorded" in text


def test_summary_table_has_one_row_per_method_with_n(report_dir):
    summary = pd.read_csv(report_dir / "tables" / "summary.csv")
    assert list(summary["method"]) == ["adamw", "asam"]
    assert list(summary["n"]) == [2, 2]  # final_seeds: [1, 2]
    assert summary["clean_miou"].between(0, 1).all()
    assert (summary["clean_miou_ci_low"] <= summary["clean_miou"]).all()
    assert summary.loc[0, "train_cost_x_adamw"] == pytest.approx(1.0)
    assert "\\toprule" in (report_dir / "tables" / "summary.tex").read_text()
    assert "| asam" in (report_dir / "tables" / "summary.md").read_text()
    kendall_table = pd.read_csv(report_dir / "tables" / "sharpness_kendall.csv")
    assert set(kendall_table["n"]) == {4}  # every final run has probes
    for name in ("miou_vs_severity", "delta_heatmap", "domain_prompt", "sharpness_vs_gap",
                 "training_curves", "landscape_1d", "tuning_history", "cost_ratios"):
        assert (report_dir / "figures" / f"{name}.png").stat().st_size > 0


def test_a_failed_method_is_stated_not_a_crash(recorded, tmp_path):
    out = build_report("tiny-fail", out=tmp_path / "fail", formats=["pdf", "csv"])
    text = _pdf_text(out / "report.pdf")
    assert "Method asam failed: every tuning trial diverged" in text
    assert "asam (FAILED" in text  # on the title page too
    summary = pd.read_csv(out / "tables" / "summary.csv")
    assert list(summary["n"]) == [1, 0] and list(summary["status"]) == ["ok", "failed"]
    tuning = pd.read_csv(out / "tables" / "tuning.csv")
    assert tuning.set_index("method").loc["asam", "diverged"] == 1
    trials = pd.read_csv(out / "tables" / "tuning_trials.csv", keep_default_na=False)
    asam = trials[trials["method"] == "asam"].iloc[0]
    assert asam["state"] == "PRUNED" and "step" in asam["reason"]  # the divergence's reason
    assert (trials.loc[trials["method"] == "adamw", "reason"] == "").all()


def test_cli_filters_methods_and_shifts(recorded, tmp_path):
    result = CliRunner().invoke(cli, ["report", "tiny", "--out", str(tmp_path / "r"),
                                      "--format", "csv,md", "--methods", "asam",
                                      "--shifts", "gaussian_noise"])
    assert result.exit_code == 0, result.output
    assert "report written to" in result.output
    tables = tmp_path / "r" / "tables"
    assert list(pd.read_csv(tables / "summary.csv")["method"]) == ["asam"]
    # AdamW is still the reference of the ratios when it is not shown
    assert pd.read_csv(tables / "summary.csv")["train_cost_x_adamw"].notna().all()
    assert set(pd.read_csv(tables / "delta_vs_adamw.csv")["shift"]) == {
        "clean (shift images)", "all corruptions", "gaussian_noise"}
    assert (tables / "summary.md").exists() and not (tables / "summary.tex").exists()
    assert not (tmp_path / "r" / "report.pdf").exists()
    assert not (tmp_path / "r" / "figures").exists()


@pytest.mark.parametrize("args, needle", [
    (["report", "no-such-study"], "no study 'no-such-study' recorded"),
    (["report", "tiny", "--preset", "smaller"], "'tiny@smaller' is not recorded"),
    (["report", "tiny", "--methods", "sgd"], "--methods: sgd not in study"),
    (["report", "tiny", "--shifts", "earthquake"], "unknown shift 'earthquake'"),
    (["report", "tiny", "--format", "docx"], "unknown report format(s) docx"),
])
def test_cli_user_errors_exit_2(recorded, tmp_path, args, needle):
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_a_method_has_one_colour_in_every_figure(recorded):
    data = load_study_data("tiny")
    with report_style():
        ctx = Context(data, method_colors(data.all_methods), ShiftFilter(), draw=True)
        figures = [item.figure for module in (severity, curves)
                   for item in module.build(ctx).blocks if hasattr(item, "figure")]
    assert len(figures) == 3  # severity; training curves; landscape
    for method in ("adamw", "asam"):
        colours = set().union(*(line_colors(fig, method) for fig in figures))
        assert colours == {ctx.colors[method]}


def test_report_leaves_the_process_mlflow_tracking_uri_alone(recorded, tmp_path):
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    sentinel = f"sqlite:///{tmp_path}/sentinel.db"
    mlflow.set_tracking_uri(sentinel)
    try:
        build_report("tiny", out=tmp_path / "r", formats=["csv"])
        assert mlflow.get_tracking_uri() == sentinel
    finally:
        mlflow.set_tracking_uri(before)


def test_unknown_store_is_a_user_error(tmp_path):
    with pytest.raises(HarnessError, match="no MLflow store"):
        build_report("tiny", tracking_uri=f"sqlite:///{tmp_path}/nothing.db")
