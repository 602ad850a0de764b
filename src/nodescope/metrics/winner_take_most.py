"""Measurements of the winner-take-most paper (pure tensor functions).

"Towards understanding the winner-take-most behavior of neural network representations":
per-pattern mean pre-activations, the mean sign of dL/da over training, sample
difficulty and the loss share of difficult samples.
"""

from __future__ import annotations

import torch

from .class_sums import class_sums


def pattern_sums(z: torch.Tensor, patterns: torch.Tensor, n_patterns: int) -> torch.Tensor:
    """Σ_{s: p(s)=k} z^s_i for every member, node and pattern k: (E, B, H) -> (E, H, P) float64.

    Divided by the pattern counts this is the mean pre-activation μ_{i,k} of pattern k at
    node i (the curves of the paper's Figs. 2-4).
    """
    return class_sums(z, patterns, n_patterns, torch.float64)


def accumulate_signs(
    sums: torch.Tensor,
    counts: torch.Tensor,
    index: torch.Tensor,
    grad: torch.Tensor,
    active: torch.Tensor | None = None,
    in_order: bool = False,
) -> None:
    """Add sign(∂L/∂a) of one member's training step to its per-sample running sums, in
    place.

    sums (N, H) and counts (N,) accumulate over steps; index (B,) are the batch's sample
    indices, grad (B, H) = ∂L/∂a for those samples (any positive scaling of L, e.g. the
    batch mean, leaves the sign unchanged). A member with active = False (a 0-d bool
    tensor, applied as a factor so it is never read on the host) adds nothing. The paper's
    mean derivative sign is sums / counts. `in_order` says that index is 0..N-1 (a full
    batch), so the sums are added in place without an index. One member at a time keeps
    its signs in cache: over a full batch of 3 × 5,000 × 1,000 the whole-stack sign and
    sum took 30 ms a step, this 6 ms (CPU).
    """
    sign = torch.sign(grad)
    ones = torch.ones(index.shape, dtype=counts.dtype, device=counts.device)
    if active is not None:
        sign.mul_(active)
        ones.mul_(active)
    if in_order:
        sums += sign
        counts += ones
    else:
        sums.index_add_(0, index, sign.to(sums.dtype))
        counts.index_add_(0, index, ones)


def difficulty(
    x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, centroid_class: torch.Tensor
) -> torch.Tensor:
    """Difficulty coefficient of every sample (paper eq. 2):

        d(x) = ⟨x, Σ_{k ∉ C(x)} c_k⟩ − ⟨x, Σ_{k ∈ C(x)} c_k⟩

    with c_k the noiseless pattern centroids and C(x) the patterns of x's class.
    x (..., N, F), labels (N,), centroids (P, F), centroid_class (P,) -> (..., N).
    Difficult samples have d > 0.
    """
    n_classes = int(centroid_class.max()) + 1
    onehot = torch.nn.functional.one_hot(centroid_class, n_classes).to(centroids.dtype)
    class_sums = onehot.T @ centroids  # (C, F): Σ_{k in class c} c_k
    own = class_sums[labels]  # (N, F)
    others = class_sums.sum(0) - own
    return ((x * (others - own).to(x.dtype)).sum(-1)).to(torch.float64)


def loss_shares(per_sample: torch.Tensor, difficult: torch.Tensor) -> torch.Tensor:
    """Share of the total loss carried by difficult (d > 0) and regular samples.

    per_sample (E, N) losses, difficult (E, N) bool -> (E, 2): [Σ_{d>0} L_s, Σ_{d≤0} L_s] / Σ L_s.
    """
    per_sample = per_sample.to(torch.float64)
    hard = (per_sample * difficult).sum(-1)
    total = per_sample.sum(-1)
    return torch.stack([hard / total, (total - hard) / total], dim=-1)


def wtm_index(means: torch.Tensor, pattern_class: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Winner-take-most index of a node for each class c:

        W_c = 2 max(0, min(max_{k∈c} μ_k − max_{k∉c} μ_k, min_{k∉c} μ_k − min_{k∈c} μ_k))
              / (max_{k∈c} μ_k − min_{k∈c} μ_k)

    μ (..., P) are the node's mean pre-activations per pattern. W_c > 0 when the patterns
    of class c overhang all patterns of the other classes on both sides: winners pushed
    above every other-class pattern and losers below them, the node separating patterns
    of one class more strongly than the classes. W_c = 0 for a class detector (class c
    on one side) and for a node that does not separate anything; W_c = 1 when the other
    classes sit at one point in the middle of class c's range; 0 when class c's
    patterns share one value (no spread). Returns (..., C).

    nodescope's own index: the paper plots μ_k and describes the behaviour in words but
    defines no number for it.
    """
    out = []
    for c in range(n_classes):
        own, other = means[..., pattern_class == c], means[..., pattern_class != c]
        up = own.amax(-1) - other.amax(-1)
        down = other.amin(-1) - own.amin(-1)
        spread = own.amax(-1) - own.amin(-1)
        overhang = torch.clamp(torch.minimum(up, down), min=0)
        out.append(torch.where(spread > 0, 2 * overhang / spread, 0.0 * spread))
    return torch.stack(out, dim=-1)
