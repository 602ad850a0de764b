"""The per-class sum every probe shares, against explicit loops."""

import torch

from nodescope.metrics.class_sums import class_counts_of, class_sums, count_dtype


def _loop(table, labels, n_classes):
    E, N, H = table.shape
    out = torch.zeros(E, H, n_classes, dtype=torch.float64)
    for e in range(E):
        for s in range(N):
            for h in range(H):
                out[e, h, labels[s]] += float(table[e, s, h])
    return out


def test_class_sums_match_a_loop_over_members_samples_and_nodes():
    g = torch.Generator().manual_seed(3)
    table = torch.randn(2, 13, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, 2, 1, 0, 2, 2, 2, 1, 0, 2, 3, 3])
    got = class_sums(table, labels, 5)  # class 4 has no samples
    assert got.shape == (2, 5, 5) and got.dtype == torch.float64
    torch.testing.assert_close(got, _loop(table, labels, 5), rtol=0, atol=1e-12)
    assert torch.equal(got[..., 4], torch.zeros(2, 5, dtype=torch.float64))


def test_a_float32_table_summed_in_float64_keeps_every_digit():
    g = torch.Generator().manual_seed(4)
    # values of very different size: a float32 sum would lose the small ones
    table = torch.randn(3, 11, 4, generator=g) * torch.tensor([1e8, 1.0, 1e-3, 7.0])
    labels = torch.tensor([1, 0, 1, 1, 2, 0, 1, 1, 2, 2, 1])
    got = class_sums(table, labels, 3, torch.float64)
    assert got.shape == (3, 4, 3) and got.dtype == torch.float64
    torch.testing.assert_close(got, _loop(table, labels, 3), rtol=1e-15, atol=1e-9)
    assert not torch.allclose(class_sums(table, labels, 3).double(), got, rtol=1e-12, atol=0)


def test_class_counts_are_exact_integers_per_member():
    on = torch.tensor(
        [
            [[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]],
            [[0, 0, 1], [0, 0, 1], [1, 0, 1], [0, 1, 1]],
        ],
        dtype=torch.bool,
    )
    labels = torch.tensor([1, 0, 1, 1])
    got = class_counts_of(on, labels, 2)
    assert got.dtype == torch.int64
    # member 0, node 0: samples 0 and 3 (class 1) and 1 (class 0) are on
    assert got[0].tolist() == [[1, 2], [1, 2], [0, 3]]
    assert got[1].tolist() == [[0, 1], [0, 1], [1, 3]]


def test_counts_switch_to_float64_where_float32_stops_being_exact():
    assert count_dtype(2**24 - 1) == torch.float32
    assert count_dtype(2**24) == torch.float64
    # the reason: float32 cannot hold 2^24 + 1
    assert float(torch.tensor(2**24, dtype=torch.float32) + 1) == 2**24
