"""nodescope: how the individual nodes of neural networks behave during training.

ds = nodescope.open("runs/quickstart")
ds.loss.sel(split="val").mean("seed")
"""

from __future__ import annotations

from pathlib import Path

from . import accessor  # noqa: F401  registers ds.ns

__version__ = "0.1.0"


def open(run_dir: str | Path):  # noqa: A001 - the name users expect, like xr.open_dataset
    """One xarray Dataset of a results folder, the sweep axes as dimensions."""
    from .runner.store import open_run

    return open_run(run_dir)


__all__ = ["__version__", "open"]
