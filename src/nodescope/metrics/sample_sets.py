"""Sample-set measurements of Davel et al., "Exploring neural network training dynamics
through binary node activations" (SACAIR 2020), Section 4.2, plus sample-set churn and
the node-supported cost of Section 3.

Pure torch tensor functions: they know nothing about runners, checkpoints or xarray.
Every function works on a leading "member" dimension E (several networks stacked), or on
arbitrary leading dimensions ``…`` where stated, so that callers stay vectorised.

Notation (hidden layer l, node i, class c, evaluation set S):

* S_c            the samples of class c; |S| = Σ_c |S_c|.
* Ŝ⁽ᶜ⁾_{l,i}      = { s : z^s_{l,i} > 0, s ∈ S_c }   (eq. 8), the class-c part of the
                   sample set; "z > 0" is generalised by :func:`is_on`.
* Ŝ_{l,i}         = ⋃_c Ŝ⁽ᶜ⁾_{l,i}, so |Ŝ_{l,i}| = Σ_c |Ŝ⁽ᶜ⁾_{l,i}|.

Counts are designed to be accumulated over chunks of samples: :func:`class_on_counts`,
:func:`class_counts`, :func:`class_cost_sums` and :func:`churn` return sums that the caller
adds up chunk by chunk before calling the derived measures.
"""

from __future__ import annotations

import math

import torch

from .class_sums import class_counts_of, class_sums

__all__ = [
    "activation_fraction",
    "always_active",
    "churn",
    "class_cost_sums",
    "class_counts",
    "class_on_counts",
    "dead",
    "informativeness",
    "is_on",
    "layer_activation_fraction",
    "layer_mean_defined",
    "node_cost",
    "predictability",
    "same_state_from_activations",
]

_LOG2 = math.log(2.0)


# --------------------------------------------------------------------------- helpers


def _check_labels(labels: torch.Tensor, n: int, n_classes: int) -> None:
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    # The range is read on the host only for CPU labels: on a GPU the read would stall
    # every eval chunk, and the one-hot scatter's device-side check guards it (as in torch).
    on_host = labels.device.type == "cpu"
    if on_host and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]"
        )


def _check_table(name: str, t: torch.Tensor) -> None:
    if t.dim() != 3:
        raise ValueError(f"{name} must have shape (E, N, H), got {tuple(t.shape)}")


