"""Activation gaps of Davel, "Activation gap generators in neural networks" (2020).

A ReLU network whose last hidden layer is a 2-node *summary layer* (nodes j and k)
followed by a linear output layer without bias. For a sample s of class c and a sample
s′ of class c′ ≠ c:

* activation gaps (Eq. 7):  α_jcc′ = a_j(s) − a_j(s′),  α_kcc′ = a_k(s) − a_k(s′);
* weight gaps (Eq. 8):      φ_jcc′ = w_jc − w_jc′,       φ_kcc′ = w_kc − w_kc′,
  with φ_kc′c = −φ_kcc′.

What decides the pair. With no output bias, the logit of class c is o_c = a_j w_jc +
a_k w_kc, so "s scores higher for c than for c′" is o_c(s) > o_c′(s), i.e.
a_j(s) φ_jcc′ + a_k(s) φ_kcc′ > 0 (Eq. 9), and "s′ scores higher for c′ than for c" is
a_j(s′) φ_jcc′ + a_k(s′) φ_kcc′ < 0 (Eq. 10; together Eq. 14). A correctly classified
sample (its class's output above every other output, see `strictly_correct`) meets its
half for every other class. The paper also
lists o_c > 0 (Eqs. 11–12); argmax does not need positive logits, so nodescope leaves
them out.

Conditions (re-derived here; the equations of our copy of the paper are garbled):

* Eq. 15  φ_jcc′ φ_kc′c > 0. Necessary: with a ≥ 0 (ReLU), φ_jcc′ and φ_kcc′ of equal
  sign (or a zero) make Eq. 9 or Eq. 10 impossible.
* Eq. 16  α_jcc′ φ_jcc′ > α_kcc′ φ_kc′c: Eq. 9 minus Eq. 10. Necessary, not sufficient:
  it holds whenever the margin of s exceeds the margin of s′, even if s′ is on the
  wrong side. nodescope therefore also records the exact pair condition Eq. 9 ∧ Eq. 10
  (`pair_separated`); the paper's remark that Eqs. 15–16 "become the requirements" is
  read here as "are necessary".
* Eqs. 17–18, the ratio form of Eq. 16 given Eq. 15: the activation ratio
  |α_jcc′/α_kcc′| against the weight ratio |φ_kc′c/φ_jcc′| (as in the paper's Fig. 7:
  the activation ratio is larger when φ_jcc′ α_kcc′ > 0, smaller when < 0; the reciprocal
  pair of ratios works with the inequalities swapped). Derivation: φ_jcc′ and φ_kc′c share
  a sign s (Eq. 15). If α_jcc′ α_kcc′ > 0 (Eq. 18), both sides of Eq. 16 have the sign
  t·s with t the sign of the α's, so Eq. 16 ⇔ |α_j/α_k| > |φ_kc′c/φ_j| when
  sign(φ_jcc′ α_kcc′) = t·s > 0 and ⇔ |α_j/α_k| < |φ_kc′c/φ_j| when < 0. If
  α_jcc′ α_kcc′ < 0 (Eq. 17) the sides have opposite signs and Eq. 16 ⇔ α_jcc′ φ_jcc′ > 0;
  the paper states only the sign case, nodescope uses the exact condition. A zero gap
  (both samples off at a node, common with ReLU) is in neither case; nodescope then
  evaluates Eq. 16 with that term zero. So `ratio_form` equals Eq. 15 ∧ Eq. 16.

Every condition is symmetric under swapping j with k and under swapping (s, c) with
(s′, c′); the individual gaps and ratios are not.

Weight normalisation (Sec. 3.3), a function-preserving transform: hidden layer by hidden
layer from the input, each node's in-fan vector (its weights, and its bias as one more
weight where the node has one: nodescope's choice, the paper does not mention biases) is
divided by its norm r and the node's out-fan weights in the next layer are multiplied by
r. ReLU(z/r) = ReLU(z)/r for r > 0, so the outputs are unchanged and every hidden node's
in-fan vector afterwards has norm 1. A node whose in-fan vector is all zero is left as
it is. On the summary layer it maps a_j → a_j/r_j and w_j· → r_j w_j·, so α_jcc′ φ_jcc′,
α_kcc′ φ_kc′c and every condition are unchanged; the gaps and the two ratios are not.
Batch norm is refused (fold it into the linear layers first): nodescope does not fold it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import UserError
from ..models.mlp import StackedMLP

__all__ = [
    "CONDITIONS",
    "activation_gaps",
    "activation_ratio",
    "cross_class_pairs",
    "gap_conditions",
    "in_fan_norms",
    "max_pairs",
    "normalise_sequential",
    "normalise_stacked",
    "pair_separated",
    "pick_samples",
    "strictly_correct",
    "take_pairs",
    "weight_gaps",
    "weight_ratio",
]

CONDITIONS = ("pair_separated", "eq15", "eq16", "ratio_form")
# Elementwise maps f with f(r z) = r f(z) for r > 0: scaling a node commutes with them.
HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Flatten)


# --------------------------------------------------------------------------- normalisation


@torch.no_grad()
def _rescale_nodes(w_in: torch.Tensor, b_in: torch.Tensor | None, w_out: torch.Tensor):
    """In place: divide each node's in-fan vector by its norm r, multiply its out-fan by r.

    w_in (E, fan_in, H), b_in (E, 1, H) or None, w_out (E, H, fan_out); returns r (E, H).
    """
    squares = (w_in**2).sum(1)
    if b_in is not None:
        squares = squares + b_in[:, 0, :] ** 2
    norm = squares.sqrt()
    scale = torch.where(norm > 0, norm, torch.ones_like(norm))
    w_in /= scale[:, None, :]
    if b_in is not None:
        b_in /= scale[:, None, :]
    w_out *= scale[:, :, None]
    return norm


def normalise_stacked(model: StackedMLP, inplace: bool = False) -> StackedMLP:
    """Function-preserving weight normalisation (paper Sec. 3.3) of every member of a
    nodescope StackedMLP: a normalised copy, or `model` itself with `inplace`."""
    if model.batch_norm:
        raise UserError(
            "weight normalisation needs a network without batch norm; fold the batch norm "
            "into the linear layers first"
        )
    if model.activation not in ("relu", "linear"):
        raise UserError(
            f"weight normalisation preserves outputs only for relu or linear activations, "
            f"not {model.activation}"
        )
    out = model if inplace else copy.deepcopy(model)
    for i in range(len(out.widths)):
        b = out.biases[out.bias_of[i]].data if i in out.bias_of else None
        _rescale_nodes(out.weights[i].data, b, out.weights[i + 1].data)
    return out


def _linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers of a (possibly nested) Sequential, checking that everything
    between them is positively homogeneous."""
    layers = []
    for module in model.children():
        if isinstance(module, nn.Sequential):
            layers += _linear_layers(module)
        elif isinstance(module, nn.Linear):
            layers.append(module)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise UserError(
                "weight normalisation needs a network without batch norm; fold the batch "
                "norm into the preceding Linear layer first"
            )
        elif not isinstance(module, HOMOGENEOUS):
            raise UserError(
                f"weight normalisation supports Linear layers with ReLU between them, not "
                f"{type(module).__name__}: it must satisfy f(r z) = r f(z) for r > 0"
            )
    return layers


