"""A member's training does not depend on what it is stacked with.

Initial weights, batch order and whole (short) training runs of a member inside a
stacked group are compared with the same member trained alone.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny_specs import tiny_spec_dict

import nodescope.runner.train as train_module
from nodescope.data.prepare import build_group_data
from nodescope.data.seeds import stream_seed
from nodescope.models.mlp import StackedMLP
from nodescope.runner.train import train_group
from nodescope.spec import expand, plan, spec_hash
from nodescope.spec.load import apply_override, validate_dict

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


BASE = tiny_spec_dict(**{"data.val_size": 0, "checkpoints": {"every": 1}, "probes": {"curves": {}}})


def make(sweep: dict | None = None, **overrides):
    d = copy.deepcopy(BASE)
    for path, value in overrides.items():
        apply_override(d, path, value)
    if sweep:
        d["sweep"] = sweep
    return validate_dict(d, "test")


def alone(member_spec):
    """The member's spec as a stand-alone experiment (no sweep), trained as one group."""
    d = member_spec.model_dump(mode="python")
    d["sweep"] = {}
    spec = validate_dict(d, "alone")
    (group,) = plan(spec)
    assert len(group.members) == 1
    assert spec_hash(group.members[0].spec) == spec_hash(member_spec)
    return train_group(group, CPU)


def assert_same_run(stacked, e: int, single) -> None:
    for name in ("loss", "accuracy"):
        a = stacked.variables[name].isel(member=e).values
        b = single.variables[name].isel(member=0).values
        assert a.shape == b.shape
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(
        stacked.variables["final_loss"].isel(member=e).values,
        single.variables["final_loss"].isel(member=0).values,
        rtol=1e-5,
    )
    np.testing.assert_array_equal(
        stacked.variables["final_accuracy"].isel(member=e).values,
        single.variables["final_accuracy"].isel(member=0).values,
    )
    assert stacked.steps == single.steps


# --------------------------------------------------------------------------- initial weights


@pytest.mark.parametrize("init", ["torch_default", "he", "lecun_uniform"])
def test_initial_weights_do_not_depend_on_stacking(init):
    kw = {"model.init": init, "model.depth": 2, "model.width": [16, 8]}
    spec_a, spec_b, spec_c = (make(**kw, **{"training.seed": s}) for s in (3, 7, 11))
    n_features = spec_b.data.num_features
    single = StackedMLP([spec_b], n_features, 2)
    stacked = StackedMLP([spec_a, spec_b, spec_c], n_features, 2)
    assert stacked.n_members == 3 and single.n_members == 1
    assert len(single.weights) == len(stacked.weights) == 3
    assert len(single.biases) == len(stacked.biases) == 3
    for w1, w3 in zip(single.weights, stacked.weights, strict=True):
        assert torch.equal(w1[0], w3[1])
        assert not torch.equal(w3[0], w3[1])  # other seeds give other weights
    for b1, b3 in zip(single.biases, stacked.biases, strict=True):
        assert torch.equal(b1[0], b3[1])
    # Position in the stack does not matter either.
    reordered = StackedMLP([spec_c, spec_a, spec_b], n_features, 2)
    for w1, wr in zip(single.weights, reordered.weights, strict=True):
        assert torch.equal(w1[0], wr[2])


def test_initial_weights_with_mixed_init_schemes():
    """model.init may differ inside a group; each member still gets its alone weights."""
    specs = [make(**{"model.init": i, "training.seed": 5}) for i in ("he", "torch_default")]
    for e, spec in enumerate(specs):
        single = StackedMLP([spec], spec.data.num_features, 4)
        stacked = StackedMLP(specs, spec.data.num_features, 4)
        for w1, w2 in zip(single.weights, stacked.weights, strict=True):
            assert torch.equal(w1[0], w2[e])
        for b1, b2 in zip(single.biases, stacked.biases, strict=True):
            assert torch.equal(b1[0], b2[e])


# --------------------------------------------------------------------------- batch order


