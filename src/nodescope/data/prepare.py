"""Device-resident data for one stacked group: every split, every member's variant of it.

Members of a group may see different inputs (generator sigma, data seed, input noise) or
labels (label noise). Inputs are stored once per distinct variant, shape (V, N, F), and
each member points at its variant, so members that share data share memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..spec.model import Data, Spec
from . import synthetic
from .seeds import numpy_rng

SPLITS = ("train", "val", "test")


@dataclass
class HostSplit:
    x: np.ndarray  # (N, F) float32
    labels: np.ndarray  # (N,) int64
    patterns: np.ndarray | None  # (N,) int64 sub-class pattern (synthetic) or digit


@dataclass
class SplitData:
    x: torch.Tensor  # (V, N, F) inputs, one row block per distinct variant
    variant: torch.Tensor  # (E,) which variant each member sees
    labels: torch.Tensor  # (N,) true classes
    targets: torch.Tensor  # (E, N) the labels each member is trained and scored on
    patterns: torch.Tensor | None  # (N,)

    @property
    def size(self) -> int:
        return self.x.shape[1]

    def inputs(self, index: torch.Tensor) -> torch.Tensor:
        """Inputs for sample indices (B,) shared by all members, or (E, B) per member.

        Returns (B, F) when every member sees the same samples of one variant (the
        model broadcasts it), else (E, B, F).
        """
        if index.dim() == 1 and self.x.shape[0] == 1:
            return self.x[0, index]
        if index.dim() == 1:
            return self.x[self.variant][:, index]
        # rows of the flattened (V * N, F) inputs: index_select is ~5x faster than the
        # advanced indexing x[variant[:, None], index] it equals
        rows = (self.variant[:, None] * self.size + index).reshape(-1)
        flat = self.x.view(-1, self.x.shape[-1])
        return flat.index_select(0, rows).view(*index.shape, -1)

    def range_inputs(self, start: int, stop: int) -> torch.Tensor:
        """Inputs of samples start..stop-1, as `inputs` gives them for that range: a view
        (B, F) when there is one variant (eval passes read whole splits in chunks, and a
        gathered copy of every chunk cost more than its matmul), else (E, B, F)."""
        if self.x.shape[0] == 1:
            return self.x[0, start:stop]
        return self.x[:, start:stop][self.variant]


@dataclass
class GroupData:
    splits: dict[str, SplitData]
    n_classes: int
    class_names: list[str]
    corrupted: np.ndarray | None  # (E, N_train) bool: labels replaced by label noise
    centroids: np.ndarray | None  # (n_patterns, F) noiseless synthetic centroids
    pattern_classes: np.ndarray  # (n_patterns,) class of each hidden pattern (digit for IDX)


def synthetic_masks(data: Data) -> np.ndarray:
    """The pattern masks of a synthetic data set; they depend on data.seed only."""
    rng = numpy_rng(data.seed, "masks")
    return synthetic.pattern_masks(
        data.n_dim, data.n_patterns, data.pattern_length, data.overlap, rng
    )


def _synthetic_split(data: Data, split: str, sigma: float) -> HostSplit:
    """One split at noise level sigma. The sequence of patterns depends on data.seed only,
    so members of a noise sweep share labels; the noise itself is one stream scaled by
    sigma (noise_draws = "common") or a stream of its own per sigma ("independent")."""
    size = dict(zip(SPLITS, data.sizes(), strict=True))[split]
    rng = numpy_rng(data.seed, split)
    noise_rng = None
    if data.noise_draws == "independent":
        noise_rng = numpy_rng(data.seed, split, round(sigma * 1e9))
    return synthetic_sample(data, size, sigma, rng, noise_rng)


def synthetic_sample(
    data: Data,
    size: int,
    sigma: float,
    rng: np.random.Generator,
    noise_rng: np.random.Generator | None = None,
) -> HostSplit:
    """`size` balanced samples of the spec's patterns (same masks) at noise level sigma;
    the noise comes from `noise_rng` when given, else from `rng` after the patterns."""
    masks = synthetic_masks(data)
    patterns = synthetic.balanced_patterns(size, data.n_patterns, rng)
    x = synthetic.draw_samples(
        masks, patterns, data.n_dim, data.delta, sigma, noise_rng if noise_rng else rng
    )
    labels = synthetic.pattern_class(patterns, data.n_patterns, data.n_classes)
    return HostSplit(x, labels.astype(np.int64), patterns.astype(np.int64))


def pattern_labels(data: Data) -> np.ndarray:
    """The class of every hidden pattern of a data spec, pattern k at index k: synthetic
    patterns as generated (k // (n_patterns / n_classes)); for IDX data the digits are
    the patterns, labels themselves or, for aggregated_mnist, digit // 5."""
    if data.name == "synthetic_patterns":
        patterns = np.arange(data.n_patterns)
        return synthetic.pattern_class(patterns, data.n_patterns, data.n_classes).astype(np.int64)
    digits = np.arange(10, dtype=np.int64)
    return digits // 5 if data.name == "aggregated_mnist" else digits


def idx_source(data_name: str) -> str:
    """The IDX data set a spec's data.name reads (aggregated_mnist is MNIST)."""
    return "fashion_mnist" if data_name == "fashion_mnist" else "mnist"


def _idx_splits(data: Data) -> dict[str, HostSplit]:
    from .fetch import load_idx_dataset

    raw = load_idx_dataset(idx_source(data.name))
    train_n, val_n, test_n = data.sizes()
    order = np.random.default_rng(data.val_seed).permutation(len(raw["train"][1]))
    test_order = np.random.default_rng(data.val_seed).permutation(len(raw["test"][1]))
    picks = {
        "train": (raw["train"], order[val_n : val_n + train_n]),
        "val": (raw["train"], order[:val_n]),
        "test": (raw["test"], test_order[:test_n]),
    }
    images = {s: _float_rows(img, i, data.scaling == "unit") for s, ((img, _), i) in picks.items()}
    if data.scaling == "standard":
        mean = images["train"].mean(0)
        std = images["train"].std(0)
        std = np.where(std > 1e-6, std, 1.0)
        images = {s: (x - mean) / std for s, x in images.items()}
    out = {}
    for split, ((_, digits), index) in picks.items():
        digit = digits[index].astype(np.int64)
        labels = digit // 5 if data.name == "aggregated_mnist" else digit
        out[split] = HostSplit(images[split].astype(np.float32, copy=False), labels, digit)
    return out


def _float_rows(images: np.ndarray, index: np.ndarray, unit: bool) -> np.ndarray:
    """images[index] as float32, divided by 255 if `unit`: the same numbers as numpy's
    gather, astype and in-place division (each step is exact or correctly rounded), in a
    third of the time of a fresh process, where numpy's single thread spent 0.5 s
    first-touching the 150 MB of new pages."""
    rows = torch.from_numpy(images).index_select(0, torch.from_numpy(index))
    x = rows.to(torch.float32)
    return (x.div_(255.0) if unit else x).numpy()


def _stacked(inputs: list[np.ndarray]) -> np.ndarray:
    """(variants, N, F); a single variant is a view, not a copy."""
    return inputs[0][None] if len(inputs) == 1 else np.stack(inputs)


@dataclass(frozen=True)
class InputVariant:
    """What decides a member's inputs of one split; members with equal variants share them."""

    sigma: float | None  # synthetic generator noise (None for IDX data)
    input_noise: float
    noise_seed: int | None  # the training seed, when input noise is drawn

    @classmethod
    def of(cls, spec: Spec, split: str) -> InputVariant:
        train = split == "train"
        data = spec.data
        test_sigma = data.sigma if data.sigma_test is None else data.sigma_test
        sigma = (data.sigma if train else test_sigma) if data.name == "synthetic_patterns" else None
        noise = spec.noise.input_sigma_train if train else spec.noise.input_sigma_test
        return cls(sigma, noise, spec.training.seed if noise > 0 else None)


def _with_input_noise(x: np.ndarray, sigma: float, seed: int | None, split: str) -> np.ndarray:
    if sigma == 0:
        return x
    rng = numpy_rng(seed, "input_noise", SPLITS.index(split))
    return (x + sigma * rng.standard_normal(x.shape)).astype(np.float32)


def _noisy_labels(labels: np.ndarray, fraction: float, n_classes: int, seed: int):
    """Replace the labels of round(fraction * N) random samples by uniform random classes.

    A replaced label may equal the true one by chance (probability 1 / n_classes).
    """
    rng = numpy_rng(seed, "label_noise")
    corrupted = np.zeros(len(labels), dtype=bool)
    corrupted[rng.permutation(len(labels))[: round(fraction * len(labels))]] = True
    targets = labels.copy()
    targets[corrupted] = rng.integers(0, n_classes, corrupted.sum())
    return targets, corrupted


def _targets(specs: list[Spec], labels: np.ndarray, split: str, n_classes: int):
    """Each member's labels of the split, and (train only) which ones label noise replaced."""
    targets, corrupted = [], []
    for spec in specs:
        if split == "train" and spec.noise.label_fraction > 0:
            t, c = _noisy_labels(labels, spec.noise.label_fraction, n_classes, spec.training.seed)
        else:
            t, c = labels, np.zeros(len(labels), dtype=bool)
        targets.append(t)
        corrupted.append(c)
    return np.stack(targets), np.stack(corrupted)


def build_group_data(
    specs: list[Spec], device: torch.device, dtype: torch.dtype = torch.float32
) -> GroupData:
    """All splits of one group on `device`, one input block per distinct InputVariant;
    inputs in `dtype` (the training dtype)."""
    first = specs[0].data
    idx_splits = _idx_splits(first) if first.name != "synthetic_patterns" else None
    generated: dict[tuple[str, float], HostSplit] = {}
    sizes = dict(zip(SPLITS, first.sizes(), strict=True))
    splits, corrupted = {}, None
    for split in (s for s in SPLITS if sizes[s] > 0):
        index_of: dict[InputVariant, int] = {}
        inputs, base = [], None
        for spec in specs:
            variant = InputVariant.of(spec, split)
            if variant in index_of:
                continue
            if idx_splits is not None:
                base = idx_splits[split]
            else:
                if (split, variant.sigma) not in generated:
                    generated[split, variant.sigma] = _synthetic_split(first, split, variant.sigma)
                base = generated[split, variant.sigma]
            index_of[variant] = len(inputs)
            inputs.append(_with_input_noise(base.x, variant.input_noise, variant.noise_seed, split))
        targets, replaced = _targets(specs, base.labels, split, first.num_classes)
        if split == "train" and any(s.noise.label_fraction > 0 for s in specs):
            corrupted = replaced
        splits[split] = SplitData(
            x=torch.from_numpy(_stacked(inputs)).to(device=device, dtype=dtype).contiguous(),
            variant=torch.tensor(
                [index_of[InputVariant.of(s, split)] for s in specs], device=device
            ),
            labels=torch.from_numpy(base.labels).to(device),
            targets=torch.from_numpy(targets).to(device),
            patterns=None if base.patterns is None else torch.from_numpy(base.patterns).to(device),
        )
    cents = None
    if first.name == "synthetic_patterns":
        cents = synthetic.centroids(synthetic_masks(first), first.n_dim, first.delta)
    return GroupData(
        splits=splits,
        n_classes=first.num_classes,
        class_names=first.class_names(),
        corrupted=corrupted,
        centroids=cents,
        pattern_classes=pattern_labels(first),
    )
