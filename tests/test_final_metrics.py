"""The final loss and accuracy reuse a checkpoint's eval pass only where it saw the
trained weights, and then equal a fresh evaluation bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_specs import every_probe_spec

import nodescope.runner.train as train
from nodescope.spec import plan
from nodescope.spec.load import validate_dict

SPLITS = ["train", "val", "test"]


def final_metrics(spec_dict, monkeypatch, reuse: bool):
    """(final_loss, final_accuracy, the splits `evaluate` was called for, stop epochs)."""
    evaluated = []
    real_evaluate, real_record = train.evaluate, train.record_checkpoint

    def counted(model, data, split, *args):
        evaluated.append(split)
        return real_evaluate(model, data, split, *args)

    def forgetful(*args, **kwargs):
        real_record(*args, **kwargs)
        return {}

    with monkeypatch.context() as m:
        m.setattr(train, "evaluate", counted)
        if not reuse:
            m.setattr(train, "record_checkpoint", forgetful)
        group = plan(validate_dict(spec_dict, "test"))[0]
        v = train.train_group(group, torch.device("cpu")).variables
    return v["final_loss"].values, v["final_accuracy"].values, evaluated, v["stop_epoch"].values


def same_as_fresh(spec_dict, monkeypatch):
    loss, acc, evaluated, _ = final_metrics(spec_dict, monkeypatch, reuse=True)
    fresh_loss, fresh_acc, fresh_evaluated, _ = final_metrics(spec_dict, monkeypatch, reuse=False)
    assert fresh_evaluated == SPLITS
    np.testing.assert_array_equal(loss, fresh_loss)
    np.testing.assert_array_equal(acc, fresh_acc)
    assert 0 < acc.min() and acc.max() < 1  # an asymmetric outcome, not all 0 or 1
    return evaluated


def test_a_last_checkpoint_of_every_split_leaves_nothing_to_evaluate(tiny, monkeypatch):
    tiny["probes"] = {"curves": {}, "sample_sets": {"node_cost": False}}
    tiny["sweep"] = {"seed": [0, 1]}
    assert tiny["checkpoints"]["log"]["stop"] == tiny["training"]["epochs"]
    assert same_as_fresh(tiny, monkeypatch) == []


def test_checkpoints_before_the_last_update_are_not_reused(tiny, monkeypatch):
    # every spec checkpoints its last step; without it, the last eval pass is stale
    real = train.checkpoint_steps
    monkeypatch.setattr(train, "checkpoint_steps", lambda spec: real(spec)[:-1])
    tiny["probes"] = {"curves": {}}
    assert same_as_fresh(tiny, monkeypatch) == SPLITS


def test_only_the_splits_read_without_gradients_are_reused(monkeypatch):
    spec = every_probe_spec(batch_size=32, eval_chunk=25)
    spec["probes"] = {"curves": {"splits": ["train", "test"]}, "sample_sets": {"split": "val"}}
    # node cost reads dL/da on val: that pass multiplies per member and rounds differently
    assert same_as_fresh(spec, monkeypatch) == ["val"]


@pytest.mark.parametrize("rule", ["early_stopping", "until_train_accuracy"])
def test_stop_rules(tiny, monkeypatch, rule):
    tiny["optimiser"] = {"name": "adam", "lr": 0.05}
    tiny["data"]["sigma"] = 1.5
    tiny["checkpoints"] = {"every": 1}
    tiny["training"]["epochs"] = 12
    if rule == "early_stopping":  # restores the best weights after the last checkpoint
        tiny["training"]["early_stopping"] = {"patience": 2}
    else:  # a frozen group records its later checkpoints on the final weights
        tiny["training"]["until_train_accuracy"] = 0.6
    loss, acc, evaluated, stopped = final_metrics(tiny, monkeypatch, reuse=True)
    fresh_loss, fresh_acc, _, _ = final_metrics(tiny, monkeypatch, reuse=False)
    assert stopped[0] < 12
    np.testing.assert_array_equal(loss, fresh_loss)
    np.testing.assert_array_equal(acc, fresh_acc)
    if rule == "early_stopping":
        assert evaluated[-3:] == SPLITS  # the restored weights, evaluated afresh
