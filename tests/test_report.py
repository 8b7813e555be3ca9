"""`harness report`: statistics against hand computations, and reports built from real tiny
studies recorded in a temporary HARNESS_HOME (no mocks of MLflow or Optuna)."""

import time

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.entities import Metric
from pypdf import PdfReader

from harness.cli import cli
from harness.errors import HarnessError
from harness.report import SECTION_TITLES, build_report
from harness.report.collect import load_study_data
from harness.report.document import Table
from harness.report.figures import line_colors
from harness.report.floor import BOX_PRIORS
from harness.report.sections import curves, severity, sharpness, summary
from harness.report.sections.base import Context, ShiftFilter
from harness.report.style import method_colors, report_style
from harness.tracking import schema
from harness.tracking.store import get_experiment_id, tracking_client

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

# --------------------------------------------------------------------------- sections
# (the statistics themselves are tested in tests/test_stats.py)


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


def _record(client, experiment_id: str, parent_id: str, study: str, role: str, method: str,
            seed: int | None = None, outcome: str = schema.STATUS_OK,
            metrics: dict | None = None, ious: np.ndarray | None = None) -> str:
    """One run tagged as the study runner tags it (a trial's outcome, a reference's role),
    closed with MLflow's status for that outcome; `ious` becomes its per-mask scores, two
    masks per test image."""
    tags = {schema.PARENT_RUN: parent_id, schema.STUDY: study, schema.PRESET: "",
            schema.ROLE: role, schema.METHOD: method, schema.PHASE: schema.PHASE_FINAL}
    if seed is not None:
        tags[schema.SEED] = str(seed)
    if outcome != "killed":  # a killed run never got to say how it ended
        tags[schema.STATUS] = outcome
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in (metrics or {}).items()])
    if ious is not None:
        table = pd.DataFrame({"mask": np.arange(len(ious)), "image": np.arange(len(ious)) // 2,
                              "iou": ious, "dice": ious, "biou": ious})
        client.log_text(run_id, table.to_csv(index=False), schema.scores_artifact("test"))
    client.set_terminated(run_id, {schema.STATUS_OK: "FINISHED", "killed": "KILLED"}.get(
        outcome, "FAILED"))
    return run_id


def _parent_id(client, study: str) -> tuple[str, str]:
    experiment_id = client.get_experiment_by_name(study).experiment_id
    parent = client.search_runs([experiment_id],
                                f"tags.`{schema.ROLE}` = '{schema.ROLE_STUDY}'")[0]
    return experiment_id, parent.info.run_id


@pytest.fixture(scope="module")
def recorded(report_home):
    """`tiny` and `tiny-fail` (tests/report_study.py) in this module's HARNESS_HOME."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_HOME", str(report_home))
        yield report_home


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


def _methods(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's method rows (not the reference rows of priors and zero-shot)."""
    return summary[summary["role"].isin(schema.RUN_ROLES)].reset_index(drop=True)


def test_summary_table_has_one_row_per_method_with_n(report_dir):
    summary = _methods(pd.read_csv(report_dir / "tables" / "summary.csv"))
    assert list(summary["method"]) == ["adamw", "asam"]
    assert list(summary["n"]) == [2, 2]  # final_seeds: [1, 2]
    assert summary["clean_miou"].between(0, 1).all()
    # n = 2: a mean without an interval (a t interval needs 3 values)
    assert summary["clean_miou_ci_low"].isna().all()
    assert summary.loc[0, "train_cost_x_adamw"] == pytest.approx(1.0)
    assert "\\toprule" in (report_dir / "tables" / "summary.tex").read_text()
    assert "| asam" in (report_dir / "tables" / "summary.md").read_text()
    probes = pd.read_csv(report_dir / "tables" / "sharpness_probes.csv")
    assert set(probes["n"]) == {2}  # within each method: its 2 final runs have probes
    assert set(probes["method"]) == {"adamw", "asam"}
    for name in ("answer", "miou_vs_severity", "delta_heatmap", "domain_prompt",
                 "training_curves", "landscape_1d", "tuning_history", "cost_ratios"):
        assert (report_dir / "figures" / f"{name}.png").stat().st_size > 0


