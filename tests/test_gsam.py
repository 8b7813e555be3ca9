"""GSAM against a float64 reference written out below, plus its exact special cases.

The reference shares no code with `harness.optim`: per-parameter Python loops, gradients through
`torch.func.functional_call`, and hand-written AdamW / SGD-momentum updates.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from harness.optim.gsam import GSAM
from harness.optim.sam import SAM
from test_optim_reference import BASES  # float64 AdamW / SGD references, one copy

STEPS = 6
TOL = 1e-6


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 10)
        self.norm = nn.LayerNorm(10)
        self.fc2 = nn.Linear(10, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.norm(self.fc1(x))))


def make_model(seed: int = 0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return MLP().to(dtype)


def make_batches(seed: int = 0, n: int = STEPS, dtype=torch.float64):
    gen = torch.Generator().manual_seed(100 + seed)
    return [(torch.randn(8, 5, generator=gen).to(dtype), torch.randn(8, 3, generator=gen).to(dtype))
            for _ in range(n)]


def loss_of(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def sharpness_step(opt, net, batch, manual: bool) -> None:
    """One step through first_step/second_step (manual) or through step(closure)."""
    loss_of(net, batch).backward()
    if manual:
        opt.first_step(zero_grad=True)
        loss_of(net, batch).backward()
        opt.second_step(zero_grad=True)
    else:
        opt.step(lambda: loss_of(net, batch).backward())
        opt.zero_grad()


def groups_of(model, vector_group):
    """Matrices in one group, vectors (biases, LayerNorm gains) in another with overrides."""
    params = list(model.parameters())
    return [{"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], **vector_group}]


# -- the reference ---------------------------------------------------------------------------


def inner(xs, ys):
    return sum(float((x * y).sum()) for x, y in zip(xs, ys))


def reference_run(model, batches, base, *, rho, alpha, adaptive=False, eta=0.0, rho_min=None,
                  vector_group=None, lr_factors=None, max_grad_norm=None):
    """Return the weights after GSAM steps, computed naively in float64."""
    _, update, base_hp = BASES[base]
    names = [n for n, _ in model.named_parameters()]
    w = [p.detach().clone() for p in model.parameters()]
    hp = []
    for p in w:
        h = dict(base_hp, rho=rho, eta=eta, rho_min=rho_min)
        if p.ndim <= 1:
            h.update(vector_group or {})
        hp.append(dict(h, lr_max=h["lr"]))

    def grad(weights, batch):
        leaves = [x.clone().requires_grad_(True) for x in weights]
        loss = loss_of(lambda x: functional_call(model, dict(zip(names, leaves)), (x,)), batch)
        return list(torch.autograd.grad(loss, leaves))

    state = [{} for _ in w]
    for t, batch in enumerate(batches):
        for h in hp:
            h["lr"] = h["lr_max"] * (lr_factors[t] if lr_factors else 1.0)
        rhos = [h["rho"] if h["rho_min"] is None
                else h["rho_min"] + (h["rho"] - h["rho_min"]) * min(h["lr"] / h["lr_max"], 1.0)
                for h in hp]
        g = grad(w, batch)
        T = [wi.abs() + h["eta"] if adaptive else torch.ones_like(wi) for wi, h in zip(w, hp)]
        tg = [Ti * gi for Ti, gi in zip(T, g)]
        tg_norm = math.sqrt(inner(tg, tg))
        eps = [r * Ti * Ti * gi / (tg_norm + 1e-12) for r, Ti, gi in zip(rhos, T, g)]
        g_s = grad([wi + ei for wi, ei in zip(w, eps)], batch)
        c = inner(g, g_s) / inner(g_s, g_s)
        g_perp = [gi - c * si for gi, si in zip(g, g_s)]
        d = [si - alpha * pi for si, pi in zip(g_s, g_perp)]
        if max_grad_norm is not None:
            d_norm = math.sqrt(inner(d, d))
            d = [di * min(1.0, max_grad_norm / (d_norm + 1e-6)) for di in d]
        w = [update(wi, di, si, h) for wi, di, si, h in zip(w, d, state, hp)]
    return w


def gsam_run(model, batches, base, *, manual=False, vector_group=None, lr_factors=None, **kwargs):
    base_cls, _, base_hp = BASES[base]
    opt = GSAM(groups_of(model, vector_group or {}), base_cls, **kwargs, **base_hp)
    lr_max = [g["lr"] for g in opt.param_groups]
    for t, batch in enumerate(batches):
        for group, lr in zip(opt.param_groups, lr_max):
            group["lr"] = lr * (lr_factors[t] if lr_factors else 1.0)
        sharpness_step(opt, model, batch, manual)
    return [p.detach().clone() for p in model.parameters()]


VARIANTS = {
    "gsam": dict(rho=0.1, alpha=0.4),
    "gsam-manual": dict(rho=0.1, alpha=0.4, manual=True),
    "gsam-adaptive": dict(rho=0.5, alpha=0.4, adaptive=True, eta=0.01),
    "gsam-adaptive-groups": dict(rho=0.5, alpha=0.4, adaptive=True, eta=0.01,
                                 vector_group={"rho": 0.2, "eta": 0.1, "lr": 0.05}),
    "gsam-rho-schedule": dict(rho=0.2, alpha=0.4, rho_min=0.02,
                              lr_factors=[1.0, 0.8, 0.5, 0.3, 1.5, 0.0]),
    "gsam-clip": dict(rho=0.1, alpha=0.4, max_grad_norm=0.05),
}


@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_matches_float64_reference(variant, base):
    kwargs = dict(VARIANTS[variant])
    manual = kwargs.pop("manual", False)
    model, batches = make_model(), make_batches()
    start = [p.detach().clone() for p in model.parameters()]

    want = reference_run(model, batches, base, **kwargs)
    got = gsam_run(copy.deepcopy(model), batches, base, manual=manual, **kwargs)
    assert max(float((a - b).abs().max()) for a, b in zip(got, want)) <= TOL

    # Only meaningful if the gap term moved the weights visibly (α = 0 is SAM).
    sam = reference_run(model, batches, base, **dict(kwargs, alpha=0.0))
    moved = max(float((b - s).abs().max()) for b, s in zip(want, start))
    assert max(float((a - b).abs().max()) for a, b in zip(sam, want)) > 1e-3 * moved


# -- exact and structural properties ---------------------------------------------------------


@pytest.mark.parametrize("manual", [False, True], ids=["closure", "manual"])
@pytest.mark.parametrize(
    "kwargs", [dict(), dict(adaptive=True, eta=0.01, rho=0.5), dict(max_grad_norm=0.1)],
    ids=["sam", "asam", "clip"],
)
def test_alpha_zero_is_sam_bit_exactly(kwargs, manual):
    model = make_model(dtype=torch.float32)  # exactness must not rely on float64 headroom
    twin = copy.deepcopy(model)
    base_cls, _, base_hp = BASES["adamw"]
    gsam = GSAM(groups_of(model, {"lr": 0.05}), base_cls, alpha=0.0, **kwargs, **base_hp)
    sam = SAM(groups_of(twin, {"lr": 0.05}), base_cls, **kwargs, **base_hp)
    for batch in make_batches(dtype=torch.float32):
        for net, opt in ((model, gsam), (twin, sam)):
            sharpness_step(opt, net, batch, manual)
    start = make_model(dtype=torch.float32).parameters()
    for a, b, s in zip(model.parameters(), twin.parameters(), start):
        assert torch.equal(a, b)
        assert not torch.equal(a, s)


@pytest.mark.parametrize("adaptive", [False, True])
def test_direction_keeps_sam_component_and_adds_orthogonal_part(adaptive):
    """With plain SGD (lr 1) the weights move by exactly −d: check d against g and g_s."""
    model, batch = make_model(1), make_batches(1, 1)[0]
    alpha = 0.7
    opt = GSAM(model.parameters(), torch.optim.SGD, rho=0.3, alpha=alpha, adaptive=adaptive,
               eta=0.01, lr=1.0)
    w = [p.detach().clone() for p in model.parameters()]
    loss_of(model, batch).backward()
    g = [p.grad.clone() for p in model.parameters()]
    opt.first_step(zero_grad=True)
    loss_of(model, batch).backward()
    g_s = [p.grad.clone() for p in model.parameters()]
    opt.second_step(zero_grad=True)
    d = [a - b.detach() for a, b in zip(w, model.parameters())]

    g_perp = [(si - di) / alpha for si, di in zip(g_s, d)]
    gs_sq = inner(g_s, g_s)
    assert abs(inner(g_perp, g_s)) <= 1e-10 * gs_sq  # g_⊥ ⟂ g_s
    assert inner(d, g_s) / math.sqrt(gs_sq) == pytest.approx(math.sqrt(gs_sq), rel=1e-10)
    # and g_⊥ is exactly what is left of g: g − g_⊥ is parallel to g_s
    parallel = [gi - pi for gi, pi in zip(g, g_perp)]
    cos = inner(parallel, g_s) / math.sqrt(inner(parallel, parallel) * gs_sq)
    assert cos == pytest.approx(1.0, abs=1e-10)
    assert inner(g_perp, g_perp) > 1e-6 * inner(g, g)  # a non-trivial g_⊥


def epsilon_norm(model, opt, batch):
    """‖ε‖ of one first_step (plain SAM ascent: ‖ε‖ = ρ), leaving the optimizer clean."""
    w = [p.detach().clone() for p in model.parameters()]
    loss_of(model, batch).backward()
    opt.first_step(zero_grad=True)
    eps = [p.detach() - wi for p, wi in zip(model.parameters(), w)]
    loss_of(model, batch).backward()
    opt.second_step(zero_grad=True)
    return math.sqrt(inner(eps, eps))


def test_rho_follows_learning_rate_when_rho_min_is_set():
    model, batch = make_model(), make_batches(n=1)[0]
    opt = GSAM(model.parameters(), torch.optim.SGD, rho=0.2, alpha=0.1, rho_min=0.04, lr=0.1)
    group = opt.param_groups[0]
    assert group["lr_max"] == 0.1 and group["rho"] == 0.2
    for lr, rho_t in [(0.1, 0.2), (0.05, 0.12), (0.025, 0.08), (0.0, 0.04), (0.3, 0.2)]:
        group["lr"] = lr
        assert opt.current_rho(group) == pytest.approx(rho_t, rel=1e-12)
        assert epsilon_norm(model, opt, batch) == pytest.approx(rho_t, rel=1e-9)
    assert group["rho"] == 0.2  # the group keeps ρ_max; ρ_t is never written back

    # An LR scheduler drives it the same way (ρ_t follows lr, here through cosine decay); it
    # wraps base_optimizer, whose step second_step calls, and which shares the param groups.
    opt = GSAM(model.parameters(), torch.optim.SGD, rho=0.2, alpha=0.1, rho_min=0.0, lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt.base_optimizer, T_max=4)
    for _ in range(4):
        lr = opt.param_groups[0]["lr"]
        assert epsilon_norm(model, opt, batch) == pytest.approx(0.2 * lr / 0.1, rel=1e-9, abs=1e-12)
        scheduler.step()


def test_rho_constant_by_default_and_per_group_schedules():
    model, batch = make_model(), make_batches(n=1)[0]
    opt = GSAM(model.parameters(), torch.optim.SGD, rho=0.2, lr=0.1)
    opt.param_groups[0]["lr"] = 0.01
    assert opt.current_rho(opt.param_groups[0]) == 0.2
    assert epsilon_norm(model, opt, batch) == pytest.approx(0.2, rel=1e-9)

    groups = groups_of(model, {"lr": 0.4, "rho": 0.1, "rho_min": None})
    opt = GSAM(groups, torch.optim.SGD, rho=0.2, rho_min=0.0, lr=0.1)
    matrices, vectors = opt.param_groups
    matrices["lr"], vectors["lr"] = 0.05, 0.1
    assert opt.current_rho(matrices) == pytest.approx(0.1)
    assert opt.current_rho(vectors) == 0.1 and "lr_max" not in vectors
    extra = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt.add_param_group({"params": [extra], "lr": 0.2})
    assert opt.param_groups[-1]["lr_max"] == 0.2 and opt.param_groups[-1]["rho_min"] == 0.0


def test_checkpoint_keeps_lr_max_and_resumes_bit_exactly():
    batches = make_batches()

    def build(model, lr=0.02):
        opt = GSAM(model.parameters(), torch.optim.AdamW, rho=0.2, alpha=0.3, rho_min=0.02, lr=lr)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.6)

    def train(model, opt, scheduler, batches):
        for batch in batches:
            loss_of(model, batch).backward()
            opt.step(lambda: loss_of(model, batch).backward())
            opt.zero_grad()
            scheduler.step()

    model = make_model()
    opt, scheduler = build(model)
    train(model, opt, scheduler, batches[:3])
    saved = copy.deepcopy((model.state_dict(), opt.state_dict(), scheduler.state_dict()))
    train(model, opt, scheduler, batches[3:])

    resumed = make_model(seed=5)
    resumed.load_state_dict(saved[0])
    opt2, scheduler2 = build(resumed, lr=0.5)  # lr_max must come from the checkpoint
    opt2.load_state_dict(saved[1])
    scheduler2.load_state_dict(saved[2])
    assert opt2.param_groups[0]["lr_max"] == 0.02
    train(resumed, opt2, scheduler2, batches[3:])
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_parameter_with_gradient_in_one_pass_only():
    """Only in the second pass: g = 0 there. Only in the first: an error, with w restored."""
    model, batch = make_model(), make_batches(n=1)[0]
    extra = nn.Parameter(torch.tensor([0.3, -1.2], dtype=torch.float64))
    alpha = 0.7
    opt = GSAM([*model.parameters(), extra], torch.optim.SGD, rho=0.3, alpha=alpha, lr=1.0)
    w = [p.detach().clone() for p in opt.param_groups[0]["params"]]
    loss_of(model, batch).backward()
    g = [p.grad.clone() for p in model.parameters()] + [torch.zeros(2, dtype=torch.float64)]
    opt.first_step(zero_grad=True)
    (loss_of(model, batch) + (extra**3).sum()).backward()
    g_s = [p.grad.clone() for p in opt.param_groups[0]["params"]]
    opt.second_step(zero_grad=True)
    c = inner(g, g_s) / inner(g_s, g_s)
    for wi, p, gi, si in zip(w, opt.param_groups[0]["params"], g, g_s):
        torch.testing.assert_close(wi - p.detach(), si - alpha * (gi - c * si), rtol=1e-12,
                                   atol=1e-15)

    w = [p.detach().clone() for p in opt.param_groups[0]["params"]]
    (loss_of(model, batch) + (extra**3).sum()).backward()
    opt.first_step(zero_grad=True)
    loss_of(model, batch).backward()
    with pytest.raises(RuntimeError, match="first pass but not the second"):
        opt.second_step(zero_grad=True)
    for wi, p in zip(w, opt.param_groups[0]["params"]):
        assert torch.equal(wi, p)


def test_grad_scaler_matches_unscaled_and_skips_overflows():
    def run(batches, scaler=None, poison=None):
        model = make_model()
        opt = GSAM(model.parameters(), torch.optim.AdamW, rho=0.1, alpha=0.5, lr=0.02)
        scale = scaler.scale if scaler else (lambda loss: loss)
        for t, batch in enumerate(batches):
            scale(loss_of(model, batch)).backward()
            if poison == (t, 1):
                model.fc1.weight.grad[0, 0] = math.inf

            def closure():
                scale(loss_of(model, batch)).backward()
                if poison == (t, 2):
                    model.fc2.bias.grad[0] = math.nan

            opt.step(closure, grad_scaler=scaler)
            opt.zero_grad()
            if scaler:
                scaler.update()
        return [p.detach().clone() for p in model.parameters()]

    def scaler():
        return torch.amp.GradScaler("cpu", init_scale=2.0**12)

    batches = make_batches(n=3)
    # Powers of two scale exactly, so the scaled run differs only through TINY in g·g_s/‖g_s‖².
    for a, b in zip(run(batches, scaler()), run(batches)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    # An overflow in either pass of the last step skips that step (and w is restored).
    want = run(batches[:2])
    for pass_ in (1, 2):
        for a, b in zip(run(batches, scaler(), poison=(2, pass_)), want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "kwargs",
    [dict(alpha=-0.1), dict(alpha=math.nan), dict(alpha=math.inf), dict(rho=-0.1),
     dict(eta=-1.0), dict(every_k=2), dict(off_step="looksam"), dict(rho_min=-0.01),
     dict(rho=0.05, rho_min=0.1), dict(rho_min=0.01, lr=0.0)],
    ids=["alpha<0", "alpha-nan", "alpha-inf", "rho<0", "eta<0", "every_k", "looksam",
         "rho_min<0", "rho_min>rho", "rho_min-lr0"],
)
def test_bad_arguments_raise(kwargs):
    kwargs = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError):
        GSAM(make_model().parameters(), torch.optim.SGD, **kwargs)


def test_bad_group_arguments_raise():
    model = make_model()
    with pytest.raises(ValueError):
        GSAM(groups_of(model, {"rho": 0.01}), torch.optim.SGD, rho=0.1, rho_min=0.05, lr=0.1)
    opt = GSAM(model.fc1.parameters(), torch.optim.SGD, rho=0.1, rho_min=0.05, lr=0.1)
    with pytest.raises(ValueError):
        opt.add_param_group({"params": list(model.fc2.parameters()), "lr": 0.0})


# -- as a study method ---------------------------------------------------------------------------


def test_gsam_is_a_study_method_end_to_end(home, tiny_study_dict):
    """Registered in the method table only, GSAM tunes, trains its finals and is recorded."""
    import optuna
    from mlflow.tracking import MlflowClient

    from harness.config import study_from_dict
    from harness.experiment.study import optuna_name, run_study
    from harness.tracking.store import default_storage_url, default_tracking_uri

    tiny_study_dict["methods"] = {"gsam": {"lr": 1e-3, "alpha": 0.2, "search": {
        "alpha": {"low": 0.05, "high": 0.5}}}}
    tiny_study_dict["tuning"]["trials_per_method"] = 1
    tiny_study_dict["final_seeds"] = [1]
    cfg = study_from_dict(tiny_study_dict)
    summary = run_study(cfg, progress=False)
    assert summary["gsam"] == {"tune": {"COMPLETE": 1}, "final": {"COMPLETE": 1}}
    final = optuna.load_study(study_name=optuna_name(cfg, "final", "gsam"),
                              storage=default_storage_url()).trials[0]
    run = MlflowClient(default_tracking_uri()).get_run(final.user_attrs["mlflow_run_id"])
    assert run.data.params["method"] == "gsam" and 0.05 <= float(run.data.params["alpha"]) <= 0.5
    assert 0 <= run.data.metrics["test/miou"] <= 1


def test_gsam_settings_are_checked_at_load(tiny_study_dict):
    from harness.config import study_from_dict
    from harness.errors import HarnessError

    tiny_study_dict["methods"] = {"gsam": {"rho": 0.05, "rho_min": 0.1}}
    with pytest.raises(HarnessError, match=r"'methods\.gsam\.rho_min' must be ≤ rho"):
        study_from_dict(tiny_study_dict)
    tiny_study_dict["methods"] = {"gsam": {"eta": 0.01}}  # an ASAM setting
    with pytest.raises(HarnessError, match=r"'methods\.gsam' has eta"):
        study_from_dict(tiny_study_dict)
