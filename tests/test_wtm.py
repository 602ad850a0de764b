"""Winner-take-most measurements against hand-built examples and autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr

import nodescope  # noqa: F401  registers ds.ns
from nodescope.data.prepare import build_group_data, synthetic_masks
from nodescope.metrics import winner_take_most as wtm
from nodescope.metrics.wtm_probes import NoiseRobustnessProbe
from nodescope.runner.train import train_group
from nodescope.spec import plan
from nodescope.spec.load import validate_dict


def bce_by_definition(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """-t log s(y) - (1-t) log(1 - s(y)) with log-sigmoids; its autograd gradient keeps
    its sign for saturated outputs, where the paper's dL/da is never 0."""
    return -(t * F.logsigmoid(y) + (1 - t) * F.logsigmoid(-y)).mean()


def test_difficulty_on_hand_built_centroids():
    # 4 patterns in 4 dims, c_k = 2 e_k; patterns 0, 1 are class 0 and 2, 3 class 1
    cents = 2.0 * torch.eye(4)
    classes = torch.tensor([0, 0, 1, 1])
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.9, 0.0], [0.0, 0.0, 0.3, 0.5]])
    labels = torch.tensor([0, 0, 1])
    d = wtm.difficulty(x, labels, cents, classes)
    # sample 0: other class (2+... ) <x, 2e2 + 2e3> = 0, own <x, 2e0 + 2e1> = 2 -> -2
    # sample 1: <x, 2e2 + 2e3> = 1.8, own 2*(0.1 + 0.2) = 0.6 -> 1.2 (difficult)
    # sample 2: other 0, own 2*(0.3 + 0.5) = 1.6 -> -1.6
    np.testing.assert_allclose(d.numpy(), [-2.0, 1.2, -1.6], rtol=1e-6)


@pytest.mark.parametrize("data_name", ["synthetic_patterns", "mnist"])
def test_pattern_probes_know_every_pattern_of_the_spec_with_a_small_training_split(tiny, data_name):
    """A training split that draws only some patterns (here one sample) still has the
    spec's patterns and their classes; the difficulty sums every other pattern's
    centroid, written here as an explicit loop."""
    if data_name == "mnist":
        from nodescope.data import fetch

        if not (fetch.data_dir() / "mnist").exists():
            pytest.skip("needs MNIST (nodescope fetch mnist)")
        tiny["data"] = {"name": "mnist", "train_size": 3, "val_size": 0, "test_size": 20}
    else:
        tiny["data"].update(n_patterns=4, n_classes=2, train_size=1)
    tiny["probes"] = {"pattern_preactivation": {}, "difficulty": {}}
    group = plan(validate_dict(tiny, "test"))[0]
    result = train_group(group, torch.device("cpu"))
    v = result.variables
    expected = [0, 0, 1, 1] if data_name != "mnist" else list(range(10))
    assert v["pattern_preactivation"].sizes["pattern"] == len(expected)
    assert v["pattern_preactivation"].pattern_class.values.tolist() == expected
    data = build_group_data([m.spec for m in group.members], torch.device("cpu"))
    train = data.splits["train"]
    x, labels, patterns = train.x[0].double(), train.labels, train.patterns
    if data.centroids is not None:
        cents = torch.from_numpy(data.centroids).double()
    else:  # digits absent from the 3 training images add nothing
        cents = torch.zeros(10, x.shape[1], dtype=torch.float64)
        for k in range(10):
            if (patterns == k).any():
                cents[k] = x[patterns == k].mean(0)
    for i in range(train.size):
        own = sum(cents[k] for k in range(len(expected)) if expected[k] == labels[i])
        other = sum(cents[k] for k in range(len(expected)) if expected[k] != labels[i])
        want = float(x[i] @ other - x[i] @ own)
        np.testing.assert_allclose(v["difficulty"].values[0, i], want, rtol=1e-5, atol=1e-5)


def test_loss_shares_by_hand():
    losses = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    difficult = torch.tensor([[True, False, False, True]])
    np.testing.assert_allclose(wtm.loss_shares(losses, difficult).numpy(), [[0.5, 0.5]])