def test_a_failed_method_is_stated_not_a_crash(recorded, tmp_path):
    out = build_report("tiny-fail", out=tmp_path / "fail", formats=["pdf", "csv"])
    text = _pdf_text(out / "report.pdf")
    assert "Method asam failed: every tuning trial diverged" in text
    page_1 = " ".join(PdfReader(out / "report.pdf").pages[0].extract_text().split())
    assert "ASAM has no result (every tuning trial diverged" in page_1
    summary = _methods(pd.read_csv(out / "tables" / "summary.csv"))
    assert list(summary["n"]) == [1, 0] and list(summary["status"]) == ["ok", "failed"]
    outcomes = pd.read_csv(out / "tables" / "run_outcomes.csv").set_index("method")
    # the diverged method: counted (its tuning run diverged, so no final run started) and
    # both of its means are empty, each with n = 0
    assert outcomes.loc["asam", ["tune_started", "tune_diverged", "started"]].tolist() == [
        1, 1, 0]
    assert outcomes.loc["asam", ["all_runs_n", "successful_n"]].tolist() == [0, 0]
    assert outcomes.loc["adamw", ["started", "finished", "all_runs_n"]].tolist() == [1, 1, 1]
    tuning = pd.read_csv(out / "tables" / "tuning.csv")
    assert tuning.set_index("method").loc["asam", "diverged"] == 1
    trials = pd.read_csv(out / "tables" / "tuning_trials.csv", keep_default_na=False)
    asam = trials[trials["method"] == "asam"].iloc[0]
    assert asam["state"] == "PRUNED" and "step" in asam["reason"]  # the divergence's reason
    assert (trials.loc[trials["method"] == "adamw", "reason"] == "").all()


def _squash(text: str) -> str:
    """Without whitespace: PDF text breaks lines (and hyphenated words) where it wraps."""
    return "".join(text.split())


def test_page_one_is_the_answer_in_three_sentences_with_the_numbers(report_dir):
    page_1 = _squash(PdfReader(report_dir / "report.pdf").pages[0].extract_text())
    data = load_study_data("tiny")
    adamw = data.column(data.final("adamw"), schema.TEST_MIOU).mean()
    for needle in ("Report: tiny", f"Clean test mIoU over final seeds: AdamW {adamw:.3f} "
                   "(n=2)", "on the shift suite's images, clean → mean over 2 corruption",
                   "(no interval below 3 seeds).",
                   "ASAM − AdamW: clean mIoU", "(n = 2 paired seeds, too small for an "
                   "interval)", "For scale, prompt-only priors that never look at the image",
                   "ellipse-in-box", "Bands: 95 % Student-t interval over final seeds (none "
                   "for adamw, asam: fewer than 3 runs)"):
        assert _squash(needle) in page_1, needle
    box = data.references[data.references["method"] == "box-fill"]
    assert _squash(f"box-fill {data.column(box, schema.TEST_MIOU).iloc[0]:.3f}") in page_1


