"""Small spec dicts that train in well under a second, shared by the tests."""

from __future__ import annotations

import copy

from nodescope.spec.load import apply_override

TINY = {
    "experiment": {"name": "tiny"},
    "data": {
        "name": "synthetic_patterns",
        "n_dim": 40,
        "n_patterns": 4,
        "pattern_length": 3,
        "train_size": 200,
        "val_size": 60,
        "test_size": 100,
    },
    "model": {"depth": 1, "width": 16},
    "optimiser": {"name": "adam", "lr": 0.01},
    "training": {"loss": "ce", "batch_size": 32, "epochs": 3},
    "checkpoints": {"log": {"start": 0.1, "stop": 3, "num": 4}},
    "probes": {"curves": {}, "activation_fraction": {}},
}


def tiny_spec_dict(**overrides) -> dict:
    """A deep copy of TINY with dotted-path overrides, e.g. {"data.val_size": 0}."""
    d = copy.deepcopy(TINY)
    for path, value in overrides.items():
        apply_override(d, path, value)
    return d