def _record_permutations(monkeypatch, spec):
    """Train the spec's single group, recording (generator seed, permutation) per randperm."""
    calls: list[tuple[int, torch.Tensor]] = []
    real = torch.randperm

    def spy(n, *args, generator=None, **kwargs):
        out = real(n, *args, generator=generator, **kwargs)
        if generator is not None:
            calls.append((generator.initial_seed(), out.clone()))
        return out

    monkeypatch.setattr(train_module.torch, "randperm", spy)
    (group,) = plan(spec)
    train_group(group, CPU)
    monkeypatch.undo()
    return calls


def test_batch_order_depends_only_on_member_seed(monkeypatch):
    seeds = [0, 1, 2]
    stacked = _record_permutations(monkeypatch, make(sweep={"seed": seeds}))
    single = _record_permutations(monkeypatch, make(**{"training.seed": 1}))
    epochs, n = BASE["training"]["epochs"], BASE["data"]["train_size"]
    assert len(stacked) == epochs * len(seeds)
    assert len(single) == epochs
    # one generator per member, seeded from the member's own seed's "order" stream
    for epoch in range(epochs):
        for e, seed in enumerate(seeds):
            got_seed, perm = stacked[epoch * len(seeds) + e]
            assert got_seed == stream_seed(seed, "order")
            assert sorted(perm.tolist()) == list(range(n))
    single_perms = [p for _, p in single]
    member1_perms = [stacked[epoch * len(seeds) + 1][1] for epoch in range(epochs)]
    for a, b in zip(single_perms, member1_perms, strict=True):
        assert torch.equal(a, b)
    # the permutations are those of a fresh generator with that seed, epoch after epoch
    g = torch.Generator().manual_seed(stream_seed(1, "order"))
    for p in single_perms:
        assert torch.equal(p, torch.randperm(n, generator=g))
    # and they differ between members and between epochs
    assert not torch.equal(stacked[0][1], stacked[1][1])
    assert not torch.equal(single_perms[0], single_perms[1])


# --------------------------------------------------------------------------- whole runs


