"""Per-class sums of a (member, sample, node) table: the one reduction every probe shares.

Σ_s [y_s = c] · t[e, s, h] is one (C, N) × (E, N, H) product with the one-hot labels,
written so that the table is read in its own layout: `torch.einsum("enh,nc->ehc")` first
copied the table into an (E, H, N) order (6 ms for 3 × 4,096 × 80 float64 on a 2-core
CPU, against 0.2 ms for the product below in float32).
"""

from __future__ import annotations

import torch

# Sums of 0/1 values are exact in float32 while every partial sum stays below 2^24.
EXACT_FLOAT32_COUNT = 2**24


def class_sums(
    table: torch.Tensor, labels: torch.Tensor, n_classes: int, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """(E, N, H) table, (N,) integer labels -> (E, H, C) sums per class, in `dtype` (by
    default the table's). A float table summed in a wider dtype is converted one member at
    a time, each member's block summed while it is still in cache: a 9 × 2,000 × 1,000
    float32 stack converted to float64 first and then summed took 47 ms, one member at a
    time 11 ms (2-core CPU)."""
    dtype = dtype or table.dtype
    onehot = torch.nn.functional.one_hot(labels.to(table.device, torch.int64), n_classes)
    onehot = onehot.T.to(dtype)
    if table.dtype == dtype:
        return torch.matmul(onehot, table).transpose(1, 2)
    out = torch.empty(table.shape[0], n_classes, table.shape[2], dtype=dtype, device=table.device)
    for e, member in enumerate(table.unbind(0)):
        torch.mm(onehot, member.to(dtype), out=out[e])
    return out.transpose(1, 2)


def count_dtype(n_samples: int) -> torch.dtype:
    """The narrowest float in which a count over n_samples 0/1 values is exact: converting
    a bool table to float32 is also 18x faster than to float64 on the CPU."""
    return torch.float32 if n_samples < EXACT_FLOAT32_COUNT else torch.float64


def class_counts_of(on: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(E, N, H) bool or 0/1 -> (E, H, C) int64: Σ_s [y_s = c] · on[e, s, h], exact."""
    dtype = count_dtype(on.shape[1])
    counts = class_sums(on if on.dtype == dtype else on.to(dtype), labels, n_classes)
    return counts.round().to(torch.int64)
