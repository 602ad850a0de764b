"""Tests for nodescope.optim.stacked (StackedOptimiser) and the lr schedule factor.

Every stacked update is compared against an optimiser run separately per member on a
clone of that member's slice: torch.optim.SGD / torch.optim.Adam for the plain
optimisers, and an independent per-member Layca reference written below from the
paper's description (Carbonnelle & De Vleeschouwer; authors' Keras layca_optimizers.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_specs import tiny_spec_dict
from torch import nn

from nodescope.optim.stacked import StackedOptimiser
from nodescope.runner.train import _lr_scale, train_group
from nodescope.spec import plan
from nodescope.spec.load import validate_dict

E = 3


pytestmark = pytest.mark.usefixtures("one_thread")


SHAPES = [((E, 6, 5), "weight"), ((E, 1, 5), "bias"), ((E, 5, 2), "weight"), ((E, 1, 2), "bias")]


def make_spec(**optimiser):
    return validate_dict(
        {
            "experiment": {"name": "optim-test"},
            "data": {
                "name": "synthetic_patterns",
                "n_dim": 8,
                "n_patterns": 2,
                "pattern_length": 2,
                "train_size": 10,
                "test_size": 10,
            },
            "optimiser": optimiser,
        },
        "test",
    )


def make_params(seed: int = 0, shapes=SHAPES) -> list[tuple[nn.Parameter, str]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (nn.Parameter(torch.randn(*shape, generator=g, dtype=torch.float64)), kind)
        for shape, kind in shapes
    ]


def random_grads(params, g: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(p.shape, generator=g, dtype=torch.float64) for p, _ in params]


def member_clones(params, e: int) -> list[nn.Parameter]:
    return [nn.Parameter(p.detach()[e].clone()) for p, _ in params]


ADAM_SETTINGS = [
    {"name": "adam", "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8},
    {"name": "adam", "lr": 3e-2, "betas": (0.8, 0.99), "eps": 1e-6},
    {"name": "adam", "lr": 0.1, "betas": (0.5, 0.9), "eps": 1e-3},
]
SGD_SETTINGS = [
    {"name": "sgd", "lr": 0.1, "momentum": 0.0},
    {"name": "sgd", "lr": 0.03, "momentum": 0.5},
    {"name": "sgd", "lr": 0.5, "momentum": 0.9},
]


def torch_reference(setting: dict, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if setting["name"] == "adam":
        return torch.optim.Adam(
            params, lr=setting["lr"], betas=setting["betas"], eps=setting["eps"]
        )
    return torch.optim.SGD(params, lr=setting["lr"], momentum=setting["momentum"])


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def assert_member_equal(params, e: int, ref: list[nn.Parameter]) -> None:
    for (p, _), r in zip(params, ref, strict=True):
        torch.testing.assert_close(p.detach()[e], r.detach(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- SGD and Adam


@pytest.mark.parametrize("settings", [ADAM_SETTINGS, SGD_SETTINGS], ids=["adam", "sgd"])
def test_stacked_matches_torch_per_member(settings):
    params = make_params()
    opt = StackedOptimiser(params, [make_spec(**s) for s in settings])
    refs = [member_clones(params, e) for e in range(E)]
    ref_opts = [torch_reference(s, r) for s, r in zip(settings, refs, strict=True)]
    start = [p.detach().clone() for p, _ in params]
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        grads = random_grads(params, g)
        opt.zero_grad()
        for (p, _), gr in zip(params, grads, strict=True):
            p.grad = gr.clone()
        opt.step()
        for e in range(E):
            ref_opts[e].zero_grad()
            for r, gr in zip(refs[e], grads, strict=True):
                r.grad = gr[e].clone()
            ref_opts[e].step()
    for e in range(E):
        assert_member_equal(params, e, refs[e])
    # The parameters did move (the comparison is not trivially between unchanged tensors).
    for (p, _), p0 in zip(params, start, strict=True):
        assert not torch.allclose(p.detach(), p0)


@pytest.mark.parametrize("settings", [ADAM_SETTINGS, SGD_SETTINGS], ids=["adam", "sgd"])
def test_lr_scale_matches_torch_with_scaled_lr(settings):
    params = make_params(seed=3)
    opt = StackedOptimiser(params, [make_spec(**s) for s in settings])
    refs = [member_clones(params, e) for e in range(E)]
    ref_opts = [torch_reference(s, r) for s, r in zip(settings, refs, strict=True)]
    g = torch.Generator().manual_seed(4)
    scales = [1.0, 1.0, 0.1, 0.1, 0.01, 0.5, 1.0, 0.1]
    for scale in scales:
        grads = random_grads(params, g)
        for (p, _), gr in zip(params, grads, strict=True):
            p.grad = gr.clone()
        opt.step(lr_scale=scale)
        for e in range(E):
            set_lr(ref_opts[e], settings[e]["lr"] * scale)
            for r, gr in zip(refs[e], grads, strict=True):
                r.grad = gr[e].clone()
            ref_opts[e].step()
    for e in range(E):
        assert_member_equal(params, e, refs[e])


def test_zero_grad_clears_and_missing_grad_is_skipped():
    params = make_params()
    opt = StackedOptimiser(params, [make_spec(**s) for s in SGD_SETTINGS])
    for p, _ in params:
        p.grad = torch.ones_like(p)
    opt.zero_grad()
    assert all(p.grad is None for p, _ in params)
    before = [p.detach().clone() for p, _ in params]
    params[0][0].grad = torch.ones_like(params[0][0])
    opt.step()
    assert not torch.equal(params[0][0].detach(), before[0])
    for (p, _), b in zip(params[1:], before[1:], strict=True):
        assert torch.equal(p.detach(), b)


# --------------------------------------------------------------------------- active mask


def _state_snapshot(opt: StackedOptimiser, e: int) -> list[dict[str, torch.Tensor]]:
    return [{k: v[e].clone() for k, v in st.items()} for st in opt.state]


@pytest.mark.parametrize("settings", [ADAM_SETTINGS, SGD_SETTINGS], ids=["adam", "sgd"])
def test_active_mask_freezes_member_and_state(settings):
    params = make_params(seed=5)
    opt = StackedOptimiser(params, [make_spec(**s) for s in settings])
    refs = [member_clones(params, e) for e in range(E)]
    ref_opts = [torch_reference(s, r) for s, r in zip(settings, refs, strict=True)]
    g = torch.Generator().manual_seed(6)
    frozen = 1
    # steps 0-3 all active, 4-7 member 1 inactive, 8-11 all active again
    schedule = [True] * 4 + [False] * 4 + [True] * 4
    for step, member_on in enumerate(schedule):
        active = torch.tensor([True, member_on, True])
        grads = random_grads(params, g)
        for (p, _), gr in zip(params, grads, strict=True):
            p.grad = gr.clone()
        p_before = [p.detach().clone() for p, _ in params]
        s_before = _state_snapshot(opt, frozen)
        t_before = opt.t.clone()
        opt.step(active=active)
        if not member_on:
            for (p, _), b in zip(params, p_before, strict=True):
                assert torch.equal(p.detach()[frozen], b[frozen]), step
                # the active members moved
                assert not torch.equal(p.detach()[0], b[0])
                assert not torch.equal(p.detach()[2], b[2])
            for st, sb in zip(opt.state, s_before, strict=True):
                for k in st:
                    assert torch.equal(st[k][frozen], sb[k]), (step, k)
            assert opt.t[frozen] == t_before[frozen]
            assert opt.t[0] == t_before[0] + 1
        for e in range(E):
            if e == frozen and not member_on:
                continue  # the reference skips this step
            ref_opts[e].zero_grad()
            for r, gr in zip(refs[e], grads, strict=True):
                r.grad = gr[e].clone()
            ref_opts[e].step()
    assert opt.t.tolist() == [12, 8, 12]
    for e in range(E):
        assert_member_equal(params, e, refs[e])


# --------------------------------------------------------------------------- Layca


class KerasLayca:
    """One member's Layca, ported line by line to numpy from the authors' Keras
    layca_optimizers.py (classes SGD and Adam with layca=True, function layca()), with
    Keras's K.epsilon() = 1e-7 as the zero-step threshold. Independent of nodescope's
    conventions: the SGD velocity holds the learning rate (v = mu m - lr g, step = v,
    layca(p, -step, lr)); Adam's step is lr_t m_t / (sqrt(v_t) + epsilon)."""

    def __init__(self, params, base, lr, momentum=0.0, betas=(0.9, 0.999), eps=1e-7):
        self.params = [(p.detach().double().numpy().copy(), kind) for p, kind in params]
        self.base, self.lr, self.momentum = base, lr, momentum
        self.beta_1, self.beta_2 = betas
        self.epsilon = eps
        self.iterations = 0
        self.moments = [np.zeros_like(p) for p, _ in self.params]
        self.ms = [np.zeros_like(p) for p, _ in self.params]
        self.vs = [np.zeros_like(p) for p, _ in self.params]

    @staticmethod
    def layca(p, step, lr):
        initial_norm = np.linalg.norm(p)
        step = step - np.sum(step * p) * p / initial_norm**2
        if np.linalg.norm(step) <= 1e-7:
            step = np.zeros_like(step)
        else:
            step = step / np.linalg.norm(step) * initial_norm
        new_p = p - lr * step
        return new_p / np.linalg.norm(new_p) * initial_norm

    def step(self, grads, lr_scale=1.0):
        lr = self.lr * lr_scale
        t = self.iterations + 1
        lr_t = lr * (np.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t))
        for i, ((p, kind), g) in enumerate(zip(self.params, grads, strict=True)):
            g = g.double().numpy()
            if self.base == "sgd":
                v = self.momentum * self.moments[i] - lr * g
                self.moments[i] = v
                new_p = self.layca(p, -v, lr)
            else:
                m_t = self.beta_1 * self.ms[i] + (1.0 - self.beta_1) * g
                v_t = self.beta_2 * self.vs[i] + (1.0 - self.beta_2) * np.square(g)
                step = lr_t * m_t / (np.sqrt(v_t) + self.epsilon)
                self.ms[i], self.vs[i] = m_t, v_t
                new_p = self.layca(p, step, lr)
            if kind == "weight":  # only kernels: biases and batch norm keep their values
                self.params[i] = (new_p, kind)
        self.iterations += 1

    def tensors(self):
        return [(torch.from_numpy(p), kind) for p, kind in self.params]