CASES = {
    "seed-adam-ce": ({"seed": [0, 1, 2]}, {}),
    "seed-sgd-bce": (
        {"seed": [0, 1, 2]},
        {"optimiser.name": "sgd", "optimiser.lr": 0.5, "training.loss": "bce"},
    ),
    "seed-layca-mse": (
        {"seed": [0, 1]},
        {"optimiser.name": "layca", "optimiser.lr": 0.05, "training.loss": "mse"},
    ),
    "lr-adam": ({"optimiser.lr": [0.001, 0.01, 0.05]}, {}),
    "lr-momentum-sgd": (
        {"optimiser.lr": [0.1, 1.0], "optimiser.momentum": [0.0, 0.9]},
        {"optimiser.name": "sgd", "training.loss": "bce"},
    ),
    "sigma": ({"data.sigma": [0.2, 0.8]}, {}),
    "sigma-seed-batchnorm": (
        {"data.sigma": [0.2, 0.8], "seed": [0, 1]},
        {"model.batch_norm": True, "model.depth": 2},
    ),
    "label-noise": ({"noise.label_fraction": [0.0, 0.3], "seed": [0, 1]}, {}),
    "input-noise": ({"noise.input_sigma_train": [0.0, 0.05], "seed": [0, 1]}, {}),
    "init": ({"model.init": ["he", "torch_default", "lecun_uniform"]}, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_stacked_training_matches_alone(case):
    sweep, overrides = CASES[case]
    spec = make(sweep=sweep, **overrides)
    groups = plan(spec)
    assert len(groups) == 1, "per-member fields must share one stacked group"
    (group,) = groups
    n_members = len(expand(spec))
    assert len(group.members) == n_members >= 2
    stacked = train_group(group, CPU)
    assert stacked.variables["loss"].dims == ("member", "split", "epoch")
    assert stacked.variables["loss"].sizes["epoch"] == BASE["training"]["epochs"] + 1
    for e, member in enumerate(group.members):
        assert_same_run(stacked, e, alone(member.spec))
    # The members really differ (the comparison is not between identical runs).
    losses = stacked.variables["loss"].sel(split="train").values[:, -1]
    assert len(set(np.round(losses, 8))) == n_members


def test_sigma_members_share_group_but_not_inputs():
    spec = make(sweep={"data.sigma": [0.2, 0.8]})
    (group,) = plan(spec)
    assert [m.spec.data.sigma for m in group.members] == [0.2, 0.8]
    data = build_group_data([m.spec for m in group.members], CPU)
    for split in ("train", "test"):
        sd = data.splits[split]
        assert sd.x.shape[0] == 2  # one input variant per sigma
        assert sd.variant.tolist() == [0, 1]
        assert not torch.equal(sd.x[0], sd.x[1])
        # labels are the same, only the noise level differs
        assert torch.equal(sd.targets[0], sd.targets[1])
    # each variant equals the alone member's inputs
    for e, member in enumerate(group.members):
        solo = build_group_data([member.spec], CPU)
        for split in ("train", "test"):
            assert torch.equal(solo.splits[split].x[0], data.splits[split].x[e])


def test_non_member_fields_split_groups():
    spec = make(sweep={"data.pattern_length": [2, 3], "model.width": [8, 16], "seed": [0, 1]})
    groups = plan(spec)
    assert len(groups) == 4
    assert all(len(g.members) == 2 for g in groups)
    for g in groups:
        assert {m.spec.training.seed for m in g.members} == {0, 1}
    # a different data seed means different masks: never stacked together
    groups = plan(make(sweep={"data.seed": [0, 1], "seed": [0, 1], "zip": [["data.seed", "seed"]]}))
    assert [len(g.members) for g in groups] == [1, 1]
    assert [g.spec.data.seed for g in groups] == [0, 1]


def test_data_seed_can_be_swept_alone():
    members = expand(make(sweep={"data.seed": [0, 1]}))
    assert [m.spec.data.seed for m in members] == [0, 1]


# --------------------------------------------------------------------------- stop rules


def test_stopped_member_curves_match_alone():
    spec = make(
        sweep={"optimiser.lr": [0.05, 0.0005]},
        **{"training.until_train_accuracy": 0.95, "training.epochs": 5},
    )
    (group,) = plan(spec)
    stacked = train_group(group, CPU)
    assert np.isfinite(stacked.variables["stop_epoch"].values[0])
    assert np.isnan(stacked.variables["stop_epoch"].values[1])
    assert_same_run(stacked, 0, alone(group.members[0].spec))
    # the member that trains on after the other stopped (masked optimiser steps)
    assert_same_run(stacked, 1, alone(group.members[1].spec))


def test_stopped_member_final_metrics_match_alone():
    spec = make(
        sweep={"optimiser.lr": [0.05, 0.0005]},
        **{"training.until_train_accuracy": 0.95, "training.epochs": 5},
    )
    (group,) = plan(spec)
    stacked = train_group(group, CPU)
    single = alone(group.members[0].spec)
    assert stacked.variables["stop_epoch"].values[0] == single.variables["stop_epoch"].values[0]
    np.testing.assert_allclose(
        stacked.variables["final_loss"].values[0],
        single.variables["final_loss"].values[0],
        rtol=1e-5,
    )


def test_stopped_member_batch_norm_final_metrics_match_alone():
    spec = make(
        sweep={"optimiser.lr": [0.05, 0.0005]},
        **{
            "training.until_train_accuracy": 0.95,
            "training.epochs": 5,
            "model.batch_norm": True,
        },
    )
    (group,) = plan(spec)
    stacked = train_group(group, CPU)
    single = alone(group.members[0].spec)
    assert np.isfinite(single.variables["stop_epoch"].values[0])
    np.testing.assert_allclose(
        stacked.variables["final_loss"].values[0],
        single.variables["final_loss"].values[0],
        rtol=1e-5,
    )
