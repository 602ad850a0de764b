"""The hand-written baselines of bench/baselines_wtm.py (Layca, pattern probes) do the same
work as nodescope."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from agreement import assert_baselines_agree

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
import baselines_wtm  # noqa: E402


# (2, 3): three test samples for four patterns, so pattern 3's means are NaN
@pytest.mark.parametrize(("depth", "test_size"), [(1, 100), (2, 3)])
def test_naive_and_vmap_baselines_compute_nodescopes_wtm_probes(tiny, depth, test_size, one_thread):
    # float64: in float32 bmm and nn.Linear round differently, a few 1e-6 on values ~4
    wtm = baselines_wtm.wtm_spec(seeds=3, width=16, epochs=3, checkpoints=4, dtype="float64")
    tiny.update({k: wtm[k] for k in ("model", "optimiser", "training", "probes", "sweep")})
    tiny["data"]["test_size"] = test_size
    tiny["model"]["depth"] = depth
    # lr 1: output weights change sign and outputs saturate (dL/da rounds to 0 for some
    # samples): grad_sign_mean takes values between -1 and 1
    tiny["optimiser"]["lr"] = 1.0
    tiny["optimiser"]["schedule"]["milestones"] = [2]
    tiny["training"]["batch_size"] = 64  # four steps per epoch, the last one of 8 samples
    tiny["probes"]["grad_sign"]["top_k"] = 5
    group = baselines_wtm.group_of(tiny)
    cpu = torch.device("cpu")
    ours = baselines_wtm.run_nodescope(group, cpu)
    assert set(ours) == set(baselines_wtm.PROBES)
    runs = (baselines_wtm.run_naive, baselines_wtm.run_vmap)
    assert_baselines_agree(group, ours, runs, baselines_wtm.PROBES)
    means = ours["pattern_preactivation"]
    assert means[..., :3].isfinite().all()
    assert means[..., 3].isnan().all() == (test_size == 3)
