"""Matplotlib figures of a results Dataset, written as PNG and PDF."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mean_and_stderr(da: xr.DataArray, dim: str = "seed") -> tuple[xr.DataArray, xr.DataArray]:
    """Mean over `dim` and its standard error s / sqrt(n) (0 when n = 1)."""
    n = da.count(dim)
    std = da.std(dim, ddof=1) if da.sizes.get(dim, 1) > 1 else xr.zeros_like(da.mean(dim))
    return da.mean(dim), (std / np.sqrt(n)).fillna(0)


def _other_combinations(da: xr.DataArray, dims: list[str]):
    """(label, slice) for each combination of the sweep dims other than seed."""
    others = [d for d in dims if d != "seed" and d in da.dims]
    if not others:
        yield "", da
        return
    stacked = da.stack(_combo=others)
    for i in range(stacked.sizes["_combo"]):
        part = stacked.isel(_combo=i)
        label = ", ".join(f"{d}={part[d].item()}" for d in others)
        yield label, part.drop_vars(["_combo", *others])


def curves_figure(ds: xr.Dataset):
    """Loss and accuracy against epoch (log axis), per split, mean ± s.e. over seeds."""
    plt = _pyplot()
    dims = json.loads(ds.attrs.get("sweep_dims", "[]"))
    fig, axes = plt.subplots(
        2, ds.sizes["split"], figsize=(4 * ds.sizes["split"], 6), squeeze=False, sharex=True
    )
    epoch = ds.epoch.where(ds.epoch > 0, np.nan)
    for row, name in enumerate(("loss", "accuracy")):
        for col, split in enumerate(ds.split.values):
            ax = axes[row, col]
            for label, part in _other_combinations(ds[name].sel(split=split), dims):
                mean, se = mean_and_stderr(part)
                ax.plot(epoch, mean, label=label or None)
                ax.fill_between(epoch, mean - se, mean + se, alpha=0.25)
            ax.set_xscale("log")
            ax.set_title(f"{split} {name}")
            if row == 1:
                ax.set_xlabel("epoch")
    if any(ax.get_legend_handles_labels()[0] for ax in axes.flat):
        axes[0, -1].legend(fontsize="small")
    fig.tight_layout()
    return fig


FIGURES: dict[str, tuple[Callable[[xr.Dataset], object], Callable[[xr.Dataset], bool]]] = {
    "curves": (curves_figure, lambda ds: "loss" in ds),
}


def write_figures(ds: xr.Dataset, out: Path) -> list[Path]:
    """Every figure the Dataset has data for, as PNG and PDF in `out`."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (make, available) in FIGURES.items():
        if not available(ds):
            continue
        fig = make(ds)
        for ext in ("png", "pdf"):
            path = out / f"{name}.{ext}"
            fig.savefig(path, dpi=120)
            written.append(path)
        plt.close(fig)
    return written
