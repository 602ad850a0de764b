"""Checks shared by the tests of the hand-written baselines under bench/."""

from __future__ import annotations

import torch


def assert_baselines_agree(group, ours: dict, runs, names, atol: float = 1e-6) -> None:
    """Every baseline in `runs` gives nodescope's probe values: the same shapes, NaN in
    the same places, and values within `atol`."""
    cpu = torch.device("cpu")
    for run in runs:
        theirs = run(group, cpu)
        for name in names:
            assert theirs[name].shape == ours[name].shape, (run.__name__, name)
            torch.testing.assert_close(
                theirs[name].to(ours[name].dtype), ours[name], atol=atol, rtol=0, equal_nan=True
            )
