"""Tests for the synthetic hierarchical-patterns generator and its group data.

Algorithm 1 of the winner-take-most paper: disjoint (or overlapping) pattern masks P_k,
samples x = (eps + sum_{j in P_p} delta e_j) / ||.||_2 with eps ~ N(0, sigma^2 I),
pattern k in class k // (n_patterns / n_classes).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nodescope.data import synthetic
from nodescope.data.prepare import build_group_data
from nodescope.data.seeds import numpy_rng
from nodescope.spec.load import validate_dict

CPU = torch.device("cpu")

BASE = {
    "experiment": {"name": "synthetic"},
    "data": {
        "name": "synthetic_patterns",
        "n_dim": 60,
        "n_patterns": 6,
        "pattern_length": 4,
        "train_size": 300,
        "val_size": 50,
        "test_size": 120,
        "n_classes": 3,
        "sigma": 0.3,
        "seed": 4,
    },
}


def make(**data):
    d = copy.deepcopy(BASE)
    d["data"].update(data)
    return validate_dict(d, "test")


def group_data(**data):
    return build_group_data([make(**data)], CPU)


def reference_split(spec, split: str, sigma: float):
    """Direct reimplementation of one split from the spec's seeded streams."""
    d = spec.data
    masks = numpy_rng(d.seed, "masks").permutation(d.n_dim)[: d.n_patterns * d.pattern_length]
    masks = masks.reshape(d.n_patterns, d.pattern_length)
    size = dict(zip(("train", "val", "test"), d.sizes(), strict=True))[split]
    rng = numpy_rng(d.seed, split)
    patterns = rng.permutation(np.arange(size) % d.n_patterns)
    if d.noise_draws == "independent":  # a noise stream of its own per sigma
        rng = numpy_rng(d.seed, split, round(sigma * 1e9))
    x = sigma * rng.standard_normal((size, d.n_dim))
    for i, p in enumerate(patterns):
        for j in masks[p]:
            x[i, j] += d.delta
    x /= np.sqrt((x**2).sum(1, keepdims=True))
    return masks, patterns, x


# --------------------------------------------------------------------------- masks


def test_disjoint_masks_shape_and_range():
    masks = synthetic.pattern_masks(100, 12, 7, False, np.random.default_rng(0))
    assert masks.shape == (12, 7)
    assert masks.min() >= 0 and masks.max() < 100
    assert len(np.unique(masks)) == 12 * 7  # pairwise disjoint, no repeats within a mask


def test_disjoint_masks_can_fill_every_dimension():
    masks = synthetic.pattern_masks(20, 4, 5, False, np.random.default_rng(1))
    assert sorted(masks.ravel().tolist()) == list(range(20))


def test_overlapping_masks():
    masks = synthetic.pattern_masks(10, 8, 5, True, np.random.default_rng(2))
    assert masks.shape == (8, 5)
    for row in masks:
        assert len(set(row.tolist())) == 5  # no repeat within a mask
    assert len(np.unique(masks)) < 8 * 5  # 40 entries in 10 dimensions must overlap


def test_centroids_put_delta_on_exactly_the_mask():
    masks = synthetic.pattern_masks(50, 5, 3, False, np.random.default_rng(3))
    c = synthetic.centroids(masks, 50, 2.5)
    assert c.shape == (5, 50)
    for k in range(5):
        assert set(np.flatnonzero(c[k]).tolist()) == set(masks[k].tolist())
        assert np.all(c[k, masks[k]] == 2.5)
    data = group_data()
    spec = make()
    expected = np.zeros((6, 60))
    ref_masks, _, _ = reference_split(spec, "train", 0.3)
    for k, mask in enumerate(ref_masks):
        expected[k, mask] = spec.data.delta
    np.testing.assert_array_equal(data.centroids, expected)


# --------------------------------------------------------------------------- labels


