from __future__ import annotations

import numpy as np
import torch

from nodescope.runner.train import train_group
from nodescope.spec import plan
from nodescope.spec.load import validate_dict


def train(spec_dict):
    group = plan(validate_dict(spec_dict, "test"))[0]
    return train_group(group, torch.device("cpu")).variables


def test_until_train_accuracy_freezes_one_member_while_the_other_trains(tiny):
    tiny["optimiser"] = {"name": "sgd", "lr": 1.0}
    tiny["training"].update(loss="ce", epochs=12, until_train_accuracy=0.95)
    tiny["checkpoints"] = {"every": 1}
    tiny["sweep"] = {"optimiser.lr": [1.0, 1e-6]}
    v = train(tiny)
    stop = v["stop_epoch"].values
    assert 1 <= stop[0] < 12 and np.isnan(stop[1])
    fast = v["loss"].isel(member=0).sel(split="train").values
    slow = v["loss"].isel(member=1).sel(split="train").values
    after = int(stop[0])  # checkpoint index of epoch k is k (initial checkpoint is 0)
    assert np.all(fast[after:] == fast[after])  # frozen: identical values after the stop
    assert v["accuracy"].isel(member=0).sel(split="train").values[after] >= 0.95
    assert not np.all(slow[after:] == slow[after])  # the other member kept updating
    assert float(v["final_accuracy"].isel(member=0).sel(split="train")) >= 0.95


def test_group_stops_when_every_member_met_the_rule(tiny):
    tiny["optimiser"] = {"name": "sgd", "lr": 1.0}
    tiny["training"].update(loss="ce", epochs=50, until_train_accuracy=0.9)
    tiny["checkpoints"] = {"every": 1}
    v = train(tiny)
    stop = v["stop_epoch"].values
    assert stop[0] < 50
    # training ended at the stop; later checkpoints hold the frozen network
    later = v["loss"].values[0, 0, int(stop[0]) :]
    assert later.size > 1 and np.all(later == later[0])


def test_early_stopping_restores_the_best_validation_weights(tiny):
    tiny["optimiser"] = {"name": "adam", "lr": 0.05}
    tiny["training"].update(epochs=30, early_stopping={"patience": 2})
    tiny["data"]["sigma"] = 1.5  # noisy enough to overfit quickly
    tiny["checkpoints"] = {"every": 1}
    v = train(tiny)
    val_acc = v["accuracy"].sel(split="val").values[0]
    stop = v["stop_epoch"].values[0]
    assert not np.isnan(stop)
    best = np.nanmax(val_acc[1 : int(stop) + 1])
    assert float(v["final_accuracy"].sel(split="val")[0]) == best
