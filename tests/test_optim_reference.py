"""SAM / ASAM and their efficient variants against an independent float64 reference.

The reference below is deliberately naive: one Python loop per parameter, gradients through
`torch.func.functional_call`, and its own AdamW / SGD-momentum arithmetic. It shares no code
with `harness.optim`, so agreement to ~1e-6 means the fused implementation computes the maths
written in the module docstrings.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn
from torch.func import functional_call

from harness.optim import ASAM, SAM

STEPS = 7
TOL = 1e-6




# -- random models ---------------------------------------------------------------------------


class ScaledMLP(nn.Module):
    """MLP with a LayerNorm (1-D gains) and a learnable 0-D temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 12)
        self.norm = nn.LayerNorm(12)
        self.fc2 = nn.Linear(12, 3)
        self.temperature = nn.Parameter(torch.tensor(1.3))

    def forward(self, x):
        return self.fc2(torch.tanh(self.norm(self.fc1(x)))) * self.temperature


class SmallConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(5, 4, kernel_size=1)
        self.head = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        h = torch.relu(self.conv(x[:, :, None, None])).flatten(1)
        return self.head(h)


def bias_free_relu() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 16, bias=False), nn.ReLU(), nn.Linear(16, 3, bias=False))


MODELS = {"mlp": ScaledMLP, "conv": SmallConv, "relu": bias_free_relu}