def test_pattern_class_by_hand():
    patterns = np.arange(6)
    np.testing.assert_array_equal(synthetic.pattern_class(patterns, 6, 3), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(synthetic.pattern_class(patterns, 6, 2), [0, 0, 0, 1, 1, 1])
    # the paper's C = floor(p / (n_pat/2 + 1)) for p = 1..n_pat, two classes
    n_pat = 30
    paper = [p // (n_pat // 2 + 1) for p in range(1, n_pat + 1)]
    np.testing.assert_array_equal(synthetic.pattern_class(np.arange(n_pat), n_pat, 2), paper)


def test_balanced_patterns():
    patterns = synthetic.balanced_patterns(100, 6, np.random.default_rng(5))
    assert np.bincount(patterns, minlength=6).tolist() == [17, 17, 17, 17, 16, 16]
    # shuffled, not sorted
    assert not np.array_equal(patterns, np.arange(100) % 6)


def test_group_data_labels_and_balance():
    data = group_data()
    for split, size in zip(("train", "val", "test"), (300, 50, 120), strict=True):
        sd = data.splits[split]
        patterns = sd.patterns.numpy()
        counts = np.bincount(patterns, minlength=6)
        assert counts.tolist() == [size // 6 + (k < size % 6) for k in range(6)]
        np.testing.assert_array_equal(sd.labels.numpy(), patterns // 2)
        np.testing.assert_array_equal(sd.targets.numpy(), (patterns // 2)[None])
    assert data.n_classes == 3
    assert data.class_names == ["class 0", "class 1", "class 2"]


# --------------------------------------------------------------------------- splits


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ({"train_size": 300, "val_size": 50, "test_size": 120}, (300, 50, 120)),
        ({"train_size": 80, "val_size": 0, "test_size": 30}, (80, 0, 30)),
        ({"train_size": None, "n_data": 500, "val_size": 100, "test_size": 150}, (250, 100, 150)),
    ],
)
def test_split_sizes(sizes, expected):
    spec = make(**sizes)
    assert spec.data.sizes() == expected
    data = build_group_data([spec], CPU)
    names = [s for s, n in zip(("train", "val", "test"), expected, strict=True) if n > 0]
    assert list(data.splits) == names
    for name, n in zip(("train", "val", "test"), expected, strict=True):
        if n:
            sd = data.splits[name]
            assert sd.x.shape == (1, n, 60)
            assert sd.labels.shape == (n,) and sd.targets.shape == (1, n)
            assert sd.size == n


# --------------------------------------------------------------------------- samples


def test_rows_are_unit_norm():
    data = group_data()
    for sd in data.splits.values():
        norms = sd.x.double().norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-6)
    x = synthetic.draw_samples(
        np.array([[0, 1]]), np.zeros(10, dtype=int), 5, 1.0, 2.0, np.random.default_rng(0)
    )
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)


def test_draw_samples_matches_reimplementation():
    masks = synthetic.pattern_masks(30, 4, 3, False, np.random.default_rng(6))
    patterns = np.array([0, 3, 1, 2, 2, 0])
    x = synthetic.draw_samples(masks, patterns, 30, 1.5, 0.7, np.random.default_rng(7))
    noise = np.random.default_rng(7).standard_normal((6, 30)) * 0.7
    ref = noise + synthetic.centroids(masks, 30, 1.5)[patterns]
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(x, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_group_data_matches_reimplementation(split):
    spec = make()
    data = build_group_data([spec], CPU)
    _, patterns, x = reference_split(spec, split, spec.data.sigma)
    np.testing.assert_array_equal(data.splits[split].patterns.numpy(), patterns)
    np.testing.assert_allclose(data.splits[split].x[0].numpy(), x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sigma", [0.1, 0.4, 1.0])
def test_sigma_sets_noise_relative_to_delta(sigma):
    """Undo the per-row normalisation with the off-mask std: on-mask mean -> delta / sigma."""
    n_dim, length, delta = 4000, 5, 2.0
    masks = synthetic.pattern_masks(n_dim, 10, length, False, np.random.default_rng(8))
    patterns = synthetic.balanced_patterns(400, 10, np.random.default_rng(9))
    x = synthetic.draw_samples(masks, patterns, n_dim, delta, sigma, np.random.default_rng(10))
    on = np.zeros_like(x, dtype=bool)
    np.put_along_axis(on, masks[patterns], True, axis=1)
    off_std = np.array([row[~m].std() for row, m in zip(x, on, strict=True)])
    off_mean = np.array([row[~m].mean() for row, m in zip(x, on, strict=True)])
    on_mean = np.array([row[m].mean() for row, m in zip(x, on, strict=True)])
    assert np.mean(on_mean / off_std) == pytest.approx(delta / sigma, rel=0.03)
    assert abs(np.mean(off_mean / off_std)) < 0.01  # zero-mean noise


def test_sigma_zero_gives_normalised_centroids():
    masks = synthetic.pattern_masks(30, 3, 4, False, np.random.default_rng(11))
    patterns = np.array([0, 1, 2, 1])
    x = synthetic.draw_samples(masks, patterns, 30, 3.0, 0.0, np.random.default_rng(12))
    expected = synthetic.centroids(masks, 30, 1.0)[patterns] / 2.0  # 1/sqrt(4) on the mask
    np.testing.assert_allclose(x, expected, atol=1e-7)


def test_sigma_test_used_for_val_and_test():
    spec = make(sigma=0.2, sigma_test=0.9)
    data = build_group_data([spec], CPU)
    for split, sigma in (("train", 0.2), ("val", 0.9), ("test", 0.9)):
        _, _, x = reference_split(spec, split, sigma)
        np.testing.assert_allclose(data.splits[split].x[0].numpy(), x, rtol=1e-5, atol=1e-6)


def test_sigma_test_zero_gives_noiseless_test_set():
    spec = make(sigma=0.5, sigma_test=0.0)
    data = build_group_data([spec], CPU)
    x = data.splits["test"].x[0].numpy()
    # every test sample is its normalised centroid: exactly pattern_length non-zeros
    assert ((np.abs(x) > 1e-6).sum(1) == 4).all()


# --------------------------------------------------------------------------- seeds


def test_same_data_seed_same_data():
    a, b = group_data(), group_data()
    for split in a.splits:
        assert torch.equal(a.splits[split].x, b.splits[split].x)
        assert torch.equal(a.splits[split].patterns, b.splits[split].patterns)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    # the splits are drawn from different streams
    assert not torch.equal(a.splits["train"].x[0, :50], a.splits["val"].x[0])


def test_different_data_seed_different_masks():
    a, b = group_data(seed=4), group_data(seed=5)
    assert not np.array_equal(a.centroids, b.centroids)
    assert not torch.equal(a.splits["train"].patterns, b.splits["train"].patterns)


def test_different_sigma_keeps_masks_and_patterns():
    low, high = make(sigma=0.05), make(sigma=0.8)
    a = build_group_data([low], CPU)
    b = build_group_data([high], CPU)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split].patterns, b.splits[split].patterns)
        assert torch.equal(a.splits[split].labels, b.splits[split].labels)
        assert not torch.equal(a.splits[split].x, b.splits[split].x)
    # at low noise a sample's largest entries are exactly its pattern's mask
    x = a.splits["train"].x[0].numpy()
    patterns = a.splits["train"].patterns.numpy()
    masks = np.stack([np.flatnonzero(c) for c in a.centroids])
    top = np.sort(np.argsort(-x, axis=1)[:, :4], axis=1)
    np.testing.assert_array_equal(top, np.sort(masks[patterns], axis=1))
    # both members of one group see their own sigma on the same patterns
    both = build_group_data([low, high], CPU)
    assert torch.equal(both.splits["train"].x[0], a.splits["train"].x[0])
    assert torch.equal(both.splits["train"].x[1], b.splits["train"].x[0])


def test_noise_draws_common_share_one_stream_independent_do_not():
    """With delta = 0 a sample is its normalised noise: one shared stream gives the same
    samples at every sigma, independent draws do not. Labels never depend on sigma."""
    from nodescope.data.prepare import _synthetic_split
    from nodescope.spec.model import Data

    for draws, same in (("common", True), ("independent", False)):
        data = Data(
            name="synthetic_patterns",
            n_dim=40,
            n_patterns=4,
            pattern_length=3,
            delta=0.0,
            train_size=50,
            noise_draws=draws,
        )
        low, high = _synthetic_split(data, "train", 0.4), _synthetic_split(data, "train", 0.8)
        assert np.array_equal(low.labels, high.labels)
        assert np.allclose(low.x, high.x) is same


def test_per_member_batches_gather_each_members_variant():
    from nodescope.data.prepare import SplitData

    x = torch.arange(3 * 5 * 2, dtype=torch.float32).view(3, 5, 2)
    variant = torch.tensor([2, 0, 2, 1])
    index = torch.tensor([[4, 0], [1, 1], [0, 3], [2, 4]])
    split = SplitData(x, variant, torch.zeros(5), torch.zeros(4, 5), None)
    got = split.inputs(index)
    assert got.shape == (4, 2, 2)
    for e in range(4):
        for b in range(2):
            assert torch.equal(got[e, b], x[variant[e], index[e, b]])


def test_range_inputs_equal_the_gathered_range_for_one_and_several_variants():
    from nodescope.data.prepare import SplitData

    x = torch.arange(3 * 5 * 2, dtype=torch.float32).view(3, 5, 2)
    several = SplitData(x, torch.tensor([2, 0, 2, 1]), torch.zeros(5), torch.zeros(4, 5), None)
    one = SplitData(x[1:2], torch.zeros(4, dtype=torch.long), torch.zeros(5), None, None)
    for split in (several, one):
        got = split.range_inputs(1, 4)
        assert torch.equal(got, split.inputs(torch.arange(1, 4)))
    assert one.range_inputs(1, 4).data_ptr() == x[1, 1].data_ptr()  # a view, no copy
    assert several.range_inputs(1, 4).shape == (4, 3, 2)
