"""The hand-written baselines of bench/baselines.py do the same work as nodescope."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from agreement import assert_baselines_agree

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
import baselines  # noqa: E402


@pytest.mark.parametrize("depth, loss", [(1, "ce"), (2, "ce"), (2, "mse")])
def test_naive_and_vmap_baselines_compute_nodescopes_probe_values(tiny, depth, loss, one_thread):
    tiny["model"] = {"depth": depth, "width": [7, 5][:depth], "bias": "first"}
    tiny["optimiser"] = {"name": "adam", "lr": 0.01}
    tiny["training"] = {"loss": loss, "batch_size": 32, "epochs": 2}
    tiny["probes"] = {
        "curves": False,
        "sample_sets": {"split": "val", "churn": False, "node_cost": False},
    }
    tiny["sweep"] = {"seed": [0, 1, 2]}
    group = baselines.group_of(tiny)
    cpu = torch.device("cpu")
    ours = baselines.run_nodescope(group, cpu)
    assert_baselines_agree(group, ours, (baselines.run_naive, baselines.run_vmap), baselines.PROBES)
    assert ours["activation_fraction"].isfinite().any()