def test_pattern_sums_by_hand():
    z = torch.tensor([[[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]]])  # (E=1, B=3, H=2)
    sums = wtm.pattern_sums(z, torch.tensor([1, 0, 1]), 3)
    assert sums.tolist() == [[[2.0, 5.0, 0.0], [20.0, 50.0, 0.0]]]


def test_wtm_index_by_hand():
    classes = torch.tensor([0, 0, 0, 1, 1])  # patterns 0-2 class 0, 3-4 class 1
    means = torch.tensor(
        [
            [3.0, -1.0, 0.0, 0.5, 1.0],  # class 0 overhangs: 2 above, 1.5 below -> 2*1.5/4
            [3.0, 1.0, 2.0, 0.5, 0.0],  # class 0 above class 1 only: a class detector
            [2.0, -2.0, 0.0, 0.0, 0.0],  # class 1 at one point in the middle of class 0
        ]
    )
    index = wtm.wtm_index(means, classes, 2)
    # a class whose patterns share one value has no spread: W = 0, not 0/0
    np.testing.assert_allclose(index.numpy(), [[0.75, 0.0], [0.0, 0.0], [1.0, 0.0]])


def test_accessor_index_equals_the_tensor_function():
    rng = np.random.default_rng(3)
    mu = rng.normal(size=(2, 5, 1, 7, 6))  # seed, epoch, layer, node, pattern
    classes = np.array([0, 0, 0, 1, 1, 1])
    ds = xr.Dataset(
        {"pattern_preactivation": (("seed", "epoch", "layer", "node", "pattern"), mu)},
        coords={"pattern_class": ("pattern", classes)},
    )
    expected = wtm.wtm_index(torch.from_numpy(mu), torch.from_numpy(classes), 2)
    np.testing.assert_allclose(ds.ns.wtm_index().values, expected.numpy())
    assert (expected > 0).any() and (expected == 0).any()


def accumulate_stacked_signs(sums, counts, index, grad, active=None, in_order=False):
    """wtm.accumulate_signs for every member of (E, ...) stacks."""
    for e in range(sums.shape[0]):
        member_active = None if active is None else active[e]
        wtm.accumulate_signs(sums[e], counts[e], index[e], grad[e], member_active, in_order)


def test_accumulate_signs_counts_each_member_and_skips_inactive():
    sums, counts = torch.zeros(2, 4, 1), torch.zeros(2, 4)
    index = torch.tensor([[0, 2], [1, 2]])
    grad = torch.tensor([[[0.5], [-3.0]], [[-1.0], [0.0]]])
    accumulate_stacked_signs(sums, counts, index, grad)
    accumulate_stacked_signs(sums, counts, index, grad, active=torch.tensor([True, False]))
    assert sums[..., 0].tolist() == [[2.0, 0.0, -2.0, 0.0], [0.0, -1.0, 0.0, 0.0]]
    assert counts.tolist() == [[2.0, 0.0, 2.0, 0.0], [0.0, 1.0, 1.0, 0.0]]


def test_accumulate_signs_of_a_full_batch_in_order_equal_the_indexed_sums():
    g = torch.Generator().manual_seed(3)
    E, N, H = 3, 7, 2
    grad = torch.randn(E, N, H, generator=g)
    grad[0, 1, 0] = 0.0
    index = torch.arange(N).expand(E, N)
    active = torch.tensor([True, False, True])
    results = []
    for in_order in (False, True):
        sums, counts = torch.zeros(E, N, H), torch.zeros(E, N)
        accumulate_stacked_signs(sums, counts, index, grad, in_order=in_order)
        accumulate_stacked_signs(sums, counts, index, -grad, active, in_order=in_order)
        accumulate_stacked_signs(sums, counts, index, grad, active, in_order=in_order)
        results.append((sums, counts))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert results[1][1][:, 0].tolist() == [3.0, 1.0, 3.0]
    assert results[1][0][1].tolist() == torch.sign(grad[1]).tolist()
    assert results[1][0][0, 1, 0] == 0.0
    sums, counts = torch.zeros(E, N, H), torch.zeros(E, N)  # float64 gradients (a float64 run)
    accumulate_stacked_signs(sums, counts, index, grad.double(), active, in_order=True)
    assert torch.equal(sums, torch.sign(grad) * active.view(-1, 1, 1))