LAYCA_SETTINGS = {
    "sgd": [
        {"name": "layca", "layca_base": "sgd", "lr": 0.01, "momentum": 0.0},
        {"name": "layca", "layca_base": "sgd", "lr": 0.1, "momentum": 0.9},
        {"name": "layca", "layca_base": "sgd", "lr": 0.3, "momentum": 0.5},
    ],
    "adam": [
        {"name": "layca", "layca_base": "adam", "lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8},
        {"name": "layca", "layca_base": "adam", "lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6},
        {"name": "layca", "layca_base": "adam", "lr": 0.2, "betas": (0.5, 0.9), "eps": 1e-3},
    ],
}
LAYCA_SHAPES = [*SHAPES, ((E, 1, 5), "batch_norm")]


def _layca_reference(setting, params, e):
    member = [(p.detach()[e], kind) for p, kind in params]
    return KerasLayca(
        member,
        setting["layca_base"],
        setting["lr"],
        momentum=setting.get("momentum", 0.0),
        betas=setting.get("betas", (0.9, 0.999)),
        eps=setting.get("eps", 1e-7),
    )


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_layca_matches_reference(base):
    settings = LAYCA_SETTINGS[base]
    params = make_params(seed=7, shapes=LAYCA_SHAPES)
    start = [p.detach().clone() for p, _ in params]
    opt = StackedOptimiser(params, [make_spec(**s) for s in settings])
    refs = [_layca_reference(s, params, e) for e, s in enumerate(settings)]
    g = torch.Generator().manual_seed(8)
    for step in range(100):
        scale = 1.0 if step < 50 else 0.2  # a 5x step decay in the middle
        grads = random_grads(params, g)
        for (p, _), gr in zip(params, grads, strict=True):
            p.grad = gr.clone()
        opt.step(lr_scale=scale)
        for e in range(E):
            refs[e].step([gr[e] for gr in grads], lr_scale=scale)
    for e in range(E):
        for (p, kind), (r, rkind) in zip(params, refs[e].tensors(), strict=True):
            assert kind == rkind
            torch.testing.assert_close(p.detach()[e], r, rtol=1e-6, atol=1e-6)
    for (p, kind), p0 in zip(params, start, strict=True):
        if kind == "weight":
            assert not torch.allclose(p.detach(), p0)
        else:  # biases and batch-norm parameters untouched although they had gradients
            assert torch.equal(p.detach(), p0)


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_layca_keeps_layer_norms(base):
    params = make_params(seed=9, shapes=LAYCA_SHAPES)
    norms0 = [p.detach().flatten(1).norm(dim=1) for p, _ in params]
    opt = StackedOptimiser(params, [make_spec(**s) for s in LAYCA_SETTINGS[base]])
    g = torch.Generator().manual_seed(10)
    for _ in range(100):
        for (p, _), gr in zip(params, random_grads(params, g), strict=True):
            p.grad = gr * 10.0
        opt.step()
    for (p, _), n0 in zip(params, norms0, strict=True):
        torch.testing.assert_close(p.detach().flatten(1).norm(dim=1), n0, rtol=1e-12, atol=0)


def _angle_tan(w: torch.Tensor, w_new: torch.Tensor) -> float:
    """tan of the angle between two tensors: |orthogonal part| / parallel part."""
    w, w_new = w.flatten(), w_new.flatten()
    parallel = torch.dot(w_new, w) / w.norm()
    orthogonal = (w_new - torch.dot(w_new, w) / torch.dot(w, w) * w).norm()
    return float(orthogonal / parallel)


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_layca_rotates_by_atan_lr(base):
    lrs = [0.001, 0.1, 0.7]
    settings = [dict(s, lr=lr) for s, lr in zip(LAYCA_SETTINGS[base], lrs, strict=True)]
    params = make_params(seed=11, shapes=LAYCA_SHAPES)
    opt = StackedOptimiser(params, [make_spec(**s) for s in settings])
    g = torch.Generator().manual_seed(12)
    for step in range(3):
        before = [p.detach().clone() for p, _ in params]
        for (p, _), gr in zip(params, random_grads(params, g), strict=True):
            p.grad = gr
        scale = 1.0 if step < 2 else 0.5
        opt.step(lr_scale=scale)
        for (p, kind), b in zip(params, before, strict=True):
            if kind != "weight":
                continue
            for e, lr in enumerate(lrs):
                tan = _angle_tan(b[e], p.detach()[e])
                assert abs(tan - lr * scale) < 1e-6, (step, e, tan, lr * scale)


def test_layca_step_parallel_to_weight_is_dropped():
    """A gradient along w has no tangent component: the step is zero, w stays put."""
    settings = LAYCA_SETTINGS["sgd"]
    params = make_params(seed=13, shapes=LAYCA_SHAPES)
    before = [p.detach().clone() for p, _ in params]
    opt = StackedOptimiser(params, [make_spec(**s) for s in settings])
    for p, _ in params:
        p.grad = 3.0 * p.detach().clone()
    opt.step()
    for (p, _), b in zip(params, before, strict=True):
        torch.testing.assert_close(p.detach(), b, rtol=1e-14, atol=0)


def test_layca_active_mask():
    settings = LAYCA_SETTINGS["adam"]
    params = make_params(seed=14, shapes=LAYCA_SHAPES)
    opt = StackedOptimiser(params, [make_spec(**s) for s in settings])
    refs = [_layca_reference(s, params, e) for e, s in enumerate(settings)]
    g = torch.Generator().manual_seed(15)
    for step in range(8):
        on = step not in (2, 3, 4)
        grads = random_grads(params, g)
        for (p, _), gr in zip(params, grads, strict=True):
            p.grad = gr.clone()
        before = [p.detach()[2].clone() for p, _ in params]
        opt.step(active=torch.tensor([True, True, on]))
        if not on:
            for (p, _), b in zip(params, before, strict=True):
                assert torch.equal(p.detach()[2], b)
        for e in range(E):
            if e == 2 and not on:
                continue
            refs[e].step([gr[e] for gr in grads])
    for e in range(E):
        for (p, _), (r, _) in zip(params, refs[e].tensors(), strict=True):
            torch.testing.assert_close(p.detach()[e], r, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- lr schedule


@pytest.mark.parametrize(
    ("milestones", "factor", "epoch", "expected"),
    [
        ([], 0.1, 0.0, 1.0),
        ([], 0.1, 100.0, 1.0),
        ([2.0, 4.0], 0.1, 0.0, 1.0),
        ([2.0, 4.0], 0.1, 1.999, 1.0),
        ([2.0, 4.0], 0.1, 2.0, 0.1),
        ([2.0, 4.0], 0.1, 3.5, 0.1),
        ([2.0, 4.0], 0.1, 4.0, 0.1 * 0.1),
        ([2.0, 4.0], 0.1, 50.0, 0.1 * 0.1),
        ([4.0, 2.0], 0.5, 3.0, 0.5),  # order of milestones does not matter
        ([0.5, 0.5], 0.5, 0.5, 0.25),  # repeated milestones each count
        ([1.0, 2.0, 3.0], 2.0, 2.5, 4.0),
    ],
)
def test_lr_scale(milestones, factor, epoch, expected):
    assert _lr_scale(milestones, factor, epoch) == pytest.approx(expected, rel=1e-12)


def _schedule_spec(schedule):
    d = tiny_spec_dict(
        **{
            "data.val_size": 0,
            "optimiser": {"name": "sgd", "lr": 0.5, "schedule": schedule},
            "checkpoints": {"every": 1},
            "probes": {"curves": {}},
        }
    )
    return validate_dict(d, "test")


def test_schedule_applies_from_milestone_epoch_in_training():
    """With factor ~0 from epoch 1 on, training stops changing after the first epoch."""
    (group,) = plan(_schedule_spec({"milestones": [1.0], "factor": 1e-12}))
    loss = train_group(group, torch.device("cpu")).variables["loss"].sel(split="train").values[0]
    (free,) = plan(_schedule_spec({}))
    free_loss = train_group(free, torch.device("cpu")).variables["loss"]
    free_loss = free_loss.sel(split="train").values[0]
    assert loss.shape == (4,)  # epochs 0, 1, 2, 3
    # epoch 1 is trained with the full lr, exactly like the unscheduled run
    assert loss[1] == pytest.approx(free_loss[1], rel=1e-6)
    assert abs(loss[1] - loss[0]) > 1e-3
    # afterwards the updates are 1e-12 times smaller
    assert loss[2] == pytest.approx(loss[1], abs=1e-8)
    assert loss[3] == pytest.approx(loss[1], abs=1e-8)
    assert abs(free_loss[3] - free_loss[1]) > 1e-4


@pytest.mark.parametrize(
    "optimiser",
    [{"name": "adam"}, {"name": "sgd", "momentum": 0.9}, {"name": "sgd", "momentum": 0.0}],
)
def test_unmasked_steps_are_torchs_fused_optimiser_per_member(optimiser):
    """With every member active, Adam and SGD run torch's fused kernels: each member's
    parameters equal, bit for bit, those of its own `torch.optim` optimiser (fused=True)
    over steps and a learning-rate change, with three learning rates in one group; a step
    of the general per-member loop (any `active` mask) agrees to float rounding."""
    import copy

    from tiny_specs import tiny_spec_dict

    from nodescope.models.mlp import StackedMLP
    from nodescope.optim.stacked import StackedOptimiser
    from nodescope.spec import plan
    from nodescope.spec.load import validate_dict

    d = tiny_spec_dict(**{"model": {"depth": 2, "width": 8, "bias": "all"}})
    d["optimiser"].update(optimiser)
    d["sweep"] = {"seed": [0, 1], "optimiser.lr": [0.01, 0.001, 0.1]}
    specs = [m.spec for m in plan(validate_dict(d, "t"))[0].members]
    fast = StackedMLP(specs, 40, 2)
    general = copy.deepcopy(fast)
    # each member's own parameters, updated by its own torch optimiser from the same grads
    singles = [
        [p[e].detach().clone().requires_grad_() for p in fast.parameters()]
        for e in range(len(specs))
    ]
    opt_fast = StackedOptimiser(fast.parameter_kinds(), specs)
    opt_general = StackedOptimiser(general.parameter_kinds(), specs)
    torch_opts = []
    for params, spec in zip(singles, specs, strict=True):
        o = spec.optimiser
        if o.name == "adam":
            torch_opts.append(torch.optim.Adam(params, o.lr, o.betas, o.eps, fused=True))
        else:
            torch_opts.append(torch.optim.SGD(params, o.lr, o.momentum, fused=True))
    x = torch.randn(32, 40, generator=torch.Generator().manual_seed(0))
    everyone = torch.ones(len(specs), dtype=torch.bool)
    for step in range(50):
        scale = 0.2 if step >= 25 else 1.0
        for model, opt in ((fast, opt_fast), (general, opt_general)):
            opt.zero_grad()
            model(x).out.square().sum().backward()
        for e, (params, opt) in enumerate(zip(singles, torch_opts, strict=True)):
            for group, spec in zip(opt.param_groups, [specs[e]], strict=True):
                group["lr"] = spec.optimiser.lr * scale
            for p, stacked in zip(params, fast.parameters(), strict=True):
                p.grad = stacked.grad[e].clone()
            opt.step()
        opt_fast.step(scale, None)
        opt_general.step(scale, everyone)
        if step == 0:  # later, float rounding grows chaotically along the two trajectories
            for a, b in zip(fast.parameters(), general.parameters(), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for e, params in enumerate(singles):
        for a, b in zip(fast.parameters(), params, strict=True):
            assert torch.equal(a[e], b), e
    assert not torch.equal(fast.weights[0], StackedMLP(specs, 40, 2).weights[0])  # it trained
