"""The perplexity and node_classifiers probes inside the runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nodescope.data.prepare import build_group_data
from nodescope.errors import UserError
from nodescope.metrics import PROBES, ProbeContext, cooperating
from nodescope.models.mlp import StackedMLP
from nodescope.runner.train import record_checkpoint, train_group
from nodescope.spec import plan
from nodescope.spec.load import validate_dict


def group_of(tiny, **probes):
    tiny["model"] = {"depth": 2, "width": [6, 70]}  # 70 nodes: patterns of two words
    tiny["data"]["n_classes"] = 4
    tiny["probes"] = probes
    tiny["sweep"] = {"seed": [0, 1]}
    return plan(validate_dict(tiny, "test"))[0]


def probe_setup(tiny, **probes):
    group = group_of(tiny, **probes)
    specs = [m.spec for m in group.members]
    data = build_group_data(specs, torch.device("cpu"))
    model = StackedMLP(specs, group.spec.data.num_features, data.n_classes)
    ctx = ProbeContext(
        2, 2, model.widths, data.n_classes, "relu", group.spec.training.loss, data, specs
    )
    made = [PROBES[name](getattr(group.spec.probes, name), ctx) for name in probes]
    return model, data, made


def test_chunked_probes_match_whole_split_formulas(tiny, one_thread):
    model, data, (perplexity, classifiers) = probe_setup(
        tiny,
        perplexity={"split": "val"},
        node_classifiers={"splits": ["train", "test"], "bandwidth": "silverman"},
    )
    record_checkpoint(model, data, [perplexity, classifiers], 1, "ce", chunk=7)
    with torch.no_grad():
        z = {s: model(data.splits[s].x[0], keep=True).preacts for s in ("train", "val", "test")}
    labels = {s: data.splits[s].labels for s in z}
    for layer in range(2):
        entropy, distinct = cooperating.pattern_entropy(
            cooperating.pack_patterns(z["val"][layer] > 0), labels["val"], 4
        )
        np.testing.assert_allclose(perplexity.entropy[:, 1, layer], entropy, rtol=1e-12)
        np.testing.assert_array_equal(perplexity.distinct[:, 1, layer], distinct)
        queries = [z["train"][layer], z["test"][layer]]
        train_post, test_post = cooperating.layer_log_posteriors(
            z["train"][layer], labels["train"], queries, 4, bandwidth="silverman"
        )
        for split, post in [("train", train_post), ("test", test_post)]:
            acc = (post.argmax(-1) == labels[split]).double().mean(-1).T
            got = classifiers.accuracy[:, 1, layer, :, ("train", "val", "test").index(split)]
            np.testing.assert_array_equal(got, acc)
    assert np.isnan(classifiers.accuracy[:, 1, :, :, 1]).all()  # val is not scored
    assert np.isnan(perplexity.entropy[:, 0]).all()  # checkpoint 0 was never recorded
    assert perplexity.words is None and classifiers.preacts == {}  # freed after the checkpoint


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_diverging_member_leaves_the_other_members_classifiers_unchanged(tiny, one_thread, bad):
    """A member whose weights went non-finite mid-epoch (before its divergence is seen at
    the epoch's end) has no density to fit: its accuracies are NaN, the other's exact."""
    model, data, (classifiers,) = probe_setup(tiny, node_classifiers={"splits": ["test"]})
    with torch.no_grad():
        model.weights[0][1, :3] = bad
    record_checkpoint(model, data, [classifiers], 1, "ce", chunk=7)
    with torch.no_grad():
        z = {s: model(data.splits[s].x[0], keep=True).preacts for s in ("train", "test")}
    labels = {s: data.splits[s].labels for s in z}
    for layer in range(2):
        (post,) = cooperating.layer_log_posteriors(
            z["train"][layer][:1], labels["train"], [z["test"][layer][:1]], 4
        )
        acc = (post.argmax(-1) == labels["test"]).double().mean(-1).T
        np.testing.assert_array_equal(classifiers.accuracy[:1, 1, layer, :, 2], acc)
    assert not np.isnan(classifiers.accuracy[0, 1, :, :, 2]).any()
    assert np.isnan(classifiers.accuracy[1, 1]).all()


def test_best_network_matches_its_checkpoint(tiny, one_thread):
    tiny["training"].update(epochs=4, early_stopping={"patience": 1})
    tiny["checkpoints"] = {"every": 1, "initial": False}
    runs = {}
    for at in ("checkpoints", "best"):
        opts = {"at": at}
        group = group_of(
            tiny, curves={}, perplexity=opts, node_classifiers={**opts, "splits": ["test"]}
        )
        runs[at] = train_group(group, torch.device("cpu")).variables
    best = runs["best"]
    assert best["perplexity"].dims == ("member", "layer", "label")
    assert best["layer_accuracy"].dims == ("member", "layer", "system", "split")
    for m, epoch in enumerate(runs["checkpoints"]["best_epoch"].values):
        slot = int(epoch) - 1
        for name in ("perplexity", "distinct_patterns", "layer_accuracy"):
            every = runs["checkpoints"][name].isel(member=m, epoch=slot)
            np.testing.assert_array_equal(best[name].isel(member=m), every)


@pytest.mark.parametrize(
    ("probes", "fix", "message"),
    [
        ({"perplexity": {"at": "best"}}, {}, "needs training.early_stopping"),
        ({"node_classifiers": {"splits": ["val"]}}, {"data.val_size": 0}, "val split"),
    ],
)
def test_bad_probe_options_are_one_line(tiny, probes, fix, message):
    tiny["probes"] = probes
    for path, value in fix.items():
        tiny["data"][path.split(".")[1]] = value
    with pytest.raises(UserError, match=message):
        validate_dict(tiny, "test")


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_output_activation_fraction(tiny, loss, one_thread):
    tiny["training"]["loss"] = loss
    tiny["probes"] = {"activation_fraction": {"split": "test", "output_layer": True}}
    model, data, (probe,) = probe_setup(
        tiny, activation_fraction=tiny["probes"]["activation_fraction"]
    )
    record_checkpoint(model, data, [probe], 0, loss, chunk=9)
    test = data.splits["test"]
    with torch.no_grad():
        out = model(test.x[0]).out
    on = out > 0 if loss == "mse" else out.softmax(-1) > 1 / out.shape[-1]
    onehot = torch.nn.functional.one_hot(test.labels, 4).double()
    want = torch.einsum("enk,nc->ekc", on.double(), onehot) / onehot.sum(0)
    np.testing.assert_allclose(probe.output_fraction[:, 0], want, rtol=1e-12)
    assert probe.results()["output_activation_fraction"].dims[2] == "output"