def wtm_spec(tiny, **training):
    tiny["data"].update(n_patterns=4, train_size=96, val_size=0, test_size=40)
    tiny["model"] = {"depth": 1, "width": 5, "bias": "none"}
    tiny["optimiser"] = {"name": "sgd", "lr": 0.5}
    tiny["training"] = {"loss": "bce", "batch_size": 32, "epochs": 3, **training}
    tiny["probes"] = {"grad_sign": {"top_k": 5}}
    return validate_dict(tiny, "t")


def test_full_batch_fold_of_the_output_layer_changes_no_stored_value(tiny, monkeypatch):
    """A full batch trains one hidden ReLU layer and the single output through one
    per-member Function (models/member_matmul.py: MemberReLUOutput) that hands grad_sign
    each member's dL/da inside the backward pass; every variable equals that of the two
    layers with a hook on the activations."""
    from nodescope.models.mlp import StackedMLP

    tiny["sweep"] = {"seed": [0, 1, 2]}
    wtm_spec(tiny, batch_size=96, epochs=4)  # fills `tiny`: 96 training samples
    tiny["probes"]["pattern_preactivation"] = {}
    spec = validate_dict(tiny, "t")
    folds = []
    real = StackedMLP.forward

    def watched(self, *args, **kwargs):
        fwd = real(self, *args, **kwargs)
        folds.append(type(fwd.out.grad_fn).__name__ == "MemberReLUOutputBackward")
        return fwd

    with monkeypatch.context() as m:
        m.setattr(StackedMLP, "forward", watched)
        folded = train_group(plan(spec)[0], torch.device("cpu")).variables
    assert sum(folds) == 4  # every training step, and no eval pass
    with monkeypatch.context() as m:
        m.setattr(StackedMLP, "_thin_output", lambda self: False)
        m.setattr(StackedMLP, "forward", watched)
        folds.clear()
        apart = train_group(plan(spec)[0], torch.device("cpu")).variables
    assert not any(folds)
    assert set(folded) == set(apart) and "grad_sign_mean" in folded
    for name in folded:
        if name != "wall_time":
            xr.testing.assert_identical(folded[name], apart[name])
    assert np.isfinite(folded["grad_sign_mean"].values).all()
    assert {-1.0, 1.0} <= set(np.unique(folded["grad_sign_mean"].values))


def test_grad_sign_mean_matches_autograd_replay(tiny):
    """Replay the same SGD steps by hand, with one backward per sample, and compare."""
    spec = wtm_spec(tiny)
    group = plan(spec)[0]
    v = train_group(group, torch.device("cpu")).variables
    data = build_group_data([spec], torch.device("cpu")).splits["train"]
    from nodescope.data.seeds import stream_seed
    from nodescope.models.mlp import StackedMLP

    model = StackedMLP([spec], 40, 1)
    order = torch.Generator().manual_seed(stream_seed(0, "order"))
    sums, counts = np.zeros((96, 5)), np.zeros(96)
    for _ in range(3):
        perm = torch.randperm(96, generator=order)
        for start in range(0, 96, 32):
            index = perm[start : start + 32]
            for s in index.tolist():  # each sample's own dL_s/da, before the update
                fwd = model(data.x[0, s : s + 1], keep=True, grad_acts=True)
                loss = bce_by_definition(fwd.out[0, :, 0], data.targets[0, s : s + 1].float())
                (g,) = torch.autograd.grad(loss, fwd.acts[0])
                sums[s] += torch.sign(g[0, 0]).numpy()
                counts[s] += 1
            out = model(data.x[0, index]).out
            loss = bce_by_definition(out[0, :, 0], data.targets[0, index].float())
            model.zero_grad()
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.5 * p.grad
    top = v["top_node"].values[0]
    expected = (sums / counts[:, None])[:, top].T
    np.testing.assert_array_equal(v["grad_sign_mean"].values[0], expected)
    assert set(np.unique(counts)) == {3}  # every sample was in one batch per epoch
    w_out = model.weights[-1].detach().abs().sum(-1)[0]
    assert top.tolist() == torch.argsort(w_out, descending=True, stable=True).tolist()
    with torch.no_grad():
        z = model(data.x[0], keep=True).preacts[0][0][:, top].T
    np.testing.assert_allclose(v["preactivation_final"].values[0], z.numpy(), rtol=1e-5, atol=1e-7)


