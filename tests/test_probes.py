"""Probes against independent references on models small enough to solve exactly.

References: the exact Hessian from ``torch.func.hessian`` on the flattened parameter vector,
SAM perturbations written out by hand, closed forms for quadratics, and brute-force maxima.
Everything is float64 so the comparisons can be tight. The last section runs the Hessian
probes through a tiny real Segment Anything, where double backward must work.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from harness.probes import (
    average_sharpness,
    filter_normalized_directions,
    hessian_top_eigenvalues,
    hessian_trace,
    landscape_1d,
    landscape_2d,
    plot_landscape_1d,
    plot_landscape_2d,
    sharpness,
)


# --------------------------------------------------------------------------- models and data


def seeded(build, seed=0):
    """Build a model from a fixed seed without leaving a trace on the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def mlp():
    return seeded(lambda: nn.Sequential(
        nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 6), nn.Softplus(), nn.Linear(6, 1)
    ).double())


def regression_batches(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(5, 3, generator=g, dtype=torch.float64),
             torch.randn(5, 1, generator=g, dtype=torch.float64)) for _ in range(n)]


def mse(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def mean_loss(model, loss_fn, batches):
    """L(w) as the probes define it: float64 mean over batches."""
    with torch.no_grad():
        return sum(float(loss_fn(model, b).double()) for b in batches) / len(batches)


def exact_hessian(model, batches):
    """∇²L on the flattened trainable parameters, by torch.func (no HVPs involved)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    theta = torch.cat([p.detach().reshape(-1) for _, p in named])

    def loss_of(flat):
        tensors, offset = {}, 0
        for name, p in named:
            tensors[name] = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        return sum(((functional_call(model, tensors, (x,)) - y) ** 2).mean()
                   for x, y in batches) / len(batches)

    with warnings.catch_warnings():
        # torch's own forward-AD decompositions still call torch.jit.script; not ours to fix.
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
        return torch.func.hessian(loss_of)(theta)


class Quadratic(nn.Module):
    """L(w) = ½ (w − c)ᵀ A (w − c) for a batch c: Hessian A everywhere."""

    def __init__(self, a, w):
        super().__init__()
        self.register_buffer("a", a)
        self.w = nn.Parameter(w)


def quadratic_loss(model, c):
    r = model.w - c
    return 0.5 * r @ model.a @ r


# --------------------------------------------------------------------------- Hessian


def test_top_eigenvalues_match_exact_hessian():
    model, batches = mlp(), regression_batches()
    exact = torch.linalg.eigvalsh(exact_hessian(model, batches)).flip(0).tolist()

    top3 = hessian_top_eigenvalues(model, mse, batches, k=3, seed=0)
    top1 = hessian_top_eigenvalues(model, mse, batches, k=1, seed=0)

    assert top3.converged and top3.iterations < sum(p.numel() for p in model.parameters())
    assert top3.eigenvalues == pytest.approx(exact[:3], rel=1e-3)
    assert top1.eigenvalues[0] == pytest.approx(exact[0], rel=1e-3)
    assert list(top3.eigenvalues) == sorted(top3.eigenvalues, reverse=True)
    assert top3.cost.hvp_evals == top3.iterations * len(batches)


@pytest.mark.parametrize("spectrum, top", [
    ([-10.0, 3.0, 2.0, 1.0, 0.5, 0.1], [3.0, 2.0]),  # power iteration would return -10
    # Three distinct values: the Krylov space closes after three steps and must restart to
    # find the second 3.
    ([-10.0, 3.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0], [3.0, 3.0]),
])
def test_top_eigenvalues_are_algebraic_and_survive_invariant_subspaces(spectrum, top):
    n = len(spectrum)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(3),
                                       dtype=torch.float64))
    a = q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ q.T
    model = Quadratic(a, torch.zeros(n, dtype=torch.float64))
    batches = [torch.ones(n, dtype=torch.float64)]

    result = hessian_top_eigenvalues(model, quadratic_loss, batches, k=2)

    assert result.eigenvalues == pytest.approx(top, rel=1e-9)


class FusedAttention(nn.Module):
    """Self-attention through F.scaled_dot_product_attention, whose fused CPU/GPU kernels
    implement no double backward."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(3, 6)

    def forward(self, x):
        q, k, v = self.qkv(x).view(1, 5, 3, 2).permute(2, 0, 1, 3)
        return F.scaled_dot_product_attention(q, k, v).reshape(5, 2)[:, :1]


def test_hessian_probes_work_through_fused_attention():
    model, batches = seeded(lambda: FusedAttention().double()), regression_batches()
    with sdpa_kernel(SDPBackend.MATH):  # the reference needs the math kernel too
        exact = torch.linalg.eigvalsh(exact_hessian(model, batches))

    result = hessian_top_eigenvalues(model, mse, batches, k=1)

    assert result.eigenvalues[0] == pytest.approx(float(exact[-1]), rel=1e-3)


# --------------------------------------------------------------------------- sharpness


@pytest.mark.parametrize("adaptive", [False, True])
def test_one_step_sharpness_equals_hand_computed_sam_perturbation(adaptive):
    model, batches, rho, eta = mlp(), regression_batches(), 0.1, 0.01
    params = list(model.parameters())
    loss = sum(mse(model, b) for b in batches) / len(batches)
    grads = torch.autograd.grad(loss, params)
    t = [p.detach().abs() + eta if adaptive else torch.ones_like(p) for p in params]
    t_grad_norm = torch.sqrt(sum(((ti * g) ** 2).sum() for ti, g in zip(t, grads)))
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        for p, ti, g in zip(perturbed.parameters(), t, grads):
            p.add_(rho * ti**2 * g / t_grad_norm)
    expected = mean_loss(perturbed, mse, batches) - mean_loss(model, mse, batches)

    result = sharpness(model, mse, batches, rho=rho, adaptive=adaptive, eta=eta)

    assert result.sharpness == pytest.approx(expected, rel=1e-10)
    assert result.sharpness > 0 and result.best_step == 1
    assert (result.cost.grad_evals, result.cost.loss_evals) == (len(batches), len(batches))


@pytest.mark.parametrize("adaptive", [False, True])
def test_multi_step_sharpness_approaches_the_true_maximum(adaptive):
    # A convex quadratic peaks on the boundary of the ball, so a fine sweep of the (ellipse
    # for ASAM) boundary is the true maximum. ρ is large enough for curvature to matter.
    a = torch.tensor([[1.0, 0.8], [0.8, 5.0]], dtype=torch.float64)
    w = torch.tensor([0.6, -0.3], dtype=torch.float64)
    model, batches, rho, eta = Quadratic(a, w), [torch.zeros(2, dtype=torch.float64)], 0.8, 0.1
    t = w.abs() + eta if adaptive else torch.ones(2, dtype=torch.float64)
    angles = torch.linspace(0, 2 * math.pi, 20001, dtype=torch.float64)
    eps = rho * torch.stack([angles.cos(), angles.sin()], dim=1) * t
    r = w + eps
    with torch.no_grad():
        true_max = float((0.5 * ((r @ a) * r).sum(1)).max() - quadratic_loss(model, batches[0]))

    one = sharpness(model, quadratic_loss, batches, rho, adaptive=adaptive, eta=eta, steps=1)
    many = sharpness(model, quadratic_loss, batches, rho, adaptive=adaptive, eta=eta, steps=20)

    assert one.sharpness < many.sharpness <= true_max * (1 + 1e-6)  # grid resolution
    assert many.sharpness == pytest.approx(true_max, rel=1e-6)
    assert one.sharpness < true_max * (1 - 1e-2)  # otherwise the test proves nothing


def relu_net():
    return seeded(lambda: nn.Sequential(
        nn.Linear(3, 8, bias=False), nn.ReLU(), nn.Linear(8, 1, bias=False)
    ).double())


def test_adaptive_sharpness_is_invariant_to_relu_rescaling():
    model, batches = relu_net(), regression_batches()
    rescaled = copy.deepcopy(model)
    with torch.no_grad():
        rescaled[0].weight.mul_(4.0)
        rescaled[2].weight.div_(4.0)
    assert mean_loss(rescaled, mse, batches) == pytest.approx(mean_loss(model, mse, batches),
                                                              rel=1e-12)

    for steps in (1, 3):
        original = sharpness(model, mse, batches, rho=0.5, adaptive=True, steps=steps)
        scaled = sharpness(rescaled, mse, batches, rho=0.5, adaptive=True, steps=steps)
        assert scaled.sharpness == pytest.approx(original.sharpness, rel=1e-9)
    plain = sharpness(model, mse, batches, rho=0.05)
    plain_scaled = sharpness(rescaled, mse, batches, rho=0.05)
    assert abs(plain_scaled.sharpness - plain.sharpness) > 0.1 * abs(plain.sharpness)


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("antithetic", [True, False])
def test_average_sharpness_of_a_quadratic_is_half_sigma_squared_trace(adaptive, antithetic):
    g = torch.Generator().manual_seed(5)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a = m @ m.T + torch.eye(6, dtype=torch.float64)
    w = torch.randn(6, generator=g, dtype=torch.float64)
    batches = [torch.randn(6, generator=g, dtype=torch.float64) for _ in range(2)]
    model, sigma, eta = Quadratic(a, w), 0.05, 0.1
    t2 = (w.abs() + eta) ** 2 if adaptive else torch.ones(6, dtype=torch.float64)
    expected = sigma**2 * float((torch.diagonal(a) * t2).sum()) / 2

    result = average_sharpness(model, quadratic_loss, batches, sigma, adaptive=adaptive, eta=eta,
                               samples=64, seed=0, antithetic=antithetic)

    assert result.stderr > 0
    assert abs(result.mean - expected) <= 3 * result.stderr
    assert result.cost.loss_evals == (1 + 64 * (2 if antithetic else 1)) * len(batches)


# --------------------------------------------------------------------------- landscape


def conv_net():
    return seeded(lambda: nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)
    ).double())