def normalise_sequential(model: nn.Sequential, inplace: bool = False) -> nn.Sequential:
    """Function-preserving weight normalisation (paper Sec. 3.3) of a plain
    `nn.Sequential` of `nn.Linear` layers with ReLU (or other positively homogeneous
    elementwise maps) between them, as `nodescope.load_model` returns."""
    out = model if inplace else copy.deepcopy(model)
    layers = _linear_layers(out)
    for layer, following in zip(layers, layers[1:], strict=False):
        if following.in_features != layer.out_features:
            raise UserError(
                f"Linear layers do not chain: {layer.out_features} outputs feed "
                f"{following.in_features} inputs"
            )
        # nn.Linear stores (out, in); these views have the stacked (E=1, in, out) layout.
        b = layer.bias.data[None, None, :] if layer.bias is not None else None
        _rescale_nodes(layer.weight.data.T[None], b, following.weight.data.T[None])
    return out


def in_fan_norms(model: StackedMLP) -> list[torch.Tensor]:
    """(E, H_l) norm of every hidden node's in-fan vector (weights and bias), per layer."""
    norms = []
    for i in range(len(model.widths)):
        squares = (model.weights[i].detach() ** 2).sum(1)
        if i in model.bias_of:
            squares = squares + model.biases[model.bias_of[i]].detach()[:, 0, :] ** 2
        norms.append(squares.sqrt())
    return norms


# --------------------------------------------------------------------------- gaps