def test_page_one_draws_intervals_only_from_three_seeds(recorded):
    from matplotlib.collections import PolyCollection
    from matplotlib.container import ErrorbarContainer

    from harness.report.sections import answer
    from harness.tracking.schema import corruption_metric, shift_metric

    client = tracking_client()
    experiment_id, parent_id = _new_study(client, "bands")
    cell = corruption_metric("gaussian_noise", 3, "miou")
    for method, clean in (("adamw", (0.60, 0.62, 0.64)), ("asam", (0.65, 0.66, 0.70))):
        for seed, value in enumerate(clean, 1):
            _record(client, experiment_id, parent_id, "bands", schema.ROLE_TRIAL, method,
                    seed, metrics={schema.TEST_MIOU: value, schema.SHIFT_MEAN_MIOU: value - 0.1,
                                   shift_metric("clean", "miou"): value, cell: value - 0.1})
    _record(client, experiment_id, parent_id, "bands", schema.ROLE_BASELINE, "box-fill",
            metrics={schema.TEST_MIOU: 0.5, shift_metric("clean", "miou"): 0.5, cell: 0.5})
    data = load_study_data("bands")
    with report_style():
        ctx = Context(data, method_colors(data.all_methods), ShiftFilter(), draw=True)
        levels, differences, scale = answer.sentences(ctx)
        ax = answer.figure(ctx).axes[0]
    # t(0.975, 2) = 4.303: adamw 0.620 ± 4.303·0.02/√3, Δ 0.050 ± 4.303·0.01/√3
    assert "AdamW 0.620 [0.570, 0.670] (n=3)" in levels and "no interval" not in levels
    assert "AdamW 0.620 [0.570, 0.670] → 0.520 [0.470, 0.570]" in levels
    assert "+0.050 [+0.025, +0.075] over 3 paired seeds" in differences
    assert scale.endswith("box-fill 0.500.")
    assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == 2
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2  # one band each
    assert [line.get_label() for line in ax.lines if line.get_label()[0] != "_"] == [
        "adamw", "asam", "box-fill (reference)"]


def test_sharpness_shows_no_scatter_or_tau_for_two_runs_and_says_why(report_dir):
    text = _pdf_text(report_dir / "report.pdf")
    assert ("No rank correlation and no scatter plot: every method has fewer than 3 runs "
            "with probes (adamw 2, asam 2)") in text
    assert not (report_dir / "figures" / "sharpness_vs_gap.png").exists()
    assert not (report_dir / "tables" / "sharpness_kendall.csv").exists()


def test_config_is_attached_and_summarised_not_printed(recorded, report_dir):
    data = load_study_data("tiny")
    reader = PdfReader(report_dir / "report.pdf")
    assert reader.attachments["study.yaml"] == [data.config_text.encode()]
    assert (report_dir / "study.yaml").read_text() == data.config_text
    assert "trials_per_method" not in _pdf_text(report_dir / "report.pdf")
    settings = pd.read_csv(report_dir / "tables" / "settings.csv").set_index("setting")
    assert settings.loc["final seeds", "value"] == "1, 2"
    assert settings.loc["images train / val / test", "value"] == "8 / 4 / 4"
    logged = _artifact_files(tracking_client(), data.parent["run_id"], schema.REPORT_DIR)
    assert f"{schema.REPORT_DIR}/study.yaml" in logged


def test_cli_filters_methods_and_shifts(recorded, tmp_path):
    result = CliRunner().invoke(cli, ["report", "tiny", "--out", str(tmp_path / "r"),
                                      "--format", "csv,md", "--methods", "asam",
                                      "--shifts", "gaussian_noise"])
    assert result.exit_code == 0, result.output
    assert "report written to" in result.output
    tables = tmp_path / "r" / "tables"
    assert list(_methods(pd.read_csv(tables / "summary.csv"))["method"]) == ["asam"]
    # AdamW is still the reference of the ratios when it is not shown
    assert _methods(pd.read_csv(tables / "summary.csv"))["train_cost_x_adamw"].notna().all()
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


# --------------------------------------------------------------------------- honest statistics