def test_directions_are_filter_normalised_with_zero_for_vectors():
    model = conv_net()
    (direction,) = filter_normalized_directions(model, count=1, seed=0)
    for p, d in zip(model.parameters(), direction):
        if p.dim() < 2:
            assert torch.count_nonzero(d) == 0
        else:
            # One norm per output channel / row, each equal to the weight's.
            torch.testing.assert_close(d.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))
            assert not torch.allclose(d, p)  # a rescaled random draw, not the weight itself


def test_landscape_1d_is_centred_on_the_loss_and_symmetric():
    model, batches = mlp(), regression_batches()
    result = landscape_1d(model, mse, batches, span=0.5, points=7, seed=3)

    assert result.center_loss == mean_loss(model, mse, batches)
    assert result.losses[3] == result.center_loss and result.alphas[3] == 0.0
    np.testing.assert_array_equal(result.alphas, -result.alphas[::-1])
    assert result.alphas[-1] == 0.5
    # Off-centre points are L(w + α d) for the documented direction.
    (direction,) = filter_normalized_directions(model, seed=3)
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for p, d in zip(moved.parameters(), direction):
            p.add_(d, alpha=float(result.alphas[0]))
    assert result.losses[0] == pytest.approx(mean_loss(moved, mse, batches), rel=1e-12)
    assert result.cost.loss_evals == 7 * len(batches)