def make_model(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[name]().double()


def make_batches(seed: int, n: int = STEPS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1000 + seed)
    return [
        (torch.randn(8, 5, generator=gen, dtype=torch.float64),
         torch.randn(8, 3, generator=gen, dtype=torch.float64))
        for _ in range(n)
    ]


def loss_of(output, target):
    return ((output - target) ** 2).mean()


# -- the reference ---------------------------------------------------------------------------


@dataclass
class Config:
    rho: float = 0.05
    adaptive: bool = False
    eta: float = 0.0
    adaptive_1d: bool = True
    every_k: int = 1
    off_step: str = "skip"
    alpha: float = 0.7
    max_grad_norm: float | None = None
    # Per-group overrides, applied to the group of non-matrix parameters (ndim <= 1).
    vector_group: dict = field(default_factory=dict)
    manual_api: bool = False


def reference_adamw(w, d, state, hp):
    beta1, beta2 = hp["betas"]
    state["t"] = state.get("t", 0) + 1
    state["m"] = beta1 * state.get("m", torch.zeros_like(w)) + (1 - beta1) * d
    state["v"] = beta2 * state.get("v", torch.zeros_like(w)) + (1 - beta2) * d * d
    m_hat = state["m"] / (1 - beta1 ** state["t"])
    v_hat = state["v"] / (1 - beta2 ** state["t"])
    w = w * (1 - hp["lr"] * hp["weight_decay"])
    return w - hp["lr"] * m_hat / (v_hat.sqrt() + hp["eps"])


def reference_sgd(w, d, state, hp):
    d = d + hp["weight_decay"] * w
    state["buf"] = d.clone() if "buf" not in state else hp["momentum"] * state["buf"] + d
    return w - hp["lr"] * state["buf"]


BASES = {
    "adamw": (torch.optim.AdamW, reference_adamw,
              dict(lr=0.02, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)),
    "sgd": (torch.optim.SGD, reference_sgd, dict(lr=0.1, momentum=0.9, weight_decay=1e-3)),
}


def total_norm(tensors):
    return math.sqrt(sum(float((t * t).sum()) for t in tensors))


def reference_run(model, batches, cfg: Config, base: str):
    """Train a copy of `model` with plain per-parameter float64 maths; return final weights."""
    _, update, base_hp = BASES[base]
    names = [n for n, _ in model.named_parameters()]
    w = [p.detach().clone() for p in model.parameters()]
    hp = []
    for p in w:
        h = dict(base_hp, rho=cfg.rho, eta=cfg.eta)
        if p.ndim <= 1:
            h.update(cfg.vector_group)
        hp.append(h)

    def grad(weights, batch):
        leaves = [x.clone().requires_grad_(True) for x in weights]
        x, y = batch
        loss = loss_of(functional_call(model, dict(zip(names, leaves)), (x,)), y)
        return list(torch.autograd.grad(loss, leaves))

    base_state = [{} for _ in w]
    direction = None
    for t, batch in enumerate(batches):
        g = grad(w, batch)
        if t % cfg.every_k == 0:
            T = [
                (wi.abs() + h["eta"]) if cfg.adaptive and (cfg.adaptive_1d or wi.ndim > 1)
                else torch.ones_like(wi)
                for wi, h in zip(w, hp)
            ]
            tg_norm = total_norm([Ti * gi for Ti, gi in zip(T, g)])
            eps = [h["rho"] * Ti * Ti * gi / (tg_norm + 1e-12) for Ti, gi, h in zip(T, g, hp)]
            d = grad([wi + ei for wi, ei in zip(w, eps)], batch)
            if cfg.off_step == "looksam":
                g_dot_gs = sum(float((gi * si).sum()) for gi, si in zip(g, d))
                g_sq = sum(float((gi * gi).sum()) for gi in g)
                v = [si - g_dot_gs / g_sq * gi for gi, si in zip(g, d)]
                v_norm = total_norm(v)
                direction = [vi / v_norm for vi in v]
        elif cfg.off_step == "looksam":
            g_norm = total_norm(g)
            d = [gi + cfg.alpha * g_norm * ui for gi, ui in zip(g, direction)]
        else:
            d = g
        if cfg.max_grad_norm is not None:
            coef = min(1.0, cfg.max_grad_norm / (total_norm(d) + 1e-6))
            d = [di * coef for di in d]
        w = [update(wi, di, si, h) for wi, di, si, h in zip(w, d, base_state, hp)]
    return w


# -- the implementation under test ------------------------------------------------------------


def run_optimizer(model, batches, cfg: Config, base: str):
    base_cls, _, base_hp = BASES[base]
    params = list(model.parameters())
    matrices = [p for p in params if p.ndim > 1]
    vectors = [p for p in params if p.ndim <= 1]
    groups = [{"params": matrices}, {"params": vectors, **cfg.vector_group}]
    groups = [g for g in groups if g["params"]]
    opt = SAM(
        groups, base_cls, rho=cfg.rho, adaptive=cfg.adaptive, eta=cfg.eta,
        adaptive_1d=cfg.adaptive_1d, every_k=cfg.every_k, off_step=cfg.off_step,
        alpha=cfg.alpha, max_grad_norm=cfg.max_grad_norm, **base_hp,
    )

    for x, y in batches:
        def closure():
            loss = loss_of(model(x), y)
            loss.backward()
            return loss

        closure()
        if cfg.manual_api:
            opt.first_step(zero_grad=True)
            closure()
            opt.second_step(zero_grad=True)
        else:
            opt.step(closure)
            opt.zero_grad()
    return [p.detach().clone() for p in params]


VARIANTS = {
    "sam": Config(rho=0.05),
    "sam-manual": Config(rho=0.05, manual_api=True),
    "sam-adaptive-eta0": Config(rho=0.5, adaptive=True, eta=0.0),
    "asam": Config(rho=0.5, adaptive=True, eta=0.01),
    "asam-1d-plain": Config(rho=0.5, adaptive=True, eta=0.01, adaptive_1d=False),
    "asam-k3-skip": Config(rho=0.5, adaptive=True, eta=0.01, every_k=3),
    "asam-k3-looksam": Config(rho=0.5, adaptive=True, eta=0.01, every_k=3, off_step="looksam"),
    "asam-k3-looksam-manual": Config(
        rho=0.5, adaptive=True, eta=0.01, every_k=3, off_step="looksam", manual_api=True
    ),
    "sam-k2-looksam": Config(rho=0.1, every_k=2, off_step="looksam", alpha=0.5),
    "asam-groups": Config(
        rho=0.5, adaptive=True, eta=0.01, vector_group={"rho": 0.1, "eta": 0.2, "lr": 0.05}
    ),
    "asam-clip": Config(rho=0.5, adaptive=True, eta=0.01, max_grad_norm=0.05),
}


def relative_error(got, want, start):
    """‖Δgot − Δwant‖ / ‖Δwant‖ over all parameters, Δ = change from the initial weights."""
    diff = total_norm([a - b for a, b in zip(got, want)])
    return diff / total_norm([b - s for b, s in zip(want, start)])


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_matches_float64_reference(variant, base, model_name):
    cfg = VARIANTS[variant]
    seed = sorted(MODELS).index(model_name)
    model = make_model(model_name, seed)
    batches = make_batches(seed)
    start = [p.detach().clone() for p in model.parameters()]

    want = reference_run(model, batches, cfg, base)
    got = run_optimizer(copy.deepcopy(model), batches, cfg, base)
    assert relative_error(got, want, start) <= TOL
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=TOL, atol=1e-9)

    # The comparison only means something if the sharpness term visibly changed the result.
    plain = reference_run(model, batches, Config(rho=0.0, vector_group={
        k: v for k, v in cfg.vector_group.items() if k == "lr"
    }), base)
    assert relative_error(plain, want, start) > 1e-3


