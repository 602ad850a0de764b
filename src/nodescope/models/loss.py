"""Per-sample losses and predictions of the stacked outputs (E, B, K)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _BCEWithLogits(torch.autograd.Function):
    """torch's BCE-with-logits value, with the gradient sigmoid(y) - t computed as
    (1 - t) sigmoid(y) - t sigmoid(-y), the same number without its rounding: torch's
    form is exactly 0 once sigmoid(y) rounds to t (|y| > 17 in float32), which would make
    a saturated sample's dL/da sign 0 where the paper's is never 0 (paper 4, Fig. 3).
    nodescope's choice; it changes the training only by those rounded-away gradients."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(y, t)
        return F.binary_cross_entropy_with_logits(y, t, reduction="none")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        y, t = ctx.saved_tensors
        return grad * ((1 - t) * torch.sigmoid(y) - t * torch.sigmoid(-y)), None


def per_sample_loss(out: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """(E, B) loss of every member on every sample.

    mse: mean_k (y_k - onehot(t)_k)^2 with identity outputs (torch's MSELoss per sample);
    ce:  -log softmax(y)_t;
    bce: -t log sigmoid(y) - (1-t) log(1 - sigmoid(y)) on the single output.
    """
    if kind == "ce":
        return F.cross_entropy(out.transpose(1, 2), targets, reduction="none")
    if kind == "bce":
        return _BCEWithLogits.apply(out[..., 0], targets.to(out.dtype))
    onehot = F.one_hot(targets, out.shape[-1]).to(out.dtype)
    return ((out - onehot) ** 2).mean(-1)


def predictions(out: torch.Tensor, kind: str) -> torch.Tensor:
    """(E, B) predicted class: sigmoid output > 0.5 for bce, argmax otherwise."""
    if kind == "bce":
        return (out[..., 0] > 0).long()
    return out.argmax(-1)


def n_outputs(kind: str, n_classes: int) -> int:
    return 1 if kind == "bce" else n_classes
