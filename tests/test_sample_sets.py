"""Tests for nodescope.metrics.sample_sets (Davel et al., SACAIR 2020, Section 4.2).

Expected values are written out by hand (fractions and explicit ``math.log`` expressions)
or computed by independent slow reference implementations, never by the code under test.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from nodescope.metrics.sample_sets import (
    activation_fraction,
    always_active,
    churn,
    class_cost_sums,
    class_counts,
    class_on_counts,
    dead,
    informativeness,
    is_on,
    layer_activation_fraction,
    layer_mean_defined,
    node_cost,
    predictability,
)

NAN = float("nan")

# --------------------------------------------------------------------------- hand example
#
# 6 samples, 3 classes with |S_0| = 3, |S_1| = 2, |S_2| = 1, and 4 nodes:
#   node 0: dead (never on)
#   node 1: always active
#   node 2: on exactly for class 0 -> class-pure, every e(ẑ, c) log(...) term with a zero
#           cell is a 0 log 0 term
#   node 3: on for one sample of each class (1/3, 1/2, 1/1 of the class)
LABELS = torch.tensor([0, 0, 0, 1, 1, 2])
ON = torch.tensor(
    [
        [0, 1, 1, 1],  # class 0
        [0, 1, 1, 0],  # class 0
        [0, 1, 1, 0],  # class 0
        [0, 1, 0, 1],  # class 1
        [0, 1, 0, 0],  # class 1
        [0, 1, 0, 1],  # class 2
    ],
    dtype=torch.bool,
)
PERM = [3, 2, 1, 0]  # member 1 is member 0 with its nodes reversed
ON_E = torch.stack([ON, ON[:, PERM]])  # (E=2, N=6, H=4)

EXPECTED_COUNTS = [[0, 0, 0], [3, 2, 1], [3, 0, 0], [1, 1, 1]]  # (H, C)
EXPECTED_FRACTION = [[0, 0, 0], [1, 1, 1], [1, 0, 0], [1 / 3, 1 / 2, 1]]

# node 2: H(Ẑ|Y) = 0 (Ẑ is a function of Y).
# H(Y|Ẑ): row ẑ = 1 holds only class 0 (3/6) -> 0; row ẑ = 0 holds e(0,1) = 2/6, e(0,2) = 1/6
# with row sum 3/6.
P_NODE2 = 1.0
H_Y_GIVEN_Z_NODE2 = -((2 / 6) * math.log((2 / 6) / (3 / 6)) + (1 / 6) * math.log((1 / 6) / (3 / 6)))
U_NODE2 = 1 - H_Y_GIVEN_Z_NODE2 / math.log(3)
# node 3: e(1, c) = 1/6 for every c; e(0, ·) = (2/6, 1/6, 0).
H_Z_GIVEN_Y_NODE3 = -(
    (1 / 6) * math.log((1 / 6) / (3 / 6))  # c = 0, ẑ = 1
    + (2 / 6) * math.log((2 / 6) / (3 / 6))  # c = 0, ẑ = 0
    + (1 / 6) * math.log((1 / 6) / (2 / 6))  # c = 1, ẑ = 1
    + (1 / 6) * math.log((1 / 6) / (2 / 6))  # c = 1, ẑ = 0
    + (1 / 6) * math.log((1 / 6) / (1 / 6))  # c = 2, ẑ = 1
    + 0.0  # c = 2, ẑ = 0: 0 log 0
)
P_NODE3 = 1 - H_Z_GIVEN_Y_NODE3 / math.log(2)
H_Y_GIVEN_Z_NODE3 = -(
    3 * (1 / 6) * math.log((1 / 6) / (3 / 6))  # ẑ = 1, each class 1/6 of a 3/6 row
    + (2 / 6) * math.log((2 / 6) / (3 / 6))  # ẑ = 0, c = 0
    + (1 / 6) * math.log((1 / 6) / (3 / 6))  # ẑ = 0, c = 1
    + 0.0  # ẑ = 0, c = 2: 0 log 0
)
U_NODE3 = 1 - H_Y_GIVEN_Z_NODE3 / math.log(3)

EXPECTED_P = [NAN, NAN, P_NODE2, P_NODE3]
EXPECTED_U = [NAN, NAN, U_NODE2, U_NODE3]


def _assert_close_nan(actual: torch.Tensor, expected, atol: float = 1e-12) -> None:
    exp = torch.as_tensor(expected, dtype=torch.float64)
    assert actual.shape == exp.shape, (actual.shape, exp.shape)
    torch.testing.assert_close(actual.to(torch.float64), exp, atol=atol, rtol=0, equal_nan=True)


def _per_member(expected_h):
    """Stack the per-node expectation for member 0 and the node-reversed member 1."""
    return [list(expected_h), [expected_h[i] for i in PERM]]


def test_hand_values_are_sane():
    # guards the hand-derived constants themselves
    assert 0 < P_NODE3 < 1
    assert 0 < U_NODE2 < 1 and 0 < U_NODE3 < 1
    assert U_NODE2 > U_NODE3


def test_class_counts():
    got = class_counts(LABELS, 3)
    assert got.dtype == torch.int64
    assert got.tolist() == [3, 2, 1]
    # a class absent from the labels still gets a zero entry
    assert class_counts(torch.tensor([1, 1, 3]), 5).tolist() == [0, 2, 0, 1, 0]


def test_class_on_counts_hand():
    got = class_on_counts(ON_E, LABELS, 3)
    assert got.dtype == torch.int64
    assert got.shape == (2, 4, 3)
    assert got[0].tolist() == EXPECTED_COUNTS
    assert got[1].tolist() == [EXPECTED_COUNTS[i] for i in PERM]


def test_class_on_counts_chunks_add_up_and_match_loop():
    gen = torch.Generator().manual_seed(7)
    on = torch.rand(3, 50, 6, generator=gen) < 0.4
    labels = torch.randint(0, 4, (50,), generator=gen)
    loop = np.zeros((3, 6, 4), dtype=np.int64)
    for e in range(3):
        for s in range(50):
            for h in range(6):
                loop[e, h, int(labels[s])] += int(on[e, s, h])
    chunked = sum(
        class_on_counts(on[:, i : i + 17], labels[i : i + 17], 4) for i in range(0, 50, 17)
    )
    assert chunked.tolist() == loop.tolist()


def test_class_on_counts_rejects_bad_labels():
    with pytest.raises(ValueError):
        class_on_counts(ON_E, torch.tensor([0, 0, 0, 1, 1, 3]), 3)
    with pytest.raises(ValueError):
        class_on_counts(ON_E, LABELS[:5], 3)
    with pytest.raises(ValueError):
        class_counts(torch.tensor([0, -1]), 3)


def test_activation_fraction_hand():
    counts = torch.tensor([EXPECTED_COUNTS, [EXPECTED_COUNTS[i] for i in PERM]])
    got = activation_fraction(counts, torch.tensor([3, 2, 1]))
    assert got.dtype == torch.float64
    _assert_close_nan(got, _per_member(EXPECTED_FRACTION))


def test_activation_fraction_nan_for_absent_class():
    got = activation_fraction(torch.tensor([[2, 0, 1]]), torch.tensor([4, 0, 1]))
    _assert_close_nan(got, [[2 / 4, NAN, 1 / 1]])


def test_dead_and_always_active_hand():
    counts = class_on_counts(ON_E, LABELS, 3)
    cc = class_counts(LABELS, 3)
    assert dead(counts, cc).tolist() == _per_member([True, False, False, False])
    assert always_active(counts, cc).tolist() == _per_member([False, True, False, False])
    # boundary cases: |Ŝ| = |S| − 1 and |Ŝ| = 1 are neither dead nor always active
    counts = torch.tensor([[2, 1], [2, 2], [0, 0], [0, 1]])  # sizes 3, 4, 0, 1 of |S| = 4
    cc = torch.tensor([2, 2])
    assert dead(counts, cc).tolist() == [False, False, True, False]
    assert always_active(counts, cc).tolist() == [False, True, False, False]


def test_predictability_hand():
    counts = class_on_counts(ON_E, LABELS, 3)
    got = predictability(counts, class_counts(LABELS, 3))
    assert got.dtype == torch.float64
    _assert_close_nan(got, _per_member(EXPECTED_P))


def test_informativeness_hand():
    counts = class_on_counts(ON_E, LABELS, 3)
    got = informativeness(counts, class_counts(LABELS, 3))
    assert got.dtype == torch.float64
    _assert_close_nan(got, _per_member(EXPECTED_U))


def test_informativeness_single_class_is_nan():
    got = informativeness(torch.tensor([[1], [0]]), torch.tensor([2]))
    assert torch.isnan(got).all()


def test_perfect_binary_split():
    # node on for exactly classes {0} out of two equal classes: p = 1 and u = 1
    counts = torch.tensor([[5, 0]])
    cc = torch.tensor([5, 5])
    _assert_close_nan(predictability(counts, cc), [1.0])
    _assert_close_nan(informativeness(counts, cc), [1.0])
    # node on for half of each class: Ẑ independent of Y, p = 1 - log2/log2 = 0, u = 0
    counts = torch.tensor([[2, 2]])
    cc = torch.tensor([4, 4])
    _assert_close_nan(predictability(counts, cc), [0.0])
    _assert_close_nan(informativeness(counts, cc), [0.0])


# --------------------------------------------------------------------------- random vs scipy


def _slow_p_u(on: np.ndarray, labels: np.ndarray, n_classes: int):
    """Independent reference: dict contingency table + scipy.stats.entropy (natural log)."""
    n_samples, n_nodes = on.shape
    p_out, u_out = [], []
    for h in range(n_nodes):
        table = defaultdict(int)  # (ẑ, c) -> count
        for s in range(n_samples):
            table[(int(on[s, h]), int(labels[s]))] += 1
        size = sum(v for (z, _), v in table.items() if z == 1)
        if size == 0 or size == n_samples:
            p_out.append(NAN)
            u_out.append(NAN)
            continue
        # H(Ẑ|Y) = Σ_c P(c) H(Ẑ | Y = c)
        h_z_y = 0.0
        for c in range(n_classes):
            col = [table[(0, c)], table[(1, c)]]
            if sum(col) > 0:
                h_z_y += sum(col) / n_samples * entropy(col)
        # H(Y|Ẑ) = Σ_ẑ P(ẑ) H(Y | Ẑ = ẑ)
        h_y_z = 0.0
        for z in (0, 1):
            row = [table[(z, c)] for c in range(n_classes)]
            h_y_z += sum(row) / n_samples * entropy(row)
        p_out.append(1 - h_z_y / math.log(2))
        u_out.append(1 - h_y_z / math.log(n_classes))
    return p_out, u_out


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_predictability_informativeness_vs_scipy(seed):
    n_members, n_samples, n_nodes, n_classes = 3, 40, 9, 5
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes - 1, size=n_samples)  # class 4 never occurs
    rates = rng.uniform(0.05, 0.95, size=(n_members, 1, n_nodes))
    class_bias = rng.uniform(-0.5, 0.5, size=(n_members, n_classes, n_nodes))[:, labels, :]
    on = rng.uniform(size=(n_members, n_samples, n_nodes)) < rates + class_bias
    on[:, :, 0] = False  # dead node
    on[:, :, 1] = True  # always-active node
    on[:, :, 2] = labels[None, :] == 1  # class-pure node (0 log 0 terms)

    on_t = torch.from_numpy(on)
    labels_t = torch.from_numpy(labels)
    counts = class_on_counts(on_t, labels_t, n_classes)
    cc = class_counts(labels_t, n_classes)
    got_p = predictability(counts, cc)
    got_u = informativeness(counts, cc)

    exp_p, exp_u = zip(
        *(_slow_p_u(on[e], labels, n_classes) for e in range(n_members)), strict=True
    )
    _assert_close_nan(got_p, list(exp_p), atol=1e-10)
    _assert_close_nan(got_u, list(exp_u), atol=1e-10)
    assert torch.isfinite(got_p).sum() >= n_members * 3  # the comparison is not all-NaN


# --------------------------------------------------------------------------- layer aggregates


def test_layer_aggregates_hand_with_padding():
    counts = class_on_counts(ON.unsqueeze(0), LABELS, 3)[0]  # (H=4, C=3)
    cc = class_counts(LABELS, 3)
    frac = activation_fraction(counts, cc)
    is_dead = dead(counts, cc)
    is_always = always_active(counts, cc)
    p = predictability(counts, cc)

    # pad a fifth node as callers do: NaN values, False flags
    frac_pad = torch.cat([frac, torch.full((1, 3), NAN, dtype=torch.float64)])
    dead_pad = torch.cat([is_dead, torch.tensor([False])])
    always_pad = torch.cat([is_always, torch.tensor([False])])
    p_pad = torch.cat([p, torch.tensor([NAN], dtype=torch.float64)])
    valid = torch.tensor([True, True, True, True, False])

    # f_l: mean over non-dead nodes 1, 2, 3 (always-active node 1 included)
    # of the class-mean fractions 1, 1/3, (1/3 + 1/2 + 1)/3
    expected_f = (1 + 1 / 3 + (1 / 3 + 1 / 2 + 1) / 3) / 3
    # p_l: mean over nodes that are neither dead nor always active: nodes 2 and 3
    expected_p = (P_NODE2 + P_NODE3) / 2

    for v in (None, valid):
        _assert_close_nan(layer_activation_fraction(frac_pad, dead_pad, valid=v), expected_f)
        _assert_close_nan(layer_mean_defined(p_pad, dead_pad, always_pad, valid=v), expected_p)

    # padding with finite values is ignored only through the valid mask
    frac_zero = torch.cat([frac, torch.zeros((1, 3), dtype=torch.float64)])
    p_zero = torch.cat([p, torch.zeros(1, dtype=torch.float64)])
    _assert_close_nan(layer_activation_fraction(frac_zero, dead_pad, valid=valid), expected_f)
    _assert_close_nan(layer_mean_defined(p_zero, dead_pad, always_pad, valid=valid), expected_p)
    _assert_close_nan(layer_activation_fraction(frac_zero, dead_pad), (3 * expected_f + 0.0) / 4)


def test_layer_aggregates_leading_dims_and_empty():
    # (E=2, L=2, H=3, C=2); class 1 absent from the eval set in every layer (NaN column)
    frac = torch.tensor(
        [
            [[[0.5, NAN], [0.25, NAN], [0.0, NAN]], [[1.0, NAN], [0.0, NAN], [NAN, NAN]]],
            [[[0.0, NAN], [0.0, NAN], [0.0, NAN]], [[0.75, NAN], [1.0, NAN], [0.5, NAN]]],
        ],
        dtype=torch.float64,
    )
    is_dead = frac[..., 0] == 0
    is_always = frac[..., 0] == 1
    valid = ~torch.isnan(frac[..., 0])
    got_f = layer_activation_fraction(frac, is_dead, valid=valid)
    _assert_close_nan(got_f, [[(0.5 + 0.25) / 2, 1.0], [NAN, (0.75 + 1.0 + 0.5) / 3]])
    got_m = layer_mean_defined(frac[..., 0], is_dead, is_always, valid=valid)
    _assert_close_nan(got_m, [[(0.5 + 0.25) / 2, NAN], [NAN, (0.75 + 0.5) / 2]])


# --------------------------------------------------------------------------- churn


def test_churn_two_checkpoints():
    prev = torch.tensor(
        [
            [[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 1]],
            [[0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1]],
        ],
        dtype=torch.bool,
    )  # (E=2, N=4, H=3)
    now = torch.tensor(
        [
            [[1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 1, 1]],
            [[0, 0, 1], [1, 0, 1], [1, 0, 1], [0, 1, 1]],
        ],
        dtype=torch.bool,
    )
    entered, left = churn(prev, now)
    assert entered.dtype == torch.int64 and left.dtype == torch.int64
    # member 0: node 0 gains s2, loses s1; node 1 gains s0, s1; node 2 loses s0, s2
    # member 1: node 0 gains s1, loses s3; node 1 loses s2; node 2 gains s0, s1
    assert entered.tolist() == [[1, 2, 0], [1, 0, 2]]
    assert left.tolist() == [[1, 0, 2], [1, 1, 0]]
    sizes = (prev.sum(1) + entered - left).tolist()
    assert sizes == now.sum(1).tolist()
    with pytest.raises(ValueError):
        churn(prev, now[:, :3])


# --------------------------------------------------------------------------- node cost


def _make_net(seed: int, d_in: int, h1: int, h2: int, d_out: int):
    gen = torch.Generator().manual_seed(seed)
    params = (
        torch.randn(d_in, h1, generator=gen, dtype=torch.float64),
        torch.randn(h1, generator=gen, dtype=torch.float64) * 0.3,
        torch.randn(h1, h2, generator=gen, dtype=torch.float64) * 0.7,
        torch.randn(h2, d_out, generator=gen, dtype=torch.float64),
    )
    return tuple(p.requires_grad_() for p in params)


def _forward(x, net):
    w1, b1, w2, w3 = net
    z1 = x @ w1 + b1  # bias on the first hidden layer only, as in the paper
    z2 = torch.relu(z1) @ w2
    out = torch.relu(z2) @ w3
    return z1, z2, out


def _per_sample_loss(out, y):
    return torch.nn.functional.cross_entropy(out, y, reduction="none")


def test_node_cost_against_autograd_and_paths():
    n, d_in, h1, h2, n_classes = 24, 5, 4, 3, 3
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(n, d_in, generator=gen, dtype=torch.float64)
    y = torch.arange(n) % n_classes
    nets = [_make_net(seed, d_in, h1, h2, n_classes) for seed in (1, 2)]

    # what a caller would do: one backward of the summed per-sample losses
    z1s, z2s, g1s, g2s = [], [], [], []
    for net in nets:
        z1, z2, out = _forward(x, net)
        z1.retain_grad()
        z2.retain_grad()
        _per_sample_loss(out, y).sum().backward()
        z1s.append(z1.detach())
        z2s.append(z2.detach())
        g1s.append(z1.grad)
        g2s.append(z2.grad)
    layers = {
        "h1": (torch.stack(z1s), torch.stack(g1s)),
        "h2": (torch.stack(z2s), torch.stack(g2s)),
    }

    # reference 1: per-sample autograd, ∂L_s/∂z computed from L_s alone
    ref_grad = {"h1": torch.zeros(2, n, h1, dtype=torch.float64), "h2": None}
    ref_grad["h2"] = torch.zeros(2, n, h2, dtype=torch.float64)
    for e, net in enumerate(nets):
        for s in range(n):
            z1, z2, out = _forward(x, net)
            loss_s = _per_sample_loss(out[s : s + 1], y[s : s + 1]).sum()
            d1, d2 = torch.autograd.grad(loss_s, [z1, z2])
            ref_grad["h1"][e, s] = d1[s]
            ref_grad["h2"][e, s] = d2[s]

    # reference 2: the paper's φ = Σ_paths λ Π w over active paths (eq. 2)
    ref_phi = {"h1": torch.zeros(2, n, h1, dtype=torch.float64)}
    ref_phi["h2"] = torch.zeros(2, n, h2, dtype=torch.float64)
    for e, net in enumerate(nets):
        _, _, w2, w3 = (p.detach() for p in net)
        z1, z2, out = (t.detach() for t in _forward(x, net))
        lam = torch.softmax(out, dim=1) - torch.nn.functional.one_hot(y, n_classes)
        for s in range(n):
            for j in range(h2):
                if z2[s, j] > 0:
                    ref_phi["h2"][e, s, j] = sum(lam[s, k] * w3[j, k] for k in range(n_classes))
            for j in range(h1):
                if z1[s, j] > 0:
                    ref_phi["h1"][e, s, j] = sum(
                        lam[s, k] * w2[j, m] * w3[m, k]
                        for m in range(h2)
                        if z2[s, m] > 0
                        for k in range(n_classes)
                    )

    for name, (z, g) in layers.items():
        on = is_on(z, "relu")
        # φ from autograd equals the path formula on active nodes
        torch.testing.assert_close(
            torch.where(on, ref_grad[name], 0.0), ref_phi[name], atol=1e-12, rtol=0
        )
        # summed over two chunks, as callers do
        sums = class_cost_sums(g[:, :10], on[:, :10], y[:10], n_classes) + class_cost_sums(
            g[:, 10:], on[:, 10:], y[10:], n_classes
        )
        counts = class_on_counts(on, y, n_classes)
        got = node_cost(sums, counts)
        assert got.dtype == torch.float64 and got.shape == (2, z.shape[2], n_classes)

        expected = torch.full((2, z.shape[2], n_classes), NAN, dtype=torch.float64)
        for e in range(2):
            for j in range(z.shape[2]):
                for c in range(n_classes):
                    members = [s for s in range(n) if y[s] == c and z[e, s, j] > 0]
                    if members:
                        expected[e, j, c] = sum(ref_grad[name][e, s, j] for s in members) / len(
                            members
                        )
        _assert_close_nan(got, expected, atol=1e-12)
        assert torch.isfinite(expected).sum() >= 4  # the comparison is not vacuous


def test_class_cost_sums_ignores_off_samples():
    # off-samples carry a non-zero gradient (e.g. post-activation derivative): it must not count
    dl = torch.tensor([[[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]]])  # (1, 3, 2)
    on = torch.tensor([[[True, False], [False, True], [True, True]]])
    labels = torch.tensor([0, 0, 1])
    got = class_cost_sums(dl, on, labels, 2)
    assert got.tolist() == [[[1.0, 100.0], [20.0, 200.0]]]
    counts = class_on_counts(on, labels, 2)
    _assert_close_nan(node_cost(got, counts), [[[1.0, 100.0], [20.0, 200.0]]])
    _assert_close_nan(
        node_cost(got, torch.tensor([[[2, 0], [1, 4]]])), [[[0.5, NAN], [20.0, 50.0]]]
    )


# --------------------------------------------------------------------------- is_on


def test_is_on_relu_and_linear():
    z = torch.tensor([-1.0, 0.0, 0.3, 0.5, 2.0])
    assert is_on(z).tolist() == [False, False, True, True, True]
    assert is_on(z, "relu").dtype == torch.bool
    assert is_on(z, "linear").tolist() == [False, False, True, True, True]
    assert is_on(z, "relu", threshold=0.4).tolist() == [False, False, False, True, True]


def test_is_on_sigmoid():
    z = torch.tensor([[-1.0, 0.0], [0.3, 1.0], [1.5, 30.0]])
    # default: σ(z) > 0.5 ⇔ z > 0 (not z > 0.5 on the pre-activation: 0.3 is on)
    assert is_on(z, "sigmoid").tolist() == [[False, False], [True, True], [True, True]]
    # threshold 0.8 on the activation: z > log(0.8 / 0.2) = log 4 ≈ 1.386
    assert is_on(z, "sigmoid", threshold=0.8).tolist() == [
        [False, False],
        [False, False],
        [True, True],
    ]
    # threshold 0.2: z > log(0.2 / 0.8) ≈ -1.386
    assert is_on(z, "sigmoid", threshold=0.2).all()


def test_is_on_tanh_and_errors():
    z = torch.tensor([-0.2, 0.1, 0.6])
    assert is_on(z, "tanh").tolist() == [False, True, True]
    # tanh(z) > 0.5 ⇔ z > atanh(0.5) ≈ 0.549
    assert is_on(z, "tanh", threshold=0.5).tolist() == [False, False, True]
    with pytest.raises(ValueError):
        is_on(z, "gelu")
    with pytest.raises(ValueError):
        is_on(z, "sigmoid", threshold=1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(5)
    on = torch.rand(2, 30, 5, generator=gen) < 0.5
    labels = torch.randint(0, 3, (30,), generator=gen)
    dl = torch.randn(2, 30, 5, generator=gen)
    cpu = class_on_counts(on, labels, 3)
    gpu = class_on_counts(on.cuda(), labels.cuda(), 3)
    assert gpu.cpu().tolist() == cpu.tolist()
    cc = class_counts(labels.cuda(), 3)
    _assert_close_nan(predictability(gpu, cc).cpu(), predictability(cpu, labels.bincount()))
    torch.testing.assert_close(
        class_cost_sums(dl.cuda(), on.cuda(), labels.cuda(), 3).cpu(),
        class_cost_sums(dl, on, labels, 3),
    )