def test_landscape_2d_grid_and_plots(tmp_path):
    model, batches = mlp(), regression_batches()
    surface = landscape_2d(model, mse, batches, span=1.0, points=5, seed=0)
    line = landscape_1d(model, mse, batches, points=5)

    assert surface.losses.shape == (5, 5)
    assert surface.losses[2, 2] == surface.center_loss == mean_loss(model, mse, batches)
    assert surface.losses[0, 2] == pytest.approx(line.losses[0], rel=1e-12)  # β = 0: along d₁
    for fig in (plot_landscape_1d(line, label="adamw"), plot_landscape_2d(surface, title="t")):
        assert isinstance(fig, Figure)
        fig.savefig(tmp_path / "plot.png")
        assert (tmp_path / "plot.png").stat().st_size > 0


# --------------------------------------------------------------------------- the contract


class StatefulNet(nn.Module):
    """Everything a careless probe could disturb: BN statistics, dropout, frozen weights."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh(),
                                  nn.Dropout(0.5), nn.Linear(6, 1))
        self.frozen = nn.Linear(3, 1).requires_grad_(False)

    def forward(self, x):
        return self.body(x) + self.frozen(x)


def stateful_model(batches):
    model = seeded(lambda: StatefulNet().double())
    model.train()
    with torch.random.fork_rng(devices=[]):
        mse(model, batches[0]).backward()  # moves BN running stats, fills grads
    model.body[0].bias.grad = None  # a None grad among real ones
    model.body[3].eval()  # a submodule whose mode differs from its parent's
    return model


def full_state(model):
    return {
        "params": [(p, p.detach().clone(), p.requires_grad) for p in model.parameters()],
        "grads": [(p.grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
        "buffers": [(n, b.clone()) for n, b in model.named_buffers()],
        "modes": [(n, m.training) for n, m in model.named_modules()],
        "rng": torch.get_rng_state(),
    }


def assert_same_state(model, before):
    after = full_state(model)
    for (p0, v0, rg0), (p1, v1, rg1) in zip(before["params"], after["params"], strict=True):
        assert p0 is p1 and rg0 == rg1 and torch.equal(v0, v1)
    for (ref0, v0), (ref1, v1) in zip(before["grads"], after["grads"], strict=True):
        assert ref0 is ref1
        assert (v0 is None and v1 is None) or torch.equal(v0, v1)
    for (n0, v0), (n1, v1) in zip(before["buffers"], after["buffers"], strict=True):
        assert n0 == n1 and torch.equal(v0, v1)
    assert before["modes"] == after["modes"]
    assert torch.equal(before["rng"], after["rng"])


def numbers(result):
    """A result's values without the wall time, arrays as lists, for exact comparison."""
    values = dataclasses.asdict(result)
    del values["cost"]["seconds"]
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in values.items()}


