"""The probe suite (``harness.probes.suite``) and ``harness bench probes`` on a tiny model.

The probes themselves are checked against exact references in ``test_probes.py``; here the
question is whether the suite runs what the config asks, names it as promised, adds no
arithmetic of its own, and keeps the probes' promises (model untouched, seeded).
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from click.testing import CliRunner
from matplotlib.figure import Figure

from harness.bench.probes import format_report, probes_command, run_probe_bench
from harness.config import ProbeConfig
from harness.data import synthetic_split
from harness.model import build_model
from harness.probes import (
    average_sharpness,
    hessian_top_eigenvalues,
    hessian_trace,
    landscape_1d,
    sharpness,
)
from harness.probes.suite import ProbeReport, probe_batches, run_probes
from harness.train.batches import batch_loss

# Every probe on, each as small as it may be; non-default values so that a forgotten argument
# (a default used instead of the config's) changes the numbers.
SMALL = ProbeConfig(
    batches=2, batch_size=2, sharpness_rho=0.07, asam_rho=0.3, asam_eta=0.02,
    average_sigma=0.02, average_samples=2, hessian_k=2, hessian_iters=4, trace_samples=2,
    landscape_points=3, landscape_span=0.5, landscape_2d_points=3, seed=3,
)
PROBES = ["loss", "sharpness", "asam_sharpness", "avg_sharpness", "hessian_eig",
          "hessian_trace", "landscape_1d", "landscape_2d"]


def costs(*names: str) -> set[str]:
    return {f"probe_cost/{n}/{unit}" for n in names for unit in ("seconds", "fb")} | {
        "probe_cost/total_seconds"}


def tiny_model(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model("tiny-32")


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    dataset = synthetic_split("shapes", "train", 4, 32, 0, 3, tmp_path_factory.mktemp("data"))
    return probe_batches(dataset, SMALL)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def report(model, batches) -> ProbeReport:
    return run_probes(model, batch_loss, batches, SMALL)


def test_probe_batches_follow_the_config(batches):
    assert [len(b.images) for b in batches] == [SMALL.batch_size] * SMALL.batches


def test_every_probe_reports_its_metrics_and_costs(report):
    assert set(report.metrics) == {
        "probe/loss", "probe/sharpness", "probe/asam_sharpness",
        "probe/avg_sharpness", "probe/avg_sharpness_stderr",
        "probe/hessian_eig1", "probe/hessian_eig2",
        "probe/hessian_eig1_residual", "probe/hessian_eig2_residual",
        "probe/hessian_lanczos/converged", "probe/hessian_lanczos/iterations",
        "probe/hessian_trace", "probe/hessian_trace_stderr",
        "probe/landscape_1d/max_rise",
    } | costs(*PROBES)
    assert all(isinstance(v, float) and math.isfinite(v) for v in report.metrics.values())
    assert all(report.metrics[k] > 0 for k in costs(*PROBES))
    assert report.metrics["probe_cost/total_seconds"] == report.seconds
    assert report.seconds >= sum(report.metrics[f"probe_cost/{n}/seconds"] for n in PROBES)
    assert report.metrics["probe/hessian_eig1"] >= report.metrics["probe/hessian_eig2"]
    assert report.metrics["probe/landscape_1d/max_rise"] >= 0


def test_switched_off_probes_leave_no_trace(model, batches):
    off = dataclasses.replace(
        SMALL, sharpness_rho=0.0, average_samples=0, hessian_k=0, landscape_points=0,
        landscape_2d_points=0)
    result = run_probes(model, batch_loss, batches, off)
    assert set(result.metrics) == {
        "probe/loss", "probe/asam_sharpness", "probe/hessian_trace", "probe/hessian_trace_stderr",
    } | costs("loss", "asam_sharpness", "hessian_trace")
    assert result.figures == {} and result.tables == {}


def test_metrics_are_the_probes_own_numbers(model, batches, report):
    """The suite only renames: each metric equals the probe called by hand with the config."""
    c = SMALL
    args = (model, batch_loss, batches)
    plain = sharpness(*args, rho=c.sharpness_rho)
    adaptive = sharpness(*args, rho=c.asam_rho, adaptive=True, eta=c.asam_eta)
    average = average_sharpness(*args, sigma=c.average_sigma, adaptive=True,
                                samples=c.average_samples, seed=c.seed)
    eigen = hessian_top_eigenvalues(*args, k=c.hessian_k, iters=c.hessian_iters, seed=c.seed)
    trace = hessian_trace(*args, samples=c.trace_samples, seed=c.seed)
    line = landscape_1d(*args, span=c.landscape_span, points=c.landscape_points, seed=c.seed)
    m = report.metrics
    assert m["probe/sharpness"] == plain.sharpness
    assert m["probe/asam_sharpness"] == adaptive.sharpness
    assert (m["probe/avg_sharpness"], m["probe/avg_sharpness_stderr"]) == (
        average.mean, average.stderr)
    assert (m["probe/hessian_eig1"], m["probe/hessian_eig2"]) == eigen.eigenvalues
    assert (m["probe/hessian_eig1_residual"], m["probe/hessian_eig2_residual"]) == \
        eigen.residuals
    assert m["probe/hessian_lanczos/converged"] == float(eigen.converged)
    assert (m["probe/hessian_trace"], m["probe/hessian_trace_stderr"]) == (
        trace.trace, trace.stderr)
    assert m["probe/landscape_1d/max_rise"] == line.losses.max() - line.center_loss
    # One objective everywhere: L(w) is the same number in every probe that evaluates it.
    assert m["probe/loss"] == average.loss == line.center_loss
    assert m["probe_cost/hessian_eig/fb"] == eigen.cost.fb_equivalents
    assert m["probe_cost/sharpness/fb"] == plain.cost.fb_equivalents


def test_figures_and_tables(report):
    assert set(report.figures) == {"landscape_1d.png", "landscape_2d.png"}
    assert all(isinstance(f, Figure) for f in report.figures.values())
    assert set(report.tables) == {"landscape_1d.csv", "landscape_2d.csv"}
    line, plane = report.tables["landscape_1d.csv"], report.tables["landscape_2d.csv"]
    n, n2 = SMALL.landscape_points, SMALL.landscape_2d_points
    assert list(line.columns) == ["alpha", "loss"] and len(line) == n
    assert list(plane.columns) == ["alpha", "beta", "loss"] and len(plane) == n2 * n2
    assert line["alpha"].tolist() == [-SMALL.landscape_span, 0.0, SMALL.landscape_span]
    # The centre of either slice is w itself.
    loss = report.metrics["probe/loss"]
    assert line.loc[line.alpha == 0, "loss"].item() == loss
    assert plane.loc[(plane.alpha == 0) & (plane.beta == 0), "loss"].item() == loss
    grid = plane.pivot(index="alpha", columns="beta", values="loss")
    assert grid.shape == (n2, n2)


def test_model_is_left_bit_identical(batches):
    model = tiny_model()
    model.train()
    model.image_encoder.eval()  # a mixed mode must survive, not be flattened to one flag
    batch_loss(model, batches[0]).backward()
    for p in model.prompt_encoder.parameters():
        p.grad = None  # some grads set, some None
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    rng = torch.get_rng_state()

    run_probes(model, batch_loss, batches, SMALL)

    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in params.items())
    for name, p in model.named_parameters():
        assert (p.grad is None) == (grads[name] is None), name
        assert p.grad is None or torch.equal(p.grad, grads[name]), name
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert torch.equal(torch.get_rng_state(), rng)


def test_same_inputs_same_metrics(model, batches, report):
    again = run_probes(model, batch_loss, batches, SMALL, progress=True)

    def numbers(r: ProbeReport) -> dict[str, float]:
        return {k: v for k, v in r.metrics.items() if not k.endswith("seconds")}

    assert numbers(again) == numbers(report)
    assert all(again.tables[k].equals(t) for k, t in report.tables.items())


def test_bench_gives_positive_ratios():
    result = run_probe_bench("tiny-32", batches=1, batch_size=2)
    assert set(result["probes"]) == set(PROBES)  # the bench adds the 2-D landscape
    assert result["step_seconds"]["median"] > 0
    for row in [*result["probes"].values(), result["total"]]:
        assert row["step_ratio"] > 0 and row["fb"] > 0
        assert row["fb_per_step"] == row["fb"]  # one batch: per-batch passes are steps
    text = format_report(result)
    assert all(name in text for name in PROBES)


def test_bench_command_prints_json():
    out = CliRunner().invoke(probes_command, ["--preset", "tiny-32", "--batches", "1",
                                              "--batch-size", "2", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["config"]["preset"] == "tiny-32"
