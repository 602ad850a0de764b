"""Estimated size of a run's stored results, from the spec alone (no torch)."""

from __future__ import annotations

from .checkpoints import checkpoint_steps, weight_steps
from .model import Spec

BYTES_PER_VALUE = 8  # float64 before compression


def values_per_member(spec: Spec) -> dict[str, int]:
    """Number of stored values per member for each probe (and the always-stored finals)."""
    t = len(checkpoint_steps(spec))
    widths = spec.model.hidden_widths()
    layers, nodes, classes = len(widths), max(widths), spec.data.num_classes
    sizes = {"final": 2 * 3 + 2}
    probes = spec.probes
    if probes.curves:
        sizes["curves"] = 2 * len(probes.curves.splits) * t
    if probes.activation_fraction:
        sizes["activation_fraction"] = t * layers * nodes * classes
    if probes.sample_sets:
        per_class = 1 + probes.sample_sets.node_cost
        per_node = 4 + 2 * probes.sample_sets.churn
        sizes["sample_sets"] = t * layers * nodes * (per_class * classes + per_node)
    train, _, test = spec.data.sizes()
    n_patterns = spec.data.n_patterns if spec.data.name == "synthetic_patterns" else 10
    if probes.pattern_preactivation:
        sizes["pattern_preactivation"] = t * layers * nodes * n_patterns
    if probes.grad_sign:
        sizes["grad_sign"] = 2 * min(probes.grad_sign.top_k, widths[-1]) * (train + 1)
    if probes.difficulty:
        sizes["difficulty"] = train + 2 * t
    if probes.noise_robustness:
        sizes["noise_robustness"] = len(probes.noise_robustness.sigma_test)
    if probes.activation_gaps:
        # per pair: 6 indices and flags; before and after normalisation 2 α, 2 φ, 4 conditions
        pairs = gap_pairs(probes.activation_gaps)
        sizes["activation_gaps"] = pairs * (6 + 2 * 8) + 2 * 2 * 4 + 2 + 2 * 2 * classes + 1
    if probes.activation_fraction and probes.activation_fraction.output_layer:
        sizes["activation_fraction"] += t * classes * classes
    if probes.perplexity:
        slots = 1 if probes.perplexity.at == "best" else t
        sizes["perplexity"] = 3 * slots * layers * classes + classes
    if probes.node_classifiers:
        slots = 1 if probes.node_classifiers.at == "best" else t
        sizes["node_classifiers"] = slots * layers * 3 * 3  # systems x splits
    if spec.training.early_stopping:
        sizes["final"] += 2  # best_val_error, best_epoch
    return sizes


def gap_pairs(options) -> int:
    """Most sample pairs the activation_gaps probe stores per member: every pair of its
    correctly classified and misclassified samples (cross-class pairs only, in fact)."""
    n = options.n_samples + options.n_misclassified
    return n * (n - 1) // 2


def parameters_per_member(spec: Spec) -> int:
    """Weights, biases and batch-norm parameters and statistics of one member."""
    m = spec.model
    widths = m.hidden_widths()
    outputs = 1 if spec.training.loss == "bce" else spec.data.num_classes
    sizes = [spec.data.num_features, *widths, outputs]
    count = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    biased = {"all": widths, "first": widths[:1], "none": []}[m.bias]
    count += sum(biased) + (outputs if m.output_bias else 0)
    if m.batch_norm:
        count += 4 * sum(widths)
    return count


def weight_bytes(spec: Spec, n_members: int) -> int:
    """Size of the stored weights (checkpoints.weights): float32, every chosen checkpoint
    plus the final network."""
    if not spec.checkpoints.weights:
        return 0
    snapshots = len(weight_steps(spec)) + 1
    return n_members * snapshots * parameters_per_member(spec) * 4


def estimated_bytes(spec: Spec, n_members: int) -> int:
    return n_members * sum(values_per_member(spec).values()) * BYTES_PER_VALUE


def training_bytes_per_member(spec: Spec) -> int:
    """Estimated device memory one member of a stacked group needs while it trains.

    nodescope's own estimate, for splitting groups (device.memory_budget_gb): parameters
    with their gradients, optimiser moments and, under early stopping, the best weights;
    activations, pre-activations and their gradients of one training batch; the kept
    activations of one eval chunk; the probes' accumulators. The data set is shared by
    the group and not counted. Real use is within about 2x of it for these MLPs.
    """
    value = 8 if spec.training.dtype == "float64" else 4
    copies = 2 + (2 if spec.optimiser.base == "adam" else 1)  # weights, gradients, moments
    copies += 1 if spec.training.early_stopping else 0
    units = sum(spec.model.hidden_widths()) + spec.data.num_classes
    train_acts = spec.batch_size() * units * 3
    eval_acts = min(spec.training.eval_chunk, sum(spec.data.sizes())) * units * 2
    parameters = parameters_per_member(spec) * copies
    probes = sum(values_per_member(spec).values()) * BYTES_PER_VALUE
    return (parameters + train_acts + eval_acts) * value + probes
