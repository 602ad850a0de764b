from __future__ import annotations

import copy

import pytest

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


@pytest.fixture
def tiny() -> dict:
    """A spec dict that trains in well under a second."""
    return copy.deepcopy(TINY)