def take_pairs(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(…, P, 2) rows of values (…, M, 2) at index: (P,) shared, or (…, P) per leading
    index (broadcast over the leading dimensions of values)."""
    if index.dim() == 1:
        return values[..., index, :]
    shape = (*values.shape[:-2], index.shape[-1], 2)
    return values.gather(-2, index[..., None].expand(shape))


def activation_gaps(acts: torch.Tensor, first: torch.Tensor, second: torch.Tensor):
    """Eq. 7: (…, P, 2) α_·cc′ = a(s) − a(s′) of the summary nodes (j, k) for pairs
    s = first[p], s′ = second[p]. acts: (…, N, 2) summary activations; first, second:
    (P,) sample indices, or (…, P)."""
    return take_pairs(acts, first) - take_pairs(acts, second)


def weight_gaps(out_weight: torch.Tensor, label: torch.Tensor, other: torch.Tensor):
    """Eq. 8: (…, P, 2) φ_·cc′ = w_·c − w_·c′ for the summary nodes (j, k), c = label[p],
    c′ = other[p] ((P,) or (…, P)). out_weight: (…, 2, K) weights from the summary nodes
    to the outputs. The k entry is φ_kcc′; Eqs. 15–18 use φ_kc′c = −φ_kcc′."""
    w = out_weight.transpose(-1, -2)  # (…, K, 2)
    return take_pairs(w, label) - take_pairs(w, other)


def strictly_correct(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(…, N) bool: the target class's output is larger than every other output.

    Stricter than argmax, which breaks ties towards the lowest class: with no output bias
    a sample that switches both summary nodes off has all outputs 0, and argmax would call
    it a class-0 sample although Eq. 9 holds for no pair. out: (…, N, K); targets (…, N).
    """
    own = out.gather(-1, targets[..., None])
    others = out.scatter(-1, targets[..., None], float("-inf")).amax(-1, keepdim=True)
    return (own > others)[..., 0]


def pair_separated(a_first: torch.Tensor, a_second: torch.Tensor, phi: torch.Tensor):
    """Eq. 9 ∧ Eq. 10: the first sample (class c) scores higher for c than for c′ and the
    second (class c′) higher for c′ than for c. a_first, a_second: (…, P, 2) summary
    activations of the two samples; phi: (…, P, 2) weight gaps φ_·cc′. Returns (…, P) bool."""
    return ((a_first * phi).sum(-1) > 0) & ((a_second * phi).sum(-1) < 0)


def activation_ratio(alpha: torch.Tensor) -> torch.Tensor:
    """|α_jcc′ / α_kcc′| (the paper's α-ratio, Eq. 18); inf where α_k = 0."""
    return (alpha[..., 0] / alpha[..., 1]).abs()


def weight_ratio(phi: torch.Tensor) -> torch.Tensor:
    """|φ_kc′c / φ_jcc′| (the paper's φ-ratio, Eq. 18); inf where φ_j = 0."""
    return (phi[..., 1] / phi[..., 0]).abs()


def gap_conditions(alpha: torch.Tensor, phi: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eqs. 15, 16 and their ratio form (Eqs. 15 + 17–18), each (…, P) bool.

    alpha, phi: (…, P, 2) activation and weight gaps (j, k) with φ_k = φ_kcc′. The module
    docstring derives the ratio form; it agrees with Eq. 15 ∧ Eq. 16 up to rounding.
    """
    a_j, a_k = alpha[..., 0], alpha[..., 1]
    phi_j, phi_k_rev = phi[..., 0], -phi[..., 1]  # φ_jcc′, φ_kc′c
    eq15 = phi_j * phi_k_rev > 0
    eq16 = a_j * phi_j > a_k * phi_k_rev
    ratio_larger = activation_ratio(alpha) > weight_ratio(phi)
    ratio_smaller = activation_ratio(alpha) < weight_ratio(phi)
    same_sign = a_j * a_k > 0
    eq18 = torch.where(phi_j * a_k > 0, ratio_larger, ratio_smaller)
    eq17 = a_j * phi_j > 0  # also the zero-gap case α_k = 0
    zero_j = a_k * phi_k_rev < 0  # the zero-gap case α_j = 0
    case = torch.where(same_sign, eq18, torch.where(a_j == 0, zero_j, eq17))
    return {"eq15": eq15, "eq16": eq16, "ratio_form": eq15 & case}


# --------------------------------------------------------------------------- pair sampling


def pick_samples(
    correct: torch.Tensor, order: torch.Tensor, n_correct: int, n_misclassified: int
) -> torch.Tensor:
    """(S,) sample indices: the first `n_correct` correctly classified samples in `order`
    (a seeded permutation of the split), then the first `n_misclassified` misclassified
    ones; fewer where the split has fewer. correct: (N,) bool."""
    ranked = correct[order]
    return torch.cat([order[ranked][:n_correct], order[~ranked][:n_misclassified]])


def cross_class_pairs(
    samples: torch.Tensor, labels: torch.Tensor, correct: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair of `samples` from different classes, as (first, second) sample indices
    with the lower class first; pairs of two correctly classified samples come first, then
    pairs with a misclassified sample, each in the order of `samples`. labels, correct: (N,)."""
    i, j = torch.triu_indices(len(samples), len(samples), 1, device=samples.device)
    a, b = samples[i], samples[j]
    keep = labels[a] != labels[b]
    a, b = a[keep], b[keep]
    swap = labels[a] > labels[b]
    first, second = torch.where(swap, b, a), torch.where(swap, a, b)
    both_correct = correct[first] & correct[second]
    order = torch.argsort((~both_correct).to(torch.int8), stable=True)
    return first[order], second[order]


def max_pairs(n_correct: int, n_misclassified: int) -> int:
    """Upper bound of the number of pairs `cross_class_pairs` returns."""
    n = n_correct + n_misclassified
    return n * (n - 1) // 2
