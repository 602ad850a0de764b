"""nodescope: how the individual nodes of neural networks behave during training.

ds = nodescope.open("runs/quickstart")
ds.loss.sel(split="val").mean("seed")
"""

from __future__ import annotations

from pathlib import Path

from . import accessor  # noqa: F401  registers ds.ns
from .results.dask_lookup import defer_dask_import

defer_dask_import()  # xarray imports dask.array only where dask arrays are used

__version__ = "0.1.0"


def open(run_dir: str | Path):  # noqa: A001 - the name users expect, like xr.open_dataset
    """One xarray Dataset of a results folder, the sweep axes as dimensions."""
    from .runner.store import open_run

    return open_run(run_dir)


def load_model(run_dir: str | Path, epoch: float | str = "final", **coords):
    """One trained member as a plain torch `nn.Sequential` (needs checkpoints.weights)."""
    from .results.models import load_model as load

    return load(run_dir, epoch, **coords)


def load_stacked(run_dir: str | Path, epoch: float | str = "final", **coords):
    """The stacked model of the group holding the matching members (needs checkpoints.weights)."""
    from .results.models import load_stacked as load

    return load(run_dir, epoch, **coords)


def add_probe(run_dir: str | Path, name: str, options: list[str] = (), device: str = "auto"):
    """Compute probe `name` from the stored weights and add it to the results."""
    from .results.replay import add_probe as add

    return add(run_dir, name, list(options), device)


__all__ = ["__version__", "add_probe", "load_model", "load_stacked", "open"]
