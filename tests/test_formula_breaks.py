"""Hand-built, asymmetric examples that a plausibly wrong formula cannot pass, and an
end-to-end check of the winner-take-most probes against a slow numpy re-computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nodescope
from nodescope.cli import main
from nodescope.data.prepare import GroupData, SplitData, build_group_data
from nodescope.data.seeds import numpy_rng
from nodescope.data.synthetic import pattern_masks
from nodescope.metrics import winner_take_most as wtm
from nodescope.metrics import wtm_probes
from nodescope.metrics.base import EvalBatch, ProbeContext
from nodescope.models.loss import per_sample_loss
from nodescope.models.mlp import Forward
from nodescope.spec import model as options
from nodescope.spec.load import validate_dict
from nodescope.spec.toml_io import dump_toml


def test_mse_is_the_mean_over_outputs_of_the_squared_error():
    out = torch.tensor([[[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]]])  # (E=1, B=2, K=3)
    targets = torch.tensor([[2, 0]])
    # sample 0: (0.5² + 1² + 1²) / 3 = 0.75; sample 1: (1 + 0 + 0) / 3
    torch.testing.assert_close(per_sample_loss(out, targets, "mse"), torch.tensor([[0.75, 1 / 3]]))


def test_loss_shares_put_the_difficult_samples_first():
    losses = torch.tensor([[1.0, 2.0, 3.0, 10.0]])
    difficult = torch.tensor([[False, False, True, False]])
    np.testing.assert_allclose(wtm.loss_shares(losses, difficult).numpy(), [[3 / 16, 13 / 16]])


def split(x, labels, patterns) -> SplitData:
    labels = torch.tensor(labels)
    return SplitData(
        x=torch.tensor(x, dtype=torch.float32).unsqueeze(0),
        variant=torch.tensor([0]),
        labels=labels,
        targets=labels.unsqueeze(0),
        patterns=torch.tensor(patterns),
    )


def context(
    train: SplitData, test: SplitData, width: int, pattern_classes, centroids=None
) -> ProbeContext:
    splits = {"train": train, "test": test}
    data = GroupData(splits, 2, ["0", "1"], None, centroids, np.array(pattern_classes))
    return ProbeContext(1, 1, [width], 2, "relu", "mse", data)


def batch(split_name: str, index, preacts=None, loss=None) -> EvalBatch:
    index = torch.tensor(index)
    acts = [torch.relu(z) for z in preacts] if preacts else []
    fwd = Forward(torch.zeros(1, len(index), 2), preacts or [], acts)
    zeros = torch.zeros(1, len(index), dtype=torch.long)
    return EvalBatch(split_name, index, zeros[0], zeros, fwd, loss, zeros.bool())


def test_pattern_means_are_of_preactivations_over_the_evaluated_split():
    # patterns 0, 1 of class 0 and 2 of class 1; the training split holds them 3, 1, 2 times
    train = split(np.zeros((6, 2)), [0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 2, 2])
    test = split(np.zeros((4, 2)), [0, 0, 0, 1], [1, 0, 1, 2])  # 1, 2, 1 times
    ctx = context(train, test, width=1, pattern_classes=[0, 0, 1])
    probe = wtm_probes.PatternPreactivationProbe(options.PatternPreactivationProbe(), ctx)
    z = torch.tensor([[[-3.0], [1.0], [2.0], [-4.0]]])  # (E, B, H) of test samples 0-3
    probe.update(0, batch("test", [0, 1], [z[:, :2]]))
    probe.update(0, batch("test", [2, 3], [z[:, 2:]]))
    probe.finish_checkpoint(0)
    means = probe.results()["pattern_preactivation"]
    # pattern 0: sample 1 -> 1; pattern 1: samples 0, 2 -> (-3 + 2) / 2; pattern 2: -4
    np.testing.assert_allclose(means.values[0, 0, 0, 0], [1.0, -0.5, -4.0])
    assert means.pattern_class.values.tolist() == [0, 0, 1]


def test_difficulty_probe_marks_positive_d_difficult_and_reports_its_share_first():
    # c_0 = e_0 (class 0), c_1 = e_1 (class 1); d(x) = <x, other class> - <x, own class>
    centroids = np.eye(2)
    x = [[1.0, 0.0], [0.2, 0.8], [0.0, 1.0], [0.9, 0.1], [0.6, 0.4]]
    train = split(x, [0, 0, 1, 1, 0], [0, 0, 1, 1, 0])
    ctx = context(train, train, width=1, pattern_classes=[0, 1], centroids=centroids)
    probe = wtm_probes.DifficultyProbe(options.DifficultyProbe(), ctx)
    np.testing.assert_allclose(probe.d.numpy()[0], [-1.0, 0.6, -1.0, 0.8, -0.2], rtol=1e-6)
    loss = torch.tensor([[1.0, 2.0, 3.0, 4.0, 10.0]])
    probe.update(0, batch("train", [0, 1, 2, 3, 4], loss=loss))
    probe.finish_checkpoint(0)
    share = probe.results()["loss_share"]
    np.testing.assert_allclose(share.sel(sample_group="difficult").values, [[6 / 20]])
    np.testing.assert_allclose(share.sel(sample_group="regular").values, [[14 / 20]])


def wtm_run_spec(tiny: dict) -> dict:
    tiny["data"].update(n_patterns=4, train_size=200, val_size=0, test_size=30)
    tiny["model"] = {"depth": 1, "width": 6}
    tiny["training"].update(loss="mse")
    tiny["checkpoints"]["weights"] = "final"
    tiny["probes"] = {
        "curves": {},
        "pattern_preactivation": {},
        "difficulty": {},
        "noise_robustness": {"sigma_test": [0.5, 1.0], "n_samples": 50},
    }
    return tiny


def slow_synthetic_sample(masks, n, sigma, rng, delta=1.0, n_dim=40, n_classes=2):
    """Algorithm 1 of the winner-take-most paper, one sample at a time, in float64."""
    n_patterns = len(masks)
    patterns = rng.permutation(np.arange(n) % n_patterns)
    noise = rng.standard_normal((n, n_dim)) * sigma
    x = np.zeros((n, n_dim))
    for s, p in enumerate(patterns):
        v = noise[s].copy()
        for i in masks[p]:
            v[i] += delta
        x[s] = v / np.sqrt(np.sum(v**2))
    return x.astype(np.float32).astype(np.float64), patterns // (n_patterns // n_classes)


def test_wtm_probes_agree_with_a_slow_recomputation_from_stored_weights(tiny, tmp_path):
    spec_dict = wtm_run_spec(tiny)
    path = tmp_path / "spec.toml"
    path.write_text(dump_toml(spec_dict))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    ds = nodescope.open(tmp_path / "run").isel(seed=0).compute()
    net = nodescope.load_model(tmp_path / "run")
    w1, b1 = (p.detach().double().numpy() for p in (net[0].weight, net[0].bias))
    w2, b2 = (p.detach().double().numpy() for p in (net[2].weight, net[2].bias))

    def preacts(x):
        return np.array([[w1[i] @ xs + b1[i] for i in range(len(b1))] for xs in x])

    def outputs(x):
        a = np.maximum(preacts(x), 0)
        return np.array([[w2[k] @ av + b2[k] for k in range(len(b2))] for av in a])

    spec = validate_dict(spec_dict, "t")
    data = build_group_data([spec], torch.device("cpu")).splits
    pattern_class = {0: 0, 1: 0, 2: 1, 3: 1}
    assert ds.epoch.values[-1] == 3.0  # no stop rule: the last checkpoint is the final network

    # pattern_preactivation: mean pre-activation of each pattern's test samples
    x_test, p_test = data["test"].x[0].double().numpy(), data["test"].patterns.numpy()
    z = preacts(x_test)
    expected = np.zeros((len(b1), 4))
    for k in range(4):
        rows = [s for s in range(len(p_test)) if p_test[s] == k]
        expected[:, k] = [sum(z[s, i] for s in rows) / len(rows) for i in range(len(b1))]
    got = ds.pattern_preactivation.isel(epoch=-1, layer=0).values
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert ds.pattern_class.values.tolist() == [pattern_class[k] for k in range(4)]

    # difficulty d(x) = <x, Σ other-class centroids> - <x, Σ own-class centroids>
    masks = pattern_masks(40, 4, 3, False, numpy_rng(0, "masks"))
    centroids = np.zeros((4, 40))
    for k in range(4):
        centroids[k, masks[k]] = 1.0
    x_train, y_train = data["train"].x[0].double().numpy(), data["train"].labels.numpy()
    d = np.array(
        [
            sum(x_train[s] @ centroids[k] for k in range(4) if pattern_class[k] != y_train[s])
            - sum(x_train[s] @ centroids[k] for k in range(4) if pattern_class[k] == y_train[s])
            for s in range(len(y_train))
        ]
    )
    np.testing.assert_allclose(ds.difficulty.values, d, rtol=1e-5, atol=1e-6)
    assert 0 < (d > 0).sum() < len(d) / 2

    # per-sample MSE, mean over the outputs; loss_share of the difficult (d > 0) samples
    y = outputs(x_train)
    onehot = np.eye(2)[y_train]
    loss = np.array([np.mean((y[s] - onehot[s]) ** 2) for s in range(len(y_train))])
    assert float(ds.loss.sel(split="train").isel(epoch=-1)) == pytest.approx(loss.mean(), 1e-5)
    share = ds.loss_share.isel(epoch=-1)
    difficult = loss[d > 0].sum() / loss.sum()
    assert float(share.sel(sample_group="difficult")) == pytest.approx(difficult, rel=1e-5)
    assert float(share.sel(sample_group="regular")) == pytest.approx(1 - difficult, rel=1e-5)
    assert abs(difficult - 0.5) > 0.05

    # noise_robustness: a fresh set per sigma, same masks, argmax accuracy
    for i, sigma in enumerate([0.5, 1.0]):
        x, labels = slow_synthetic_sample(masks, 50, sigma, numpy_rng(0, "probe", i))
        out = outputs(x)
        top2 = np.sort(out, axis=1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0]).min() > 1e-5  # float32 rounding cannot flip one
        expected = np.mean(out.argmax(1) == labels)
        assert float(ds.accuracy_noise.sel(sigma_test=sigma)) == pytest.approx(expected, abs=1e-6)
