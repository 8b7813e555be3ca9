"""SAM / ASAM under real training conditions: AMP, grad scaling, BatchNorm, checkpoints, factory."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

from harness.errors import HarnessError
from harness.optim import (
    ASAM,
    SAM,
    build_optimizer,
    disable_running_stats,
    enable_running_stats,
    frozen_bn_stats,
    needs_closure,
)




def mlp(seed: int = 0, batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    middle = [nn.BatchNorm1d(16)] if batchnorm else []
    return nn.Sequential(nn.Linear(6, 16), *middle, nn.ReLU(), nn.Linear(16, 2))


def batches(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(12, 6, generator=gen), torch.randn(12, 2, generator=gen)) for _ in range(n)]


def mse(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def train(model, opt, data, scaler=None, autocast_dtype=None):
    """The loop a user writes: first backward, then step(closure) (with AMP when asked)."""
    for batch in data:
        def closure():
            with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = mse(model, batch)
            (scaler.scale(loss) if scaler else loss).backward()
            return loss

        closure()
        opt.step(closure, grad_scaler=scaler)
        if scaler:
            scaler.update()
        opt.zero_grad()


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


# -- mixed precision ----------------------------------------------------------------------------


def test_bf16_autocast_follows_the_fp32_step():
    model32, model16 = mlp(), mlp()
    start = params_of(model32)
    data = batches(3)
    train(model32, ASAM(model32.parameters(), torch.optim.SGD, lr=0.1), data)
    train(model16, ASAM(model16.parameters(), torch.optim.SGD, lr=0.1), data,
          autocast_dtype=torch.bfloat16)
    d32 = torch.cat([(p - s).flatten() for p, s in zip(model32.parameters(), start)])
    d16 = torch.cat([(p - s).flatten() for p, s in zip(model16.parameters(), start)])
    assert torch.isfinite(d16).all()
    assert torch.cosine_similarity(d16, d32, dim=0) > 0.99


def test_grad_scaler_finite_path_matches_unscaled_training_with_clipping():
    plain, scaled = mlp(), mlp()
    data = batches(4)
    kwargs = dict(rho=0.5, eta=0.01, every_k=2, off_step="looksam", max_grad_norm=0.1, lr=0.1)
    train(plain, ASAM(plain.parameters(), torch.optim.SGD, **kwargs), data)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    train(scaled, ASAM(scaled.parameters(), torch.optim.SGD, **kwargs), data, scaler=scaler)
    for a, b in zip(scaled.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad_pass", ["first", "second"])
def test_grad_scaler_skips_the_whole_step_on_overflow(bad_pass):
    model = mlp()
    opt = ASAM(model.parameters(), torch.optim.AdamW, lr=0.1, every_k=2, off_step="looksam")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    train(model, opt, batches(2), scaler=scaler)  # one ascent, one off-step: a direction exists
    before = params_of(model)
    direction = [opt.state[p]["looksam_direction"].clone() for p in model.parameters()]
    adam_steps = [opt.base_optimizer.state[p]["step"].clone() for p in model.parameters()]
    scale = scaler.get_scale()
    assert opt.ascends_this_step()

    batch = batches(1, seed=5)[0]
    calls = []

    def backward_with_inf():
        loss = mse(model, batch)
        scaler.scale(loss).backward()
        model[0].weight.grad[0, 0] = float("inf")

    def closure():
        calls.append(1)
        if bad_pass == "second":
            backward_with_inf()
        else:
            scaler.scale(mse(model, batch)).backward()

    if bad_pass == "first":
        backward_with_inf()
    else:
        scaler.scale(mse(model, batch)).backward()
    opt.step(closure, grad_scaler=scaler)
    scaler.update()

    assert calls == ([] if bad_pass == "first" else [1])  # no wasted pass after a bad first one
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
    for p, d, s in zip(model.parameters(), direction, adam_steps):
        assert torch.equal(opt.state[p]["looksam_direction"], d)
        assert torch.equal(opt.base_optimizer.state[p]["step"], s)
    assert scaler.get_scale() == scale * 0.5


# -- BatchNorm ----------------------------------------------------------------------------------


def bn_stats(model):
    bn = model[1]
    return bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()


def test_frozen_bn_stats_normalises_with_the_batch_but_keeps_running_stats():
    model = mlp(batchnorm=True).train()
    twin = copy.deepcopy(model)
    x, _ = batches(1)[0]
    before = bn_stats(model)
    with frozen_bn_stats(model):
        out = model(x)
    assert all(torch.equal(a, b) for a, b in zip(bn_stats(model), before))
    assert torch.equal(out, twin(x))  # same batch-statistics normalisation as a normal pass
    assert model[1].track_running_stats
    model(x)
    assert int(model[1].num_batches_tracked) == 1


def test_disable_enable_leave_untracked_layers_alone():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.BatchNorm1d(4, track_running_stats=False))
    disable_running_stats(model)
    assert not model[0].track_running_stats and not model[1].track_running_stats
    enable_running_stats(model)
    assert model[0].track_running_stats and not model[1].track_running_stats


def test_sam_step_with_frozen_second_pass_counts_the_batch_once():
    model = mlp(batchnorm=True).train()
    twin = copy.deepcopy(model)
    batch = batches(1)[0]
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    mse(model, batch).backward()
    opt.first_step(zero_grad=True)
    with frozen_bn_stats(model):
        mse(model, batch).backward()
    opt.second_step(zero_grad=True)
    twin(batch[0])  # one ordinary forward at w
    assert all(torch.equal(a, b) for a, b in zip(bn_stats(model), bn_stats(twin)))


# -- checkpoints --------------------------------------------------------------------------------


def make_asam(model):
    return ASAM(model.parameters(), torch.optim.AdamW, lr=0.05, weight_decay=0.1, every_k=3,
                off_step="looksam", max_grad_norm=1.0)


def test_resume_from_state_dict_gives_bit_identical_steps():
    data = batches(9)
    model = mlp()
    opt = make_asam(model)
    train(model, opt, data[:4])  # stop mid-cycle, with a LookSAM direction stored
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    train(model, opt, data[4:])

    buffer.seek(0)
    checkpoint = torch.load(buffer)
    resumed = mlp(seed=1)
    resumed.load_state_dict(checkpoint["model"])
    opt2 = make_asam(resumed)
    opt2.load_state_dict(checkpoint["opt"])
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    assert not opt2.ascends_this_step()
    train(resumed, opt2, data[4:])
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_scheduler_and_added_groups_reach_the_base_optimizer():
    model = mlp()
    opt = SAM(list(model[0].parameters()), torch.optim.AdamW, lr=0.1)
    opt.add_param_group({"params": list(model[2].parameters()), "rho": 0.0})
    assert opt.base_optimizer.param_groups[1]["betas"] == (0.9, 0.999)
    assert opt.param_groups[1]["eta"] == 0.0 and opt.param_groups[1]["rho"] == 0.0
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "scheduler.step() before optimizer.step()"
        train(model, opt, batches(1))
        scheduler.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


# -- API misuse ---------------------------------------------------------------------------------


def test_misuse_is_reported():
    model = mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, every_k=2)
    mse(model, batches(1)[0]).backward()
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    opt.first_step()
    with pytest.raises(RuntimeError, match="twice"):
        opt.first_step()
    opt.second_step(zero_grad=True)
    mse(model, batches(1)[0]).backward()
    opt.step()  # an off-step needs no closure
    with pytest.raises(TypeError, match="class"):
        SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="off_step"):
        SAM(model.parameters(), torch.optim.SGD, off_step="reuse", lr=0.1)


def test_asam_defaults():
    group = ASAM(mlp().parameters(), torch.optim.AdamW).param_groups[0]
    assert (group["rho"], group["eta"], group["adaptive"]) == (0.5, 0.01, True)
    group = SAM(mlp().parameters(), torch.optim.AdamW).param_groups[0]
    assert (group["rho"], group["eta"], group["adaptive"]) == (0.05, 0.0, False)


# -- factory ------------------------------------------------------------------------------------


def test_build_optimizer_methods():
    params = list(mlp().parameters())
    adamw = build_optimizer(params, "adamw", lr=1e-3, max_grad_norm=1.0)
    assert type(adamw) is torch.optim.AdamW and not needs_closure(adamw)
    sam = build_optimizer(params, "sam", lr=1e-3, rho=0.1)
    assert type(sam) is SAM and needs_closure(sam) and isinstance(sam.base_optimizer, torch.optim.AdamW)
    asam = build_optimizer(params, "ASAM", base="sgd", lr=1e-3, momentum=0.9, every_k=5,
                           off_step="looksam", max_grad_norm=2.0)
    assert type(asam) is ASAM and isinstance(asam.base_optimizer, torch.optim.SGD)
    assert (asam.every_k, asam.off_step, asam.max_grad_norm) == (5, "looksam", 2.0)
    assert asam.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize(
    "method, kwargs, message",
    [
        ("adam", {}, "adam"),
        ("sam", {"base": "lion"}, "lion"),
        ("sam", {"lr": 1e-3, "rhoo": 0.1}, "rhoo"),
        ("adamw", {"lr": 1e-3, "rho": 0.1}, "rho"),
    ],
)
def test_build_optimizer_rejects_bad_configs(method, kwargs, message):
    with pytest.raises(HarnessError, match=message):
        build_optimizer(mlp().parameters(), method, **kwargs)