def _set_sizes(on_counts: torch.Tensor) -> torch.Tensor:
    """|Ŝ_{l,i}| = Σ_c |Ŝ⁽ᶜ⁾_{l,i}|, shape (…, H)."""
    return on_counts.sum(dim=-1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the last dim where ``mask``; NaN where the mask is empty."""
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    count = mask.sum(dim=-1)
    return total.sum(dim=-1) / count.to(values.dtype)  # 0/0 -> NaN


# --------------------------------------------------------------------------- on / off


def is_on(
    z: torch.Tensor,
    activation: str = "relu",
    threshold: float | None = None,
    dtype: torch.dtype = torch.bool,
) -> torch.Tensor:
    """Binary node state Ẑ from pre-activations z (any shape; returns bool of same shape,
    or 0/1 of `dtype`, written in one pass: a float table for :func:`class_on_counts`
    took 0.7 ms against 2.6 ms for bool then float on 4 × 4,096 × 320, 2-core CPU).

    The paper (Section 4.2) defines Ẑ_{l,i} = 1 if z_{l,i} > 0 and Ẑ_{l,i} = 0 if
    z_{l,i} ≤ 0 for ReLU networks, i.e. the node is "on" when it passes a non-zero value.

    * ``relu`` / ``linear``: Ẑ = [z > t], with t the threshold on the pre-activation
      (default t = 0, the paper's definition).
    * ``sigmoid``: the threshold t applies to the activation σ(z) (default t = 0.5):
      Ẑ = [σ(z) > t] ⇔ [z > logit(t)] with logit(t) = log(t / (1 − t)), t ∈ (0, 1).
      The comparison is done on z so that it does not saturate in low precision.
    * ``tanh``: the threshold applies to tanh(z) (default t = 0):
      Ẑ = [tanh(z) > t] ⇔ [z > atanh(t)], t ∈ (−1, 1).
    """
    act = activation.lower()
    if act in ("relu", "linear", "identity"):
        cut = 0.0 if threshold is None else float(threshold)
    elif act == "sigmoid":
        t = 0.5 if threshold is None else float(threshold)
        if not 0.0 < t < 1.0:
            raise ValueError(f"sigmoid threshold must lie in (0, 1), got {t}")
        cut = math.log(t / (1.0 - t))
    elif act == "tanh":
        t = 0.0 if threshold is None else float(threshold)
        if not -1.0 < t < 1.0:
            raise ValueError(f"tanh threshold must lie in (-1, 1), got {t}")
        cut = math.atanh(t)
    else:
        raise ValueError(
            f"unknown activation {activation!r}; expected relu, linear, sigmoid or tanh"
        )
    if dtype == torch.bool:
        return z > cut
    return torch.gt(z, cut, out=torch.empty(z.shape, dtype=dtype, device=z.device))


def same_state_from_activations(activation: str = "relu", threshold: float | None = None) -> bool:
    """Whether :func:`is_on` of the activations a = rho(z) equals it of z, exactly.

    ReLU with t >= 0: relu(z) > t holds iff z > t (relu(z) is either z or 0 <= t; a NaN
    z gives a NaN a, off in both); linear: a = z. Sigmoid and tanh compare on z (see
    :func:`is_on`). nodescope's use: a ReLU network's eval pass then need not keep z
    beside a, and the ReLU writes over its pre-activations.
    """
    act = activation.lower()
    if act in ("linear", "identity"):
        return True
    return act == "relu" and (threshold is None or threshold >= 0)


# --------------------------------------------------------------------------- counts


def class_on_counts(on: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Per-class sample-set sizes |Ŝ⁽ᶜ⁾_{l,i}| (paper eq. 8), int64 of shape (E, H, C).

    |Ŝ⁽ᶜ⁾_{l,i}| = |{ s ∈ S_c : Ẑ^s_{l,i} = 1 }| = Σ_s Ẑ^s_{l,i} · [y_s = c],

    computed as one matrix product of the one-hot labels (N, C) with the on-table
    (E, N, H), with no loop over samples; exact (float32 below 2²⁴ samples, float64
    above). Call it per chunk of samples and sum the results.

    Args:
        on: bool or 0/1 float (E, N, H), Ẑ per member, sample and node.
        labels: integer (N,), class of every sample, in [0, n_classes).
        n_classes: |C|.
    """
    _check_table("on", on)
    _check_labels(labels, on.shape[1], n_classes)
    return class_counts_of(on, labels, n_classes)


def class_counts(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class sizes |S_c| = |{ s : y_s = c }|, int64 of shape (C,)."""
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    _check_labels(labels, labels.shape[0], n_classes)
    return torch.bincount(labels.to(torch.int64), minlength=n_classes)


def activation_fraction(on_counts: torch.Tensor, class_counts: torch.Tensor) -> torch.Tensor:
    """Class-specific activation fraction (paper eq. 9), float64 of shape (…, H, C).

    f⁽ᶜ⁾_{l,i} = |Ŝ⁽ᶜ⁾_{l,i}| / |S_c|,

    NaN where |S_c| = 0 (class absent from the evaluation set).
    """
    num = on_counts.to(torch.float64)
    den = class_counts.to(device=num.device, dtype=torch.float64)
    nan = torch.full((), float("nan"), dtype=torch.float64, device=num.device)
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), nan)


def dead(on_counts: torch.Tensor, class_counts: torch.Tensor) -> torch.Tensor:
    """Dead (always inactive) nodes: |Ŝ_{l,i}| = Σ_c |Ŝ⁽ᶜ⁾_{l,i}| = 0. Bool of shape (…, H).

    ``class_counts`` is unused but accepted so that ``dead`` and ``always_active`` share a
    signature.
    """
    del class_counts
    return _set_sizes(on_counts) == 0


def always_active(on_counts: torch.Tensor, class_counts: torch.Tensor) -> torch.Tensor:
    """Always-active ("bias") nodes: |Ŝ_{l,i}| = |S| = Σ_c |S_c|. Bool of shape (…, H)."""
    total = class_counts.to(device=on_counts.device).sum()
    return _set_sizes(on_counts) == total


# --------------------------------------------------------------------------- entropies


def _joint(on_counts: torch.Tensor, class_counts: torch.Tensor):
    """Estimated joint e(1, c), e(0, c) (paper eqs. 10-11), each float64 (…, H, C).

    e(1, c) = |Ŝ⁽ᶜ⁾| / |S|,   e(0, c) = (|S_c| − |Ŝ⁽ᶜ⁾|) / |S|.
    """
    on = on_counts.to(torch.float64)
    sc = class_counts.to(device=on.device, dtype=torch.float64)
    n = sc.sum()
    n = torch.where(n > 0, n, torch.ones_like(n))  # |S| = 0: every node is dead -> NaN later
    e1 = on / n
    e0 = (sc - on) / n
    return e0, e1


def _plogp_ratio(e: torch.Tensor, marginal: torch.Tensor) -> torch.Tensor:
    """e · log(e / marginal) with 0 log 0 = 0 (marginal ≥ e, so marginal > 0 where e > 0)."""
    safe = torch.where(marginal > 0, marginal, torch.ones_like(marginal))
    return torch.special.xlogy(e, e / safe)


def _undefined(on_counts: torch.Tensor, class_counts: torch.Tensor) -> torch.Tensor:
    return dead(on_counts, class_counts) | always_active(on_counts, class_counts)


def predictability(on_counts: torch.Tensor, class_counts: torch.Tensor) -> torch.Tensor:
    """Node predictability p_{l,i} (paper eqs. 12 and 14), float64 of shape (…, H).

    p_{l,i} = 1 − H(Ẑ_{l,i} | Y) / log 2, with

    H(Ẑ | Y) ≈ −Σ_{c∈C} Σ_{ẑ∈{0,1}} e(ẑ, c) · log( e(ẑ, c) / Σ_{x∈{0,1}} e(x, c) ),

    e(1, c) = |Ŝ⁽ᶜ⁾| / |S| and e(0, c) = (|S_c| − |Ŝ⁽ᶜ⁾|) / |S| (eqs. 10-11), and
    0 log 0 = 0. Natural logarithms; the ratio does not depend on the base.
    Undefined (NaN) for dead nodes (|Ŝ| = 0) and always-active nodes (|Ŝ| = |S|).
    Computed in float64.
    """
    e0, e1 = _joint(on_counts, class_counts)
    per_class = e0 + e1  # Σ_x e(x, c) = |S_c| / |S|
    h = -(_plogp_ratio(e0, per_class) + _plogp_ratio(e1, per_class)).sum(dim=-1)
    p = 1.0 - h / _LOG2
    return torch.where(_undefined(on_counts, class_counts), torch.nan, p)


def informativeness(on_counts: torch.Tensor, class_counts: torch.Tensor) -> torch.Tensor:
    """Node informativeness u_{l,i} (paper eqs. 13 and 15), float64 of shape (…, H).

    u_{l,i} = 1 − H(Y | Ẑ_{l,i}) / log |C|, with

    H(Y | Ẑ) ≈ −Σ_{ẑ∈{0,1}} Σ_{c∈C} e(ẑ, c) · log( e(ẑ, c) / Σ_{x∈C} e(ẑ, x) ),

    e(1, c) = |Ŝ⁽ᶜ⁾| / |S| and e(0, c) = (|S_c| − |Ŝ⁽ᶜ⁾|) / |S| (eqs. 10-11), and
    0 log 0 = 0. |C| is the number of classes (the last dimension of ``on_counts``),
    whether or not every class occurs in the evaluation set. Undefined (NaN) for dead
    nodes (|Ŝ| = 0), always-active nodes (|Ŝ| = |S|), and when |C| = 1 (log |C| = 0).
    Computed in float64.
    """
    n_classes = on_counts.shape[-1]
    e0, e1 = _joint(on_counts, class_counts)
    row0 = e0.sum(dim=-1, keepdim=True)  # Σ_x e(0, x) = (|S| − |Ŝ|) / |S|
    row1 = e1.sum(dim=-1, keepdim=True)  # Σ_x e(1, x) = |Ŝ| / |S|
    h = -(_plogp_ratio(e0, row0) + _plogp_ratio(e1, row1)).sum(dim=-1)
    undefined = _undefined(on_counts, class_counts)
    if n_classes < 2:
        return torch.full_like(h, float("nan"))
    u = 1.0 - h / math.log(n_classes)
    return torch.where(undefined, torch.nan, u)


# --------------------------------------------------------------------------- layer aggregates


def _node_mask(
    shape_like: torch.Tensor, valid: torch.Tensor | None, *exclude: torch.Tensor
) -> torch.Tensor:
    mask = ~torch.isnan(shape_like)
    if valid is not None:
        mask = mask & valid.to(device=mask.device, dtype=torch.bool)
    for ex in exclude:
        mask = mask & ~ex.to(device=mask.device, dtype=torch.bool)
    return mask


def layer_activation_fraction(
    fraction: torch.Tensor, dead: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Layer activation fraction f_l (paper eq. 16), float64 of shape (…).

    f_{l,i} = (1/|C|) Σ_{c∈C} f⁽ᶜ⁾_{l,i},        f_l = (1/|N_a⁽ˡ⁾|) Σ_{i∈N_a⁽ˡ⁾} f_{l,i},

    where N_a⁽ˡ⁾ is the set of nodes of layer l with |Ŝ_{l,i}| ≠ 0 (dead nodes excluded,
    always-active nodes included). Classes whose fraction is NaN (|S_c| = 0, absent from
    the evaluation set) are left out of the class mean. Padded nodes, marked by
    ``valid = False`` or by an all-NaN fraction row, are left out of N_a. NaN if no node
    qualifies.

    Args:
        fraction: (…, H, C) class-specific activation fractions f⁽ᶜ⁾_{l,i}.
        dead: bool (…, H), |Ŝ_{l,i}| = 0.
        valid: optional bool (…, H), False for padding nodes.
    """
    frac = fraction.to(torch.float64)
    present = ~torch.isnan(frac)
    class_mean = _masked_mean(frac, present)  # f_{l,i}, NaN for all-NaN (padded) rows
    return _masked_mean(class_mean, _node_mask(class_mean, valid, dead))


def layer_mean_defined(
    values: torch.Tensor,
    dead: torch.Tensor,
    always_active: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Layer mean over defined nodes (paper eq. 17: p_l and u_l), float64 of shape (…).

    v_l = (1/|N_b⁽ˡ⁾|) Σ_{i∈N_b⁽ˡ⁾} v_{l,i},

    where N_b⁽ˡ⁾ is the set of nodes of layer l with |Ŝ_{l,i}| ≠ 0 and |Ŝ_{l,i}| ≠ |S|
    (neither dead nor always active); v is p (predictability) or u (informativeness).
    Padded nodes, marked by ``valid = False`` or by a NaN value, are left out. NaN if no
    node qualifies.

    Args:
        values: (…, H) per-node values v_{l,i}.
        dead: bool (…, H), |Ŝ_{l,i}| = 0.
        always_active: bool (…, H), |Ŝ_{l,i}| = |S|.
        valid: optional bool (…, H), False for padding nodes.
    """
    vals = values.to(torch.float64)
    return _masked_mean(vals, _node_mask(vals, valid, dead, always_active))


# --------------------------------------------------------------------------- churn


def churn(prev_on: torch.Tensor, on: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample-set churn between two consecutive checkpoints t−1 and t, int64 (E, H) each.

    entered_{l,i} = |Ŝ_{l,i}(t) ∖ Ŝ_{l,i}(t−1)| = Σ_s [Ẑ^s(t) = 1 ∧ Ẑ^s(t−1) = 0],
    left_{l,i}    = |Ŝ_{l,i}(t−1) ∖ Ŝ_{l,i}(t)| = Σ_s [Ẑ^s(t−1) = 1 ∧ Ẑ^s(t) = 0],

    so that |Ŝ(t)| = |Ŝ(t−1)| + entered − left. Additive over chunks of samples.

    Args:
        prev_on: bool (E, N, H) at the earlier checkpoint.
        on: bool (E, N, H) at the later checkpoint, same samples in the same order.
    """
    _check_table("prev_on", prev_on)
    _check_table("on", on)
    if prev_on.shape != on.shape:
        raise ValueError(f"shape mismatch: prev_on {tuple(prev_on.shape)} vs on {tuple(on.shape)}")
    prev_b = prev_on.to(torch.bool)
    now_b = on.to(torch.bool)
    entered = (now_b & ~prev_b).sum(dim=1, dtype=torch.int64)
    left = (prev_b & ~now_b).sum(dim=1, dtype=torch.int64)
    return entered, left


# --------------------------------------------------------------------------- node-supported cost


def class_cost_sums(
    dl_da: torch.Tensor, on: torch.Tensor, labels: torch.Tensor, n_classes: int
) -> torch.Tensor:
    """Per-class sums of the node-supported cost over the sample set, float64 (E, H, C).

    The paper's sample-specific node-supported cost (Section 3, eq. 2) is

    φ^s_{l,j} = Σ_{p∈P^s_j} λ^s_p Π_{k=1}^{N−l} w_{p_k} = ∂L_s / ∂a^s_{l,j}

    for a node j in the sample set of s (P^s_j: active paths from j to the output,
    λ^s_p: derivative of the loss w.r.t. the network output at the end of path p). For an
    active ReLU node the derivative w.r.t. the pre-activation equals the derivative w.r.t.
    the post-activation, so either may be passed. This returns

    Φ⁽ᶜ⁾_{l,j} = Σ_{s ∈ Ŝ⁽ᶜ⁾_{l,j}} φ^s_{l,j} = Σ_s [y_s = c] · Ẑ^s_{l,j} · ∂L_s/∂a^s_{l,j},

    as one matrix product with the one-hot labels. Sum it over chunks of samples, then
    divide by :func:`class_on_counts` with :func:`node_cost`.

    Args:
        dl_da: float (E, N, H), ∂L_s/∂a^s_{l,j} per member, sample and node (the gradient of
            the *per-sample* loss, e.g. of a loss summed, not averaged, over the batch).
        on: bool (E, N, H), Ẑ^s_{l,j}.
        labels: integer (N,).
        n_classes: |C|.
    """
    _check_table("dl_da", dl_da)
    _check_table("on", on)
    if dl_da.shape != on.shape:
        raise ValueError(f"shape mismatch: dl_da {tuple(dl_da.shape)} vs on {tuple(on.shape)}")
    _check_labels(labels, on.shape[1], n_classes)
    grads = dl_da.to(torch.float64)
    masked = torch.where(on.to(device=grads.device, dtype=torch.bool), grads, 0.0)
    return class_sums(masked, labels, n_classes)


def node_cost(cost_sums: torch.Tensor, on_counts: torch.Tensor) -> torch.Tensor:
    """Mean node-supported cost per class over the sample set, float64 (E, H, C).

    φ̄⁽ᶜ⁾_{l,j} = (1 / |Ŝ⁽ᶜ⁾_{l,j}|) Σ_{s ∈ Ŝ⁽ᶜ⁾_{l,j}} φ^s_{l,j}
               = Φ⁽ᶜ⁾_{l,j} / |Ŝ⁽ᶜ⁾_{l,j}|,

    NaN where |Ŝ⁽ᶜ⁾_{l,j}| = 0.

    The paper defines only the per-sample φ^s_{l,j} (eq. 2); the mean per class over the
    sample set is nodescope's summary, so that one value per node and class can be stored
    at every checkpoint instead of one per sample.
    """
    sums = cost_sums.to(torch.float64)
    counts = on_counts.to(device=sums.device, dtype=torch.float64)
    nan = torch.full((), float("nan"), dtype=torch.float64, device=sums.device)
    return torch.where(counts > 0, sums / torch.where(counts > 0, counts, 1.0), nan)
