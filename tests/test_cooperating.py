"""Formulas of "DNNs as layers of cooperating classifiers": perplexity and node classifiers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from nodescope.metrics import cooperating as coop

# --------------------------------------------------------------------------- perplexity


def patterns_of(rows: list[str]) -> torch.Tensor:
    """Bool (N, H) table from strings like '0110'."""
    return torch.tensor([[ch == "1" for ch in r] for r in rows])


def test_perplexity_of_hand_built_patterns():
    # member 0: class 0 has 4 distinct patterns, class 1 three copies of one, class 2 the
    # counts {3, 1, 1} out of 5; member 1 swaps the roles of classes 0 and 1.
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    member0 = ["001", "010", "100", "111", "101", "101", "101", "110", "110", "110", "000", "011"]
    member1 = ["000", "000", "000", "000", "001", "010", "100", "110", "110", "110", "000", "011"]
    on = torch.stack([patterns_of(member0), patterns_of(member1)])
    entropy, distinct = coop.pattern_entropy(coop.pack_patterns(on), labels, 4)
    mixed = -(0.6 * math.log(0.6) + 2 * 0.2 * math.log(0.2))
    np.testing.assert_allclose(
        coop.perplexity(entropy)[:, :3], [[4, 1, math.exp(mixed)], [1, 3, math.exp(mixed)]]
    )
    assert math.exp(mixed) == pytest.approx(0.6**-0.6 * 5**0.4)  # = 2.5864
    assert distinct.tolist() == [[4, 1, 3, 0], [1, 3, 3, 0]]
    assert torch.isnan(entropy[:, 3]).all()  # class 3 has no samples


@pytest.mark.parametrize("width", [1, 63, 64, 65, 130])
def test_bit_packing_is_one_to_one(width):
    gen = torch.Generator().manual_seed(width)
    on = torch.rand(2, 300, width, generator=gen) < 0.5
    on[:, 1] = on[:, 0]
    on[:, 1, -1] = ~on[:, 0, -1]  # patterns that differ in the last node only
    words = coop.pack_patterns(on)
    assert words.shape == (2, 300, -(-width // 64))
    bits = torch.arange(64)
    unpacked = ((words[..., None] >> bits) & 1).flatten(-2)[..., :width].bool()
    assert torch.equal(unpacked, on)
    assert (((words[..., None] >> bits) & 1).flatten(-2)[..., width:] == 0).all()
    labels = torch.zeros(300, dtype=torch.int64)
    _, distinct = coop.pattern_entropy(words, labels, 1)
    for e in range(2):
        assert distinct[e, 0] == len(np.unique(on[e].numpy(), axis=0))


def test_entropy_counts_patterns_not_their_words():
    on = torch.zeros(1, 4, 130, dtype=torch.bool)
    on[0, 1, 63] = on[0, 2, 64] = on[0, 3, 129] = True  # sign bit, next word, last bit
    entropy, distinct = coop.pattern_entropy(coop.pack_patterns(on), torch.zeros(4).long(), 1)
    assert distinct.item() == 4 and coop.perplexity(entropy).item() == pytest.approx(4)


# --------------------------------------------------------------------------- batched KDE


def kde_rows(seed: int = 0):
    """(E=2, N, H=3) pre-activations of 3 unequal classes with different shapes per row."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], [37, 150, 13])
    rng.shuffle(labels)
    n = len(labels)
    z = np.empty((2, n, 3))
    z[0, :, 0] = rng.normal(labels * 1.5, 1 + labels)
    z[0, :, 1] = np.where(rng.random(n) < 0.5, rng.normal(-2, 0.3, n), rng.gamma(2, 1.5, n))
    z[0, :, 2] = rng.lognormal(labels * 0.3, 0.8)
    z[1] = -3 * z[0][:, ::-1] + 0.5
    z[1, :5, 0] = [40, -25, 60, 0.1, 0.2]  # outliers stretch one member's grid
    return torch.tensor(z), torch.tensor(labels)


def assert_close_where_dense(got, want, rtol=1e-3):
    want = np.asarray(want)
    dense = want > 1e-6 * want.max()
    rel = np.abs(np.asarray(got)[dense] - want[dense]) / want[dense]
    assert rel.max() < rtol, f"max relative error {rel.max():.2e}"


@pytest.mark.parametrize("bandwidth", ["scott", "silverman"])
def test_batched_kde_matches_scipy(bandwidth):
    z, labels = kde_rows()
    kde = coop.fit_class_kdes(z, labels, 3, bandwidth)
    for e in range(2):
        for h in range(3):
            for c in range(3):
                x = z[e, labels == c, h].numpy()
                ref = scipy.stats.gaussian_kde(x, bw_method=bandwidth)
                sigma = math.sqrt(ref.covariance[0, 0])
                assert kde.bandwidth[e, h, c].item() == pytest.approx(sigma, rel=1e-12)
                q = np.concatenate([np.linspace(x.min() - 9 * sigma, x.max() + 9 * sigma, 3001), x])
                query = torch.zeros(2, len(q), 3, dtype=torch.float64)
                query[e, :, h] = torch.tensor(q)
                got = kde(query)[e, :, h, c].double().numpy()
                assert_close_where_dense(got, ref(q))