def test_smoke_report_marks_nothing_at_two_seeds_and_says_why(report_dir):
    tables = report_dir / "tables"
    for name, column in (("delta_vs_adamw", "marks"), ("delta_summary", "mark")):
        marks = pd.read_csv(tables / f"{name}.csv", keep_default_na=False)[column]
        assert (marks == "").all(), name
    delta = pd.read_csv(tables / "delta_vs_adamw.csv")
    assert (delta["n_pairs"] == 2).all() and (delta["sign_flip_p"] >= 0.5).all()
    assert delta["ci_low"].isna().all()  # no interval from two pairs
    text = _pdf_text(report_dir / "report.pdf")
    assert "No cell can be marked significant: with 2 paired seeds the smallest two-sided " \
           "sign-flip p is 2/2^2 = 0.5" in text
    assert "Holm–Bonferroni" in text
    assert "*" not in (tables / "delta_vs_adamw.md").read_text()
    power = pd.read_csv(tables / "detectable_difference.csv")
    assert (power["seed_mdd"] == np.inf).all()  # 2 seeds cannot detect any difference


def test_smoke_report_shows_box_priors_and_counts_runs_that_did_not_learn(recorded,
                                                                         report_dir):
    summary = pd.read_csv(report_dir / "tables" / "summary.csv")
    priors = summary[summary["role"] == schema.ROLE_BASELINE]
    assert set(BOX_PRIORS) <= set(priors["method"]) and (priors["n"] == 1).all()
    assert priors["clean_miou_ci_low"].isna().all()
    assert "prompt-only prior" in (report_dir / "tables" / "summary.md").read_text()
    data = load_study_data("tiny")
    box = data.references[data.references["method"].isin(BOX_PRIORS)]
    best = box.loc[data.column(box, schema.TEST_MIOU).idxmax()]
    above = _methods(summary).set_index("method")["miou_above_box_prior"]
    for method in ("adamw", "asam"):
        test = data.column(data.final(method), schema.TEST_MIOU)
        assert above[method] == pytest.approx(
            test.mean() - best[schema.metric_column(schema.TEST_MIOU)])
    outcomes = pd.read_csv(report_dir / "tables" / "run_outcomes.csv").set_index("method")
    floor = best[schema.metric_column(schema.VAL_MIOU)]
    for method in ("adamw", "asam"):
        val = data.column(data.final(method), schema.VAL_MIOU)
        assert outcomes.loc[method, "did_not_learn"] == int((val <= floor).sum())
        assert outcomes.loc[method, "successful_n"] == int((val > floor).sum())
        assert outcomes.loc[method, ["started", "finished"]].tolist() == [2, 2]


def _new_study(client, study: str) -> tuple[str, str]:
    """(experiment id, parent run id) of a new study recorded by hand."""
    experiment_id = get_experiment_id(client, study)
    return experiment_id, client.create_run(experiment_id, tags={
        schema.STUDY: study, schema.PRESET: "", schema.STUDY_KEY: study,
        schema.ROLE: schema.ROLE_STUDY}).info.run_id


HAND = "hand"
IMAGES = 30  # ≥ 20, so the per-mask comparison gets an interval


