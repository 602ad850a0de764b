"""Independent random streams derived from one spec seed."""

from __future__ import annotations

import numpy as np

STREAMS = {
    "init": 0,
    "order": 1,
    "label_noise": 2,
    "input_noise": 3,
    "masks": 10,
    "train": 11,
    "val": 12,
    "test": 13,
    "probe": 20,
}


def stream_seed(seed: int, stream: str, *extra: int) -> int:
    """A 63-bit seed for `stream`, independent of every other stream of the same seed."""
    words = np.random.SeedSequence([seed % 2**32, seed // 2**32, STREAMS[stream], *extra])
    return int(words.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def numpy_rng(seed: int, stream: str, *extra: int) -> np.random.Generator:
    return np.random.default_rng(stream_seed(seed, stream, *extra))
