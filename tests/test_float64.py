"""training.dtype = "float64": end to end, and stacked equals alone in a long Layca run."""

from __future__ import annotations

import numpy as np
import torch
from tiny_specs import tiny_spec_dict

import nodescope
from nodescope.cli import main
from nodescope.runner.train import train_group
from nodescope.spec import plan
from nodescope.spec.load import validate_dict
from nodescope.spec.toml_io import dump_toml


def layca_spec(seeds: list[int], dtype: str = "float64") -> dict:
    return tiny_spec_dict(
        **{
            "data.train_size": 100,
            "data.test_size": 60,
            "optimiser": {
                "name": "layca",
                "lr": 0.3,
                "momentum": 0.9,
                "schedule": {"milestones": [150], "factor": 0.2},
            },
            "model.init": "he",
            "model.init_gain": 2.0,
            "training.batch_size": "full",
            "training.epochs": 200,
            "training.dtype": dtype,
            "checkpoints": {"at": [50, 100, 150]},
            "probes": {"curves": {}, "pattern_preactivation": {"split": "test"}},
            "sweep": {"seed": seeds},
        }
    )


def test_long_full_batch_layca_stacked_equals_alone_in_float64(one_thread):
    cpu = torch.device("cpu")
    stacked = train_group(plan(validate_dict(layca_spec([0, 1, 2]), "t"))[0], cpu)
    for e, seed in enumerate([0, 1, 2]):
        alone = train_group(plan(validate_dict(layca_spec([seed]), "t"))[0], cpu)
        for name in ("final_loss", "pattern_preactivation"):
            np.testing.assert_allclose(
                stacked.variables[name].values[e],
                alone.variables[name].values[0],
                rtol=1e-6,
                atol=1e-6,
            )
    assert stacked.variables["final_loss"].values[:, 0].max() < 0.05  # it did train


def test_float64_runs_end_to_end_and_keeps_its_precision(tmp_path):
    spec = layca_spec([0])
    spec["training"]["epochs"] = 5
    spec["optimiser"]["schedule"] = {"milestones": [], "factor": 0.1}
    spec["checkpoints"] = {"at": [1], "weights": True}
    path = tmp_path / "s.toml"
    path.write_text(dump_toml(spec))
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 0
    net = nodescope.load_model(tmp_path / "r", seed=0)
    assert all(p.dtype == torch.float64 for p in net.parameters())
    stacked = nodescope.load_stacked(tmp_path / "r", seed=0)
    assert stacked.weights[0].dtype == torch.float64
    x = torch.randn(4, 40, dtype=torch.float64)
    torch.testing.assert_close(net(x), stacked(x).out[0], rtol=1e-12, atol=1e-12)