def test_noise_robustness_redraws_noise_but_keeps_masks(tiny):
    tiny["probes"] = {"noise_robustness": {"sigma_test": [0.0, 0.5], "n_samples": 50}}
    spec = validate_dict(tiny, "t")
    data = build_group_data([spec], torch.device("cpu"))
    from nodescope.metrics.base import ProbeContext

    ctx = ProbeContext(1, 1, [16], 2, "relu", "ce", data, [spec])
    probe = NoiseRobustnessProbe(spec.probes.noise_robustness, ctx)
    clean, noisy = probe.test_set(0, 0.0), probe.test_set(1, 0.5)
    masks = synthetic_masks(spec.data)
    # sigma 0: each sample is its pattern's normalised centroid exactly
    support = [set(np.flatnonzero(row)) for row in clean.x]
    assert support == [set(masks[p]) for p in clean.patterns]
    np.testing.assert_allclose(clean.x.max(1), 1 / math.sqrt(3), rtol=1e-6)
    # sigma 0.5: new noise everywhere, the pattern's entries still stand out
    assert (noisy.x != 0).all()
    top = np.argsort(-noisy.x, axis=1)[:, :3]
    hits = np.mean(
        [len(set(t) & set(masks[p])) / 3 for t, p in zip(top, noisy.patterns, strict=True)]
    )
    assert hits > 0.4  # chance: 3 of 40 entries, 0.075
    # neither is the stored test split
    assert not np.allclose(noisy.x[:40], data.splits["test"].x[0, :40].numpy())


def test_noise_robustness_accuracy_is_a_fraction_of_the_fresh_set(tiny):
    tiny["probes"] = {"noise_robustness": {"sigma_test": [0.2], "n_samples": 60}}
    spec = validate_dict(tiny, "t")
    v = train_group(plan(spec)[0], torch.device("cpu")).variables
    acc = float(v["accuracy_noise"].values[0, 0])
    assert 0.5 < acc <= 1.0
    assert acc * 60 == pytest.approx(round(acc * 60))


def test_bce_gradient_of_saturated_outputs_keeps_its_sign():
    """dL/dy = sigmoid(y) - t against float64; torch's own form is exactly 0 for y = 30,
    t = 1 in float32, so the dL/da sign of that sample would read 0 (paper 4, Fig. 3)."""
    from nodescope.models.loss import per_sample_loss

    logits = [30.0, -30.0, 2.0, -1.0, 17.5, -40.0]
    labels = [1, 0, 0, 1, 1, 1]
    y = torch.tensor(logits).view(1, -1, 1).requires_grad_(True)
    loss = per_sample_loss(y, torch.tensor([labels]), "bce")
    loss.sum().backward()
    # sigmoid(y) - 1 = -sigmoid(-y): float64 without the cancellation
    expected = [
        -1 / (1 + math.exp(v)) if t else 1 / (1 + math.exp(-v))
        for v, t in zip(logits, labels, strict=True)
    ]
    np.testing.assert_allclose(y.grad.flatten().numpy(), expected, rtol=1e-6)
    assert (torch.sign(y.grad.flatten()) == torch.tensor([-1.0, 1, 1, -1, -1, -1])).all()
    value = [
        math.log1p(math.exp(-v)) if t else math.log1p(math.exp(v))
        for v, t in zip(logits, labels, strict=True)
    ]
    np.testing.assert_allclose(loss.detach().flatten().numpy(), value, rtol=1e-6, atol=1e-7)