def test_batched_kde_matches_kdepy():
    """NaiveKDE sums every kernel exactly; FFTKDE cuts the Gaussian where it falls below
    1e-4 (KDEpy's practical support), so it is only that close in absolute terms."""
    kdepy = pytest.importorskip("KDEpy")
    z, labels = kde_rows(1)
    kde = coop.fit_class_kdes(z, labels, 3, "silverman")
    for e, h, c in [(0, 0, 0), (0, 1, 1), (1, 2, 2), (1, 0, 1)]:
        x = z[e, labels == c, h].numpy()
        sigma = kde.bandwidth[e, h, c].item()
        grid, fft = kdepy.FFTKDE(kernel="gaussian", bw=sigma).fit(x).evaluate(2**16)
        query = torch.zeros(2, len(grid), 3, dtype=torch.float64)
        query[e, :, h] = torch.tensor(grid)
        got = kde(query)[e, :, h, c].double().numpy()
        assert_close_where_dense(got, kdepy.NaiveKDE(kernel="gaussian", bw=sigma).fit(x)(grid))
        assert (np.abs(got - fft) <= 1e-3 * fft + 1e-4).all()


def test_kde_of_degenerate_rows_stays_finite():
    z = torch.tensor([[[1.0], [1.0], [1.0], [2.0], [5.0]]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 2])  # constant class, single-sample class, class 3 empty
    kde = coop.fit_class_kdes(z, labels, 4)
    density = kde(torch.tensor([[[1.0], [2.0], [9.0]]], dtype=torch.float64))[0, :, 0]
    assert torch.isfinite(density).all()
    assert density[0, 0] > 1e3 and density[1, 1] > 1e3 and density[2].eq(0).all()


# --------------------------------------------------------------------------- node classifiers


def reference_log_posteriors(fit_z, fit_labels, query, n_classes, bandwidth):
    """Per node scipy KDEs, explicit fractions and products of probabilities: (3, E, M, C)."""
    fit_z, query = fit_z.numpy(), query.numpy()
    fit_labels = fit_labels.numpy()
    sizes = np.bincount(fit_labels, minlength=n_classes)
    prior = sizes / sizes.sum()
    floor_discrete = 0.5 / sizes.max()
    e_, m_, h_ = query.shape
    prob = np.ones((3, e_, m_, n_classes))
    for e in range(e_):
        for h in range(h_):
            kdes = [
                scipy.stats.gaussian_kde(fit_z[e, fit_labels == c, h], bw_method=bandwidth)
                for c in range(n_classes)
            ]
            lo, hi = fit_z[e, :, h].min() - 10, fit_z[e, :, h].max() + 10
            fine = np.linspace(lo, hi, 20001)
            floor_continuous = 1e-6 * max(k(fine).max() for k in kdes)
            for c in range(n_classes):
                p_on = np.mean(fit_z[e, fit_labels == c, h] > 0)
                for m in range(m_):
                    x = query[e, m, h]
                    discrete = max(p_on if x > 0 else 1 - p_on, floor_discrete)
                    continuous = max(kdes[c](x)[0], floor_continuous)
                    prob[0, e, m, c] *= discrete
                    prob[1, e, m, c] *= continuous
                    prob[2, e, m, c] *= discrete if x <= 0 else continuous
    return np.log(prob * prior)


def classifier_example():
    """Two members, 3 unequal classes, 4 nodes: one node class 2 never switches on, queries
    far outside every class's range, and negative pre-activations that ReLU would hide."""
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], [30, 18, 12])
    n = len(labels)
    z = np.empty((2, n, 4))
    z[0, :, 0] = rng.normal([-1.0, 0.5, 2.0][0], 1, n) + labels * 0.8
    z[0, :, 1] = rng.normal(0, 1, n) - 0.7 * labels
    z[0, :, 2] = np.where(labels == 2, -rng.gamma(2, 1, n), rng.normal(1, 1, n))
    z[0, :, 3] = rng.normal(0.3 * labels**2, 0.5 + 0.5 * labels)
    z[1] = 0.5 * z[0][:, [2, 0, 3, 1]] - 0.2
    query = rng.normal(0, 1.5, (2, 25, 4))
    query[:, :3] = [[[30, -30, 0.5, -0.1]], [[0.2, 25, -40, 0.0]]]
    return (
        torch.tensor(z),
        torch.tensor(labels),
        torch.tensor(query),
    )


@pytest.mark.parametrize("bandwidth", ["scott", "silverman"])
def test_three_classifiers_match_slow_reference(bandwidth):
    fit_z, labels, query = classifier_example()
    train_post, query_post = coop.layer_log_posteriors(
        fit_z, labels, [fit_z, query], 3, bandwidth=bandwidth, node_block=3, query_chunk=7
    )
    want = reference_log_posteriors(fit_z, labels, query, 3, bandwidth)
    # 1e-3 relative per node density and floor -> at most ~4e-3 in a sum of 4 logs
    np.testing.assert_allclose(query_post.numpy(), want, rtol=0, atol=5e-3)
    np.testing.assert_array_equal(query_post.argmax(-1).numpy(), want.argmax(-1))
    want_train = reference_log_posteriors(fit_z, labels, fit_z, 3, bandwidth)
    np.testing.assert_allclose(train_post.numpy(), want_train, rtol=0, atol=5e-3)


def test_discrete_floor_keeps_a_never_on_node_finite():
    fit_z, labels, query = classifier_example()
    on = fit_z[..., 2:3] > 0
    fractions = coop.on_fractions(on, labels, 3)
    assert fractions[0, 0, 2] == 0  # class 2 never switches node 2 of member 0 on
    floor = coop.discrete_floor(labels, 3)
    assert floor == pytest.approx(1 / 60)
    log_on, log_off = coop.discrete_log_tables(fractions, floor)
    assert torch.isfinite(log_on).all() and torch.isfinite(log_off).all()
    assert log_on[0, 0, 2] == pytest.approx(math.log(1 / 60)) and log_off[0, 0, 2] == 0