# -- exact special cases -----------------------------------------------------------------------


@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(adaptive=True, eta=0.01), dict(every_k=2),
     dict(adaptive=True, eta=0.01, every_k=2, off_step="looksam")],
    ids=["sam", "asam", "sam-k2", "asam-k2-looksam"],
)
def test_rho_zero_reproduces_base_optimizer_bit_exactly(base, kwargs):
    base_cls, _, base_hp = BASES[base]
    torch.manual_seed(0)
    model = ScaledMLP()  # float32: exactness must not rely on float64 headroom
    twin = copy.deepcopy(model)
    opt = SAM(model.parameters(), base_cls, rho=0.0, **kwargs, **base_hp)
    plain = base_cls(twin.parameters(), **base_hp)
    for x, y in make_batches(0, 5):
        x, y = x.float(), y.float()
        loss_of(model(x), y).backward()
        opt.step(lambda: loss_of(model(x), y).backward())
        opt.zero_grad()
        loss_of(twin(x), y).backward()
        plain.step()
        plain.zero_grad()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls", [SAM, ASAM])
def test_zero_gradient_gives_no_nan_and_no_move(cls):
    model = make_model("mlp", 0)
    before = [p.detach().clone() for p in model.parameters()]
    opt = cls(model.parameters(), torch.optim.SGD, lr=0.1)
    x, _ = make_batches(0, 1)[0]

    def closure():
        loss = 0.0 * model(x).sum()
        loss.backward()
        return loss

    closure()
    opt.step(closure)
    for a, b in zip(model.parameters(), before):
        assert torch.equal(a, b)


def test_asam_perturbed_loss_is_scale_invariant_but_sam_is_not():
    """Rescaling layer 1 by a and layer 2 by 1/a keeps a bias-free ReLU net's function; ASAM's
    (η = 0) perturbed loss L(w + ε) keeps its value too, SAM's does not."""
    x, y = make_batches(3, 1)[0]

    def perturbed_loss(model, opt):
        loss_of(model(x), y).backward()
        opt.first_step(zero_grad=True)
        with torch.no_grad():
            return float(loss_of(model(x), y))

    def both_scales(make_opt):
        losses = []
        for a in (1.0, 7.0):
            model = make_model("relu", 3)
            with torch.no_grad():
                model[0].weight.mul_(a)
                model[2].weight.div_(a)
            losses.append(perturbed_loss(model, make_opt(model)))
        return losses

    asam = both_scales(lambda m: ASAM(m.parameters(), torch.optim.SGD, rho=0.5, eta=0.0, lr=0.1))
    sam = both_scales(lambda m: SAM(m.parameters(), torch.optim.SGD, rho=0.5, lr=0.1))
    assert asam[0] == pytest.approx(asam[1], rel=1e-12)
    assert abs(sam[0] - sam[1]) > 1e-3 * abs(sam[0])
