"""The optimizer benchmark: its loop baseline computes ASAM, and the command runs end to end."""

from __future__ import annotations

import copy
import json

import torch
from click.testing import CliRunner

from harness.bench.optimizers import LoopASAM, _segmentation_workload, optimizers_command
from harness.optim import ASAM




def test_loop_baseline_is_the_same_asam():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).double()
    twin = copy.deepcopy(model)
    fused = ASAM(model.parameters(), torch.optim.AdamW, lr=0.01)
    loop = LoopASAM(twin.parameters(), torch.optim.AdamW, lr=0.01)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(16, 4, generator=gen).double(), torch.randn(16, 2, generator=gen).double()
        for net, opt in ((model, fused), (twin, loop)):
            def closure(net=net):
                loss = ((net(x) - y) ** 2).mean()
                loss.backward()
                return loss

            closure()
            opt.step(closure)
            opt.zero_grad()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_command_reports_ratios_and_memory_as_json():
    result = CliRunner().invoke(
        optimizers_command, ["--steps", "3", "--every-k", "1", "--batch-size", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"sam/adamw", "asam/adamw", "asam/asam-loop"} <= set(report["ratios"])
    for summary in report["ratios"].values():
        assert 0 < summary["min"] <= summary["q25"] <= summary["median"] <= summary["q75"] <= summary["max"]
    # SAM keeps one copy of the weights that have gradients (box prompts leave a few unused).
    extra = report["memory"]["extra_bytes"]
    assert extra["sam"] == extra["asam-loop"]
    assert 0.9 * report["config"]["parameter_bytes"] < extra["sam"] <= report["config"]["parameter_bytes"]


def test_workload_in_decoder_mode_under_bf16_trains_the_decoder_in_bf16():
    make_model, loss_fn = _segmentation_workload("tiny-64", 2, torch.device("cpu"), 0,
                                                 trainable="decoder", autocast="bf16")
    model = make_model()
    dtypes = []
    model.mask_decoder.output_upscaling.register_forward_hook(
        lambda module, args, out: dtypes.append(out.dtype))
    loss_fn(model).backward()
    assert dtypes == [torch.bfloat16]
    touched = {n for n, p in model.named_parameters() if p.grad is not None}
    assert touched and all(n.startswith("mask_decoder.") for n in touched)


def test_command_measures_a_fine_tuning_mode_on_its_trainable_parameters_only():
    result = CliRunner().invoke(optimizers_command, [
        "--steps", "3", "--every-k", "1", "--batch-size", "1", "--trainable", "decoder",
        "--autocast", "bf16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    cfg = report["config"]
    assert (cfg["trainable"], cfg["autocast"]) == ("decoder", "bf16")
    assert 0 < cfg["parameters"] < cfg["total_parameters"]
    # SAM's saved copy is of the trained (decoder) weights only, not of the whole model
    extra = report["memory"]["extra_bytes"]
    assert 0.5 * cfg["parameter_bytes"] < extra["sam"] <= cfg["parameter_bytes"]