PROBES = {
    "sharpness": lambda m, f, b: sharpness(m, f, b, rho=0.05),
    "asam-3-steps": lambda m, f, b: sharpness(m, f, b, rho=0.5, adaptive=True, eta=0.01, steps=3),
    "average": lambda m, f, b: average_sharpness(m, f, b, sigma=0.01, samples=3),
    "eigen": lambda m, f, b: hessian_top_eigenvalues(m, f, b, k=2, iters=4),
    "trace": lambda m, f, b: hessian_trace(m, f, b, samples=3),
    "landscape-1d": lambda m, f, b: landscape_1d(m, f, b, points=3),
    "landscape-2d": lambda m, f, b: landscape_2d(m, f, b, points=3),
}


@pytest.mark.parametrize("probe", PROBES.values(), ids=PROBES.keys())
def test_probe_leaves_model_and_rng_exactly_as_found(probe):
    batches = regression_batches()
    model = stateful_model(batches)
    before = full_state(model)
    modes_inside = []

    def spying_loss(model, batch):
        modes_inside.append(any(m.training for m in model.modules()))
        return mse(model, batch)

    first = probe(model, spying_loss, batches)
    assert_same_state(model, before)
    assert modes_inside and not any(modes_inside)  # eval mode throughout the probe
    assert first.cost.seconds > 0 and first.cost.fb_equivalents > 0
    assert numbers(probe(model, spying_loss, batches)) == numbers(first)  # seeded: repeatable


@pytest.mark.parametrize("probe", PROBES.values(), ids=PROBES.keys())
def test_probe_restores_state_when_loss_fn_raises(probe):
    batches = regression_batches()
    model = stateful_model(batches)
    before = full_state(model)
    calls = []

    def failing_loss(model, batch):
        calls.append(1)
        if len(calls) == len(batches) + 2:  # mid-probe, with the weights perturbed
            torch.rand(1)  # and the global RNG consumed
            raise RuntimeError("boom")
        return mse(model, batch)

    with pytest.raises(RuntimeError, match="boom"):
        probe(model, failing_loss, batches)
    assert_same_state(model, before)


def test_seeds_select_the_random_draws():
    model, batches = mlp(), regression_batches()
    assert hessian_trace(model, mse, batches, samples=3, seed=0) != hessian_trace(
        model, mse, batches, samples=3, seed=1)
    assert landscape_1d(model, mse, batches, points=3, seed=0).losses[0] != landscape_1d(
        model, mse, batches, points=3, seed=1).losses[0]


def test_probes_work_inside_no_grad():
    model, batches = mlp(), regression_batches()
    with torch.no_grad():
        assert hessian_trace(model, mse, batches, samples=2).trace != 0
        assert sharpness(model, mse, batches, rho=0.05).sharpness > 0


# --------------------------------------------------------------------------- a real segmenter
# Built straight from segment_anything.modeling. The loss calls encoder, prompt encoder and
# decoder itself: Sam.forward runs under torch.no_grad and could not be differentiated at all.


def tiny_segmenter() -> Sam:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Sam(
            image_encoder=ImageEncoderViT(
                img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, out_chans=16,
                window_size=0, global_attn_indexes=(),
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=16, image_embedding_size=(4, 4), input_image_size=(32, 32),
                mask_in_chans=4,
            ),
            mask_decoder=MaskDecoder(
                transformer_dim=16,
                transformer=TwoWayTransformer(depth=1, embedding_dim=16, mlp_dim=32, num_heads=2),
                num_multimask_outputs=3, iou_head_hidden_dim=16,
            ),
        )


def segmentation_loss(model: Sam, batch) -> torch.Tensor:
    """BCE of the single-mask logits for one image and one positive point prompt."""
    image, point, target = batch
    embedding = model.image_encoder(image)
    sparse, dense = model.prompt_encoder(points=(point, torch.ones(1, 1)), boxes=None, masks=None)
    logits, _ = model.mask_decoder(
        image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
    )
    return F.binary_cross_entropy_with_logits(logits, target)


def segmentation_batches(n=2):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(1, 3, 32, 32, generator=g),
             torch.rand(1, 1, 2, generator=g) * 32,
             (torch.rand(1, 1, 16, 16, generator=g) > 0.5).float()) for _ in range(n)]


def test_trace_and_sharpness_differentiate_through_the_segmenter():
    model, data = tiny_segmenter(), segmentation_batches()
    before = [p.detach().clone() for p in model.parameters()]

    trace = hessian_trace(model, segmentation_loss, data, samples=2, seed=0)
    sharp = sharpness(model, segmentation_loss, data, rho=0.05)

    assert math.isfinite(trace.trace) and trace.trace != 0
    assert trace.cost.hvp_evals == 2 * len(data)
    assert math.isfinite(sharp.sharpness) and sharp.sharpness > 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.training  # Sam() starts in train mode and must be left there