@pytest.fixture(scope="module")
def handmade(recorded):
    """A study written run by run as the runner records it, with every outcome in it:
    adamw (2 seeds), asam (2 finished — one below the box prior — and one each diverged,
    collapsed and killed), sam (2 finished, both below the prior), three priors and the
    zero-shot model. Per-mask scores for adamw and asam, 2 masks in each of 30 images."""
    client = tracking_client()
    experiment_id, parent_id = _new_study(client, HAND)
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.8, size=2 * IMAGES)

    def trial(method, seed, val, shift=0.0, outcome=schema.STATUS_OK, test=None):
        ious = np.clip(base + shift + rng.normal(0, 0.02, size=base.size), 0, 1)
        ok = outcome == schema.STATUS_OK
        metrics = {schema.VAL_MIOU: val} if val is not None else {}
        if ok:
            metrics |= {schema.TEST_MIOU: float(ious.mean()), schema.COST_TRAIN: 10.0,
                        schema.SHIFT_MEAN_MIOU: 0.8 * float(ious.mean()),
                        schema.SHIFT_RELATIVE: 0.8 + shift}
        elif test is not None:
            metrics[schema.TEST_MIOU] = test
        return _record(client, experiment_id, parent_id, HAND, schema.ROLE_TRIAL, method, seed,
                       outcome, metrics, ious if ok else None)

    trial("adamw", 1, 0.60)
    trial("adamw", 2, 0.62)
    trial("asam", 1, 0.55, shift=0.05)  # finished, but not above the prior's 0.58
    trial("asam", 2, 0.70, shift=0.05)
    trial("asam", 3, 0.30, outcome=schema.STATUS_DIVERGED)  # failed before being tested
    trial("asam", 4, 0.25, outcome=schema.STATUS_COLLAPSED, test=0.20)  # scored anyway
    trial("asam", 5, None, outcome="killed")
    trial("sam", 1, 0.50)
    trial("sam", 2, 0.52)
    for role, name, val, test in ((schema.ROLE_BASELINE, "box-fill", 0.56, 0.57),
                                  (schema.ROLE_BASELINE, "ellipse-in-box", 0.58, 0.59),
                                  (schema.ROLE_BASELINE, "point-disc", 0.40, 0.41),
                                  (schema.ROLE_ZERO_SHOT, "zero-shot", 0.45, 0.46)):
        _record(client, experiment_id, parent_id, HAND, role, name,
                metrics={schema.VAL_MIOU: val, schema.TEST_MIOU: test,
                         schema.SHIFT_RELATIVE: 0.99})
    return load_study_data(HAND)


def test_outcomes_count_every_run_and_give_both_means(handmade, tmp_path):
    out = build_report(HAND, out=tmp_path / "hand", formats=["csv", "md"])
    outcomes = pd.read_csv(out / "tables" / "run_outcomes.csv").set_index("method")
    asam = outcomes.loc["asam"]
    assert asam[["started", "finished", "diverged", "collapsed", "did_not_learn",
                 "interrupted_or_running"]].tolist() == [5, 2, 1, 1, 1, 1]
    tests = handmade.column(handmade.final("asam"), schema.TEST_MIOU).tolist()
    # all runs that ended, failures at their measured score (the diverged run has none)
    assert asam["all_runs_n"] == 3
    assert asam["all_runs_miou"] == pytest.approx(np.mean([*tests, 0.20]))
    assert asam["successful_n"] == 1 and asam["successful_miou"] == pytest.approx(tests[1])
    assert outcomes.loc["sam", "did_not_learn"] == 2 and outcomes.loc["sam", "successful_n"] == 0
    assert outcomes.loc["adamw", "did_not_learn"] == 0
    shown = (out / "tables" / "run_outcomes.md").read_text()
    assert "n=3" in shown and "n=1" in shown


def test_summary_has_reference_rows_and_the_prior_column(handmade, tmp_path):
    out = build_report(HAND, out=tmp_path / "hand", formats=["csv", "md"])
    summary = pd.read_csv(out / "tables" / "summary.csv")
    methods = list(summary["method"])  # AdamW first, then the reference rows
    assert methods[0] == "adamw" and set(methods[:3]) == {"adamw", "asam", "sam"}
    assert methods[3:] == ["box-fill", "ellipse-in-box", "point-disc", "zero-shot"]
    assert list(summary["n"]) == [2, 2, 2, 1, 1, 1, 1]
    rows = summary.set_index("method")
    adamw = handmade.column(handmade.final("adamw"), schema.TEST_MIOU).mean()
    # the floor is the better box prior: ellipse-in-box (0.59), not box-fill (0.57)
    assert rows.loc["adamw", "miou_above_box_prior"] == pytest.approx(adamw - 0.59)
    assert rows.loc["ellipse-in-box", "miou_above_box_prior"] == pytest.approx(0.0)
    assert rows.loc["point-disc", "miou_above_box_prior"] == pytest.approx(0.41 - 0.59)
    # relative robustness only over runs above the prior: asam's seed 2 alone; none for sam
    assert rows.loc["asam", "relative_robustness"] == pytest.approx(0.85)
    assert np.isnan(rows.loc["sam", "relative_robustness"])
    text = (out / "tables" / "summary.md").read_text()
    assert "—, at or below the prior" in text and "zero-shot (no fine-tuning)" in text
    assert "prompt-only prior" in text


