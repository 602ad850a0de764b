"""Shared matplotlib helpers of the figure modules."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mean_and_stderr(da: xr.DataArray, dim: str = "seed") -> tuple[xr.DataArray, xr.DataArray]:
    """Mean over `dim` and its standard error s / sqrt(n) (0 when n = 1)."""
    n = da.count(dim)
    std = da.std(dim, ddof=1) if da.sizes.get(dim, 1) > 1 else xr.zeros_like(da.mean(dim))
    return da.mean(dim), (std / np.sqrt(n)).fillna(0)


def seed_spread(da: xr.DataArray, dim: str = "seed") -> tuple[xr.DataArray, xr.DataArray]:
    """Mean over seeds and its standard error, the error NaN (nothing to show) with fewer
    than two seeds; without a seed dim the mean is `da` itself."""
    if da.sizes.get(dim, 1) > 1:
        return mean_and_stderr(da, dim)
    mean = da.mean(dim) if dim in da.dims else da
    return mean, xr.full_like(mean, np.nan, dtype=float)


def other_combinations(obj, dims: list[str], required: str | None = None):
    """(label, slice) for each combination of the sweep dims other than seed.

    `obj` is a DataArray or Dataset; with `required` (a variable of a Dataset),
    combinations where it is all NaN (grid points no member filled) are left out.
    """
    others = [d for d in dims if d != "seed" and d in obj.dims]
    if not others:
        yield "", obj
        return
    stacked = obj.stack(_combo=others)
    for i in range(stacked.sizes["_combo"]):
        part = stacked.isel(_combo=i)
        if required is not None and part[required].isnull().all():
            continue
        label = ", ".join(f"{d}={part[d].item()}" for d in others)
        yield label, part.drop_vars(["_combo", *others])


def first_member(ds: xr.Dataset) -> tuple[xr.Dataset, str]:
    """The first member (first value of every sweep dim) and a `dim=value` label of it."""
    dims = [d for d in json.loads(ds.attrs.get("sweep_dims", "[]")) if d in ds.dims]
    first = ds.isel({d: 0 for d in dims})
    return first, ", ".join(f"{d}={first[d].item()}" for d in dims)


def member_caption(ds: xr.Dataset, label: str) -> str:
    """Which member a per-node figure shows: the one `--sel` chose, or the first."""
    if ds.attrs.get("selection"):
        return f"member: {label}"
    return f"first member: {label} (plot --sel chooses another)"


def log_epochs(da: xr.DataArray) -> xr.DataArray:
    """`da` without the checkpoints at epoch 0, which a log axis cannot show."""
    return da.isel(epoch=da.epoch.values > 0)


def log_epoch_axis(ax, epochs: np.ndarray) -> None:
    """Log x axis with plain-number ticks (1, 2, 5 per decade when it spans few decades)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    span = np.log10(epochs.max() / epochs.min()) if epochs.size else 0
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if span < 2 else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
