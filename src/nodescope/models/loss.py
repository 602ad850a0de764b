"""Per-sample losses and predictions of the stacked outputs (E, B, K)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_sample_loss(out: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """(E, B) loss of every member on every sample.

    mse: mean_k (y_k - onehot(t)_k)^2 with identity outputs (torch's MSELoss per sample);
    ce:  -log softmax(y)_t;
    bce: -t log sigmoid(y) - (1-t) log(1 - sigmoid(y)) on the single output.
    """
    if kind == "ce":
        return F.cross_entropy(out.transpose(1, 2), targets, reduction="none")
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(
            out[..., 0], targets.to(out.dtype), reduction="none"
        )
    onehot = F.one_hot(targets, out.shape[-1]).to(out.dtype)
    return ((out - onehot) ** 2).mean(-1)


def predictions(out: torch.Tensor, kind: str) -> torch.Tensor:
    """(E, B) predicted class: sigmoid output > 0.5 for bce, argmax otherwise."""
    if kind == "bce":
        return (out[..., 0] > 0).long()
    return out.argmax(-1)


def n_outputs(kind: str, n_classes: int) -> int:
    return 1 if kind == "bce" else n_classes