def test_comparisons_have_two_levels_and_no_mark_at_two_seeds(handmade, tmp_path):
    with report_style():
        ctx = Context(handmade, method_colors(handmade.all_methods), ShiftFilter(), draw=False)
        section = summary.build(ctx)
    words = " ".join(b for b in section.blocks if isinstance(b, str))
    assert "No comparison can be marked significant: with 2 paired seeds" in words
    assert "ellipse-in-box (test mIoU 0.590; box-fill 0.570)" in words
    assert "Minimum detectable difference" in words
    assert "get their own Holm–Bonferroni over the 2 per-mask tests" in words
    tables = {t.name: t for t in section.items(Table)}
    delta = tables["delta_summary"].data.set_index(["method", "metric"])
    clean = delta.loc["asam", "clean mIoU"]
    assert clean["n_seeds"] == 2 and clean["sign_flip_p"] == pytest.approx(0.5)
    assert clean["mark"] == "" and np.isnan(clean["ci_low"])
    # per mask: asam's masks sit 0.05 above adamw's; 60 masks in 30 images, an interval
    assert (clean["masks"], clean["images"]) == (60, IMAGES)
    assert clean["mask_ci_low"] < clean["mask_delta"] < clean["mask_ci_high"]
    assert clean["mask_delta"] == pytest.approx(0.05, abs=0.01) and clean["mask_ci_low"] > 0
    # relative robustness pairs only seeds where both beat the prior: seed 2
    assert delta.loc["asam", "relative robustness"]["n_seeds"] == 1
    power = tables["detectable_difference"].data.set_index("method")
    assert power.loc["asam", "seed_mdd"] == np.inf and 0 < power.loc["asam", "mask_mdd"] < 0.05
    assert "none: 2 seeds cannot give p < 0.05" in tables["detectable_difference"].display.to_string()


def test_sharpness_is_correlated_within_each_method_never_pooled(recorded):
    client = tracking_client()
    experiment_id, parent_id = _new_study(client, "sharp")
    # two methods whose runs differ in level (sharpness and gap both higher for one), and
    # inside each method no relation: pooled, τ would be large; within, it is not
    rng = np.random.default_rng(1)
    for method, level in (("sgd-a", 0.0), ("sgd-b", 1.0)):
        for seed in range(8):
            _record(client, experiment_id, parent_id, "sharp", schema.ROLE_TRIAL, method, seed,
                    metrics={schema.PROBE_ASAM_SHARPNESS: level + rng.uniform(0, 0.5),
                             schema.PROBE_SHARPNESS: level + rng.uniform(0, 0.5),
                             schema.GAP_TRAIN_TEST: level + rng.uniform(0, 0.5),
                             schema.TEST_MIOU: rng.uniform(0.5, 0.7)})
    data = load_study_data("sharp")
    ctx = Context(data, method_colors(data.all_methods), ShiftFilter(), draw=False)
    section = sharpness.build(ctx)
    rows = section.items(Table)[0].data
    assert set(rows["n"]) == {8} and set(rows["method"]) == {"sgd-a", "sgd-b"}
    assert list(rows["probe"].unique()) == [schema.PROBE_ASAM_SHARPNESS, schema.PROBE_SHARPNESS]
    assert rows["ci_low"].notna().all() and rows["partial_tau"].notna().all()
    words = " ".join(b for b in section.blocks if isinstance(b, str))
    assert "indistinguishable from 0" in words and "never pooled" in words


