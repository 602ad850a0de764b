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


EVERY_PROBE = {
    "curves": {},
    "sample_sets": {"output_layer": True},
    "pattern_preactivation": {},
    "grad_sign": {},
    "difficulty": {},
    "noise_robustness": {},
    "activation_gaps": {},
    "perplexity": {},
    "node_classifiers": {},
}


def every_probe_spec(batch_size: int, eval_chunk: int) -> dict:
    """Two members trained for 2 epochs with every probe on (the activation-gap probe's
    2-node summary layer included), a checkpoint per epoch."""
    return tiny_spec_dict(
        **{
            "model.summary_width": 2,
            "model.output_bias": False,
            "training.epochs": 2,
            "training.batch_size": batch_size,
            "training.eval_chunk": eval_chunk,
            "checkpoints": {"every": 1.0},
            "probes": EVERY_PROBE,
            "sweep": {"seed": [0, 1]},
        }
    )
