"""The sample_sets probe inside the runner: chunked accumulation, churn, node cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import nodescope  # noqa: F401  registers ds.ns
from nodescope.data.prepare import build_group_data
from nodescope.metrics import PROBES, ProbeContext, sample_sets
from nodescope.models.loss import per_sample_loss
from nodescope.models.mlp import StackedMLP
from nodescope.runner.train import record_checkpoint, train_group
from nodescope.spec import plan
from nodescope.spec.load import validate_dict


def setup(tiny, **model):
    tiny["model"] = {"depth": 2, "width": [6, 4], **model}
    tiny["probes"] = {"sample_sets": {"split": "val"}}
    tiny["sweep"] = {"seed": [0, 1]}
    group = plan(validate_dict(tiny, "test"))[0]
    specs = [m.spec for m in group.members]
    data = build_group_data(specs, torch.device("cpu"))
    model = StackedMLP(specs, group.spec.data.num_features, data.n_classes).double()
    data.splits["val"].x = data.splits["val"].x.double()
    ctx = ProbeContext(
        2,
        2,
        model.widths,
        data.n_classes,
        group.spec.model.activation,
        group.spec.training.loss,
        data,
    )
    probe = PROBES["sample_sets"](group.spec.probes.sample_sets, ctx)
    return model, data, probe


def test_chunked_probe_matches_direct_computation_and_autograd(tiny):
    model, data, probe = setup(tiny)
    val = data.splits["val"]
    record_checkpoint(model, data, [probe], 0, "ce", chunk=7)  # 60 samples in 9 chunks
    with torch.no_grad():
        fwd = model(val.x[0], keep=True)
    for layer, z in enumerate(fwd.preacts):
        on = z > 0
        counts = sample_sets.class_on_counts(on, val.labels, 2)
        cc = sample_sets.class_counts(val.labels, 2)
        h = z.shape[-1]
        np.testing.assert_array_equal(
            probe.predictability[:, 0, layer, :h], sample_sets.predictability(counts, cc)
        )
        np.testing.assert_array_equal(
            probe.fraction[:, 0, layer, :h], sample_sets.activation_fraction(counts, cc)
        )
    # node cost: dL_s/da from one sample at a time, no batching, no shared graph
    E, n = 2, val.size
    expected = [np.zeros((E, h, 2)) for h in model.widths]
    counts = [np.zeros((E, h, 2)) for h in model.widths]
    for s in range(n):
        fwd = model(val.x[0, s : s + 1], keep=True, grad_acts=True)
        for e in range(E):
            loss = per_sample_loss(fwd.out, val.targets[:, s : s + 1], "ce")[e, 0]
            grads = torch.autograd.grad(loss, fwd.acts, retain_graph=True)
            for layer, (g, z) in enumerate(zip(grads, fwd.preacts, strict=True)):
                on = (z[e, 0] > 0).numpy()
                c = int(val.labels[s])
                expected[layer][e, on, c] += g[e, 0].numpy()[on]
                counts[layer][e, on, c] += 1
    for layer, h in enumerate(model.widths):
        with np.errstate(invalid="ignore"):
            mean = expected[layer] / counts[layer]
        np.testing.assert_allclose(probe.node_cost[:, 0, layer, :h], mean, rtol=1e-10)
    assert np.isnan(probe.node_cost[:, 0, 1, 4:]).all()  # padding beyond layer 2's width


def test_churn_balances_the_change_of_sample_set_sizes(tiny):
    tiny["training"]["epochs"] = 4
    tiny["probes"] = {"sample_sets": {}}
    tiny["checkpoints"] = {"every": 0.5}
    tiny["sweep"] = {"seed": [0, 1]}
    v = train_group(plan(validate_dict(tiny, "t"))[0], torch.device("cpu")).variables
    ds = xr.Dataset(v)
    labels = build_group_data([validate_dict(tiny, "t")], torch.device("cpu")).splits["val"]
    class_sizes = np.bincount(labels.labels.numpy(), minlength=2)
    size = (ds.activation_fraction * xr.DataArray(class_sizes, dims="label")).sum("label")
    change = size.diff("epoch")
    net = (ds.entered - ds.left).isel(epoch=slice(1, None))
    np.testing.assert_allclose(change.values, net.values, atol=1e-9)
    assert np.isnan(ds.entered.isel(epoch=0)).all()
    assert float(ds.entered.isel(epoch=slice(1, None)).sum()) > 0  # training moved samples


def test_layer_means_follow_the_paper_definitions(tiny):
    tiny["probes"] = {"sample_sets": {}}
    tiny["model"] = {"depth": 2, "width": [12, 5]}
    tiny["sweep"] = {"seed": [0, 1, 2]}
    ds = xr.Dataset(train_group(plan(validate_dict(tiny, "t"))[0], torch.device("cpu")).variables)
    fraction = torch.from_numpy(ds.activation_fraction.values)
    dead = torch.from_numpy(ds.dead.values == 1)
    always = torch.from_numpy(ds.always_active.values == 1)
    valid = torch.from_numpy(ds.dead.notnull().values)
    f = sample_sets.layer_activation_fraction(fraction, dead, valid)
    np.testing.assert_allclose(ds.ns.layer_mean("activation_fraction").values, f.numpy())
    for name in ("predictability", "informativeness"):
        values = torch.from_numpy(ds[name].values)
        expected = sample_sets.layer_mean_defined(values, dead, always, valid)
        np.testing.assert_allclose(ds.ns.layer_mean(name).values, expected.numpy())


def test_sigmoid_nodes_are_on_above_the_threshold(tiny):
    model, data, _ = setup(tiny, activation="sigmoid")
    opts = validate_dict({**tiny, "probes": {"sample_sets": {"threshold": 0.7}}}, "t")
    ctx = ProbeContext(2, 1, model.widths, 2, "sigmoid", "ce", data)
    probe = PROBES["sample_sets"](opts.probes.sample_sets, ctx)
    record_checkpoint(model, data, [probe], 0, "ce", chunk=100)
    with torch.no_grad():
        z = model(data.splits["val"].x[0], keep=True).preacts[0]
    on = torch.sigmoid(z) > 0.7
    expected = on.double().mean(1).numpy()  # class-mean not needed: compare overall sizes
    sizes = (
        probe.fraction[:, 0, 0, :6] * sample_sets.class_counts(data.splits["val"].labels, 2).numpy()
    ).sum(-1)
    np.testing.assert_allclose(sizes / data.splits["val"].size, expected)


def test_unknown_aggregate_is_refused(tiny):
    ds = xr.Dataset({"loss": ("epoch", [1.0])})
    with pytest.raises(ValueError, match="no paper aggregate"):
        ds.ns.layer_mean("loss")


def test_relu_states_from_activations_equal_those_from_preactivations():
    z = torch.tensor([-2.0, -1e-30, -0.0, 0.0, 1e-30, 0.5, 3.0, float("nan"), float("inf")])
    for threshold in (None, 0.0, 0.5):
        assert sample_sets.same_state_from_activations("relu", threshold)
        on_z = sample_sets.is_on(z, "relu", threshold)
        assert torch.equal(sample_sets.is_on(torch.relu(z), "relu", threshold), on_z)
    # a negative cut would count every a >= 0 as on; sigmoid and tanh compare on z
    assert not sample_sets.same_state_from_activations("relu", -0.5)
    assert not torch.equal(sample_sets.is_on(torch.relu(z), "relu", -0.5), z > -0.5)
    assert not sample_sets.same_state_from_activations("sigmoid", 0.5)
    assert not sample_sets.same_state_from_activations("tanh", None)
    assert sample_sets.same_state_from_activations("linear", -0.5)


def test_relu_eval_pass_keeps_no_preactivations_and_counts_the_same(tiny, monkeypatch):
    """Without node cost the probe reads a ReLU network's activations; its fractions and
    predictability equal those of z > 0 from a separate pass that keeps z, chunk by chunk."""
    import nodescope.runner.train as train

    tiny["probes"] = {"sample_sets": {"split": "val", "node_cost": False, "churn": True}}
    tiny["model"] = {"depth": 2, "width": [6, 4]}
    tiny["sweep"] = {"seed": [0, 1]}
    group = plan(validate_dict(tiny, "test"))[0]
    specs = [m.spec for m in group.members]
    data = build_group_data(specs, torch.device("cpu"))
    model = StackedMLP(specs, group.spec.data.num_features, data.n_classes).double()
    val = data.splits["val"]
    val.x = val.x.double()
    ctx = ProbeContext(2, 1, model.widths, 2, "relu", "ce", data)
    probe = PROBES["sample_sets"](group.spec.probes.sample_sets, ctx)
    assert probe.needs_acts and not probe.needs_preacts

    seen = []
    real = train.eval_batches

    def watched(*args, **kwargs):
        for batch in real(*args, **kwargs):
            seen.append((len(batch.fwd.preacts), len(batch.fwd.acts)))
            yield batch

    monkeypatch.setattr(train, "eval_batches", watched)
    record_checkpoint(model, data, [probe], 0, "ce", chunk=7)
    assert seen == [(0, 2)] * 9  # 60 samples in 9 chunks, a of both layers, no z

    with torch.no_grad():
        fwd = model(val.x[0], keep=True)
    cc = sample_sets.class_counts(val.labels, 2)
    for layer, z in enumerate(fwd.preacts):
        counts = sample_sets.class_on_counts(z > 0, val.labels, 2)
        h = z.shape[-1]
        assert 0 < counts.sum() < z.numel()  # some nodes on, some off
        np.testing.assert_array_equal(
            probe.fraction[:, 0, layer, :h], sample_sets.activation_fraction(counts, cc)
        )
        np.testing.assert_array_equal(
            probe.predictability[:, 0, layer, :h], sample_sets.predictability(counts, cc)
        )


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_on_states_as_numbers_count_the_same(activation):
    g = torch.Generator().manual_seed(5)
    z = torch.randn(2, 9, 4, generator=g)
    z[0, 0, :] = torch.tensor([float("nan"), 0.0, -0.0, float("inf")])
    labels = torch.tensor([0, 1, 1, 2, 0, 2, 2, 1, 1])
    on = sample_sets.is_on(z, activation)
    as_float = sample_sets.is_on(z, activation, dtype=torch.float32)
    assert on.dtype == torch.bool and as_float.dtype == torch.float32
    assert torch.equal(as_float, on.float()) and 0 < int(on.sum()) < on.numel()
    counts = sample_sets.class_on_counts(as_float, labels, 3)
    assert torch.equal(counts, sample_sets.class_on_counts(on, labels, 3))
    loop = torch.zeros(2, 4, 3, dtype=torch.int64)
    for e in range(2):
        for s in range(9):
            loop[e, :, labels[s]] += on[e, s].long()
    assert torch.equal(counts, loop)