def test_a_mark_appears_where_the_corrected_test_can_reach_it(recorded):
    # 8 seeds, asam above adamw on every one: sign-flip p = 2/2⁸ ≈ 0.0078 for both metrics;
    # Holm over the 2 comparisons: 0.016 < 0.05
    client = tracking_client()
    experiment_id, parent_id = _new_study(client, "eight")
    for seed in range(8):
        for method, lift in (("adamw", 0.0), ("asam", 0.05)):
            level = 0.6 + 0.01 * seed + lift
            _record(client, experiment_id, parent_id, "eight", schema.ROLE_TRIAL, method, seed,
                    metrics={schema.TEST_MIOU: level, schema.SHIFT_MEAN_MIOU: level - 0.1})
    data = load_study_data("eight")
    ctx = Context(data, method_colors(data.all_methods), ShiftFilter(), draw=False)
    section = summary.build(ctx)
    delta = next(t for t in section.items(Table) if t.name == "delta_summary").data
    assert list(delta["sign_flip_p"]) == pytest.approx([2 / 256] * 2)
    assert list(delta["holm_p"]) == pytest.approx([4 / 256] * 2)
    assert list(delta["mark"]) == ["*", "*"]
    assert delta["ci_low"].notna().all()  # n = 8: a Student-t interval
    assert "*" in summary.headline(ctx)[0]
    words = " ".join(b for b in section.blocks if isinstance(b, str))
    assert "can be marked significant" not in words


def _artifact_files(client, run_id: str, path: str) -> set[str]:
    files = set()
    for info in client.list_artifacts(run_id, path):
        files |= _artifact_files(client, run_id, info.path) if info.is_dir else {info.path}
    return files


def test_report_pdf_and_tables_are_logged_on_the_parent_run_and_replaced(handmade, tmp_path):
    client, folder = tracking_client(), schema.REPORT_DIR
    parent_id = handmade.parent["run_id"]
    out = build_report(HAND, out=tmp_path / "first", formats=["pdf", "csv"])
    tables = sorted((out / "tables").glob("*.csv"))
    assert tables and _artifact_files(client, parent_id, folder) == {
        f"{folder}/report.pdf", *(f"{folder}/tables/{p.name}" for p in tables)}
    logged = client.download_artifacts(parent_id, f"{folder}/report.pdf", str(tmp_path))
    assert open(logged, "rb").read() == (out / "report.pdf").read_bytes()
    # a rebuild replaces them: nothing of the first build is left beside the new tables
    out = build_report(HAND, out=tmp_path / "second", formats=["md"])
    assert _artifact_files(client, parent_id, folder) == {
        f"{folder}/tables/{p.name}" for p in (out / "tables").glob("*.md")}


def test_sharpness_leaves_out_methods_without_probes(recorded):
    """An ensemble has no weights of its own to probe: its runs give no τ row of n = 0."""
    client = tracking_client()
    experiment_id, parent_id = _new_study(client, "probed")
    rng = np.random.default_rng(0)
    for method in ("adamw", "asam"):
        for seed in (1, 2, 3, 4):
            _record(client, experiment_id, parent_id, "probed", schema.ROLE_TRIAL, method, seed,
                    metrics={schema.TEST_MIOU: 0.6 + 0.01 * seed,
                             schema.GAP_TRAIN_TEST: float(rng.normal(0.05, 0.01)),
                             schema.PROBE_HESSIAN_TRACE: float(rng.normal(10, 1))})
    _record(client, experiment_id, parent_id, "probed", schema.ROLE_ENSEMBLE, "sam-e",
            metrics={schema.TEST_MIOU: 0.65, schema.GAP_TRAIN_TEST: 0.05})
    data = load_study_data("probed")
    assert "sam-e" in data.methods
    with report_style():
        ctx = Context(data, method_colors(data.all_methods), ShiftFilter(), draw=False)
        section = sharpness.build(ctx)
    tables = {b.name: b.data for b in section.blocks if isinstance(b, Table)}
    assert set(tables["sharpness_kendall"]["method"]) == {"adamw", "asam"}
    assert "sam-e" not in set(tables["sharpness_probes"]["method"])
