"""Synthetic hierarchical patterns (Algorithm 1 of the winner-take-most paper).

Each sample is Gaussian noise N(0, sigma^2) in n_dim dimensions plus delta on the
pattern_length entries of its pattern's mask, then L2-normalised. Patterns are
grouped into classes: pattern k (0-based) has class k // (n_patterns / n_classes),
the paper's C = floor(p / (n_pat/2 + 1)) for p = 1..n_pat and two classes.
"""

from __future__ import annotations

import numpy as np


def pattern_masks(
    n_dim: int, n_patterns: int, pattern_length: int, overlap: bool, rng: np.random.Generator
) -> np.ndarray:
    """(n_patterns, pattern_length) feature indices of each pattern mask P_k.

    Without overlap the masks are disjoint: P_k is drawn from {1..n_dim} minus the
    union of the earlier masks.
    """
    if overlap:
        return np.stack(
            [rng.choice(n_dim, pattern_length, replace=False) for _ in range(n_patterns)]
        )
    return rng.permutation(n_dim)[: n_patterns * pattern_length].reshape(n_patterns, pattern_length)


def centroids(masks: np.ndarray, n_dim: int, delta: float) -> np.ndarray:
    """Noiseless pattern centroids c_k = sum_{i in P_k} delta e_i, shape (n_patterns, n_dim)."""
    out = np.zeros((masks.shape[0], n_dim), dtype=np.float64)
    np.put_along_axis(out, masks, delta, axis=1)
    return out


def pattern_class(patterns: np.ndarray, n_patterns: int, n_classes: int) -> np.ndarray:
    """Class label of each pattern label: k // (n_patterns / n_classes)."""
    return patterns // (n_patterns // n_classes)


def balanced_patterns(n: int, n_patterns: int, rng: np.random.Generator) -> np.ndarray:
    """n pattern labels, every pattern n / n_patterns times (+1 for the first n % n_patterns)."""
    return rng.permutation(np.arange(n) % n_patterns)


def draw_samples(
    masks: np.ndarray,
    patterns: np.ndarray,
    n_dim: int,
    delta: float,
    sigma: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """x = (eps + sum_{j in P_p} delta e_j) / ||.||_2, eps ~ N(0, sigma^2 I); (n, n_dim) float32."""
    x = rng.standard_normal((len(patterns), n_dim)) * sigma
    x[np.arange(len(patterns))[:, None], masks[patterns]] += delta
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)
