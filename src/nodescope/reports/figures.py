"""Matplotlib figures of a results Dataset, written as PNG and PDF."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from .. import accessor  # noqa: F401  registers ds.ns


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


def _first_member(ds: xr.Dataset) -> tuple[xr.Dataset, str]:
    """The first member (first value of every sweep dim) and a `dim=value` label of it."""
    dims = [d for d in json.loads(ds.attrs.get("sweep_dims", "[]")) if d in ds.dims]
    first = ds.isel({d: 0 for d in dims})
    return first, ", ".join(f"{d}={first[d].item()}" for d in dims)


def _log_epochs(da: xr.DataArray) -> xr.DataArray:
    """`da` without the checkpoints at epoch 0, which a log axis cannot show."""
    return da.isel(epoch=da.epoch.values > 0)


def _log_epoch_axis(ax, epochs: np.ndarray) -> None:
    """Log x axis with plain-number ticks (1, 2, 5 per decade when it spans few decades)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    span = np.log10(epochs.max() / epochs.min()) if epochs.size else 0
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if span < 2 else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def activation_fraction_nodes_figure(ds: xr.Dataset):
    """Paper Fig. 4: every node's class-mean activation fraction against log epoch.

    First member only, one subplot per layer it has; epoch 0 is left out.
    """
    plt = _pyplot()
    member, label = _first_member(ds)
    fraction = _log_epochs(member["activation_fraction"].mean("label"))
    layers = [lay for lay in fraction.layer.values if fraction.sel(layer=lay).notnull().any()]
    ncols = min(len(layers), 4)
    nrows = -(-len(layers) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(max(3.6 * ncols, 5), 3 * nrows + 0.8), squeeze=False,
        sharex=True, sharey=True, layout="constrained",
    )  # fmt: skip
    for ax, layer in zip(axes.flat, layers, strict=False):
        nodes = fraction.sel(layer=layer)
        nodes = nodes.isel(node=nodes.notnull().any("epoch").values)
        colors = plt.cm.viridis(np.linspace(0, 0.9, nodes.sizes["node"]))
        dot = "." if nodes.sizes["epoch"] == 1 else None  # a lone checkpoint has no line
        for node, color in zip(nodes.node.values, colors, strict=True):
            ax.plot(nodes.epoch, nodes.sel(node=node), lw=0.7, alpha=0.8, color=color, marker=dot)
        _log_epoch_axis(ax, fraction.epoch.values)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"layer {layer} ({nodes.sizes['node']} nodes)")
    for ax in axes.flat[len(layers) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("activation fraction")
    fig.suptitle(
        "Activation fraction of every node, mean over classes"
        + (f"\nfirst member: {label}" if label else "")
    )
    return fig


LAYER_MEANS = (
    ("activation_fraction", "activation fraction $f_l$"),
    ("predictability", "predictability $p_l$"),
    ("informativeness", "informativeness $u_l$"),
)


def sample_set_layer_means_figure(ds: xr.Dataset):
    """Paper Figs. 5-7: layer means f_l, p_l, u_l against log epoch, mean ± s.e. over seeds.

    One subplot row per combination of the sweep dims other than seed, one line per
    layer; the informativeness subplots draw its maximum log 2 / log |C| dashed.
    """
    plt = _pyplot()
    dims = json.loads(ds.attrs.get("sweep_dims", "[]"))
    means = {name: _log_epochs(ds.ns.layer_mean(name)) for name, _ in LAYER_MEANS}
    if "seed" not in ds.dims:
        means = {name: da.expand_dims("seed") for name, da in means.items()}
    rows = [list(_other_combinations(da, dims)) for da in means.values()]
    colors = plt.cm.viridis(np.linspace(0, 0.85, ds.sizes["layer"]))
    u_max = np.log(2) / np.log(ds.sizes["label"])
    n_rows = len(rows[0])
    fig, axes = plt.subplots(
        n_rows, 3, figsize=(13, 3.2 * n_rows + 0.8), squeeze=False, sharex=True,
        layout="constrained",
    )  # fmt: skip
    for col, ((_, title), combos) in enumerate(zip(LAYER_MEANS, rows, strict=True)):
        for row, (combo, part) in enumerate(combos):
            ax = axes[row, col]
            for layer, color in zip(part.layer.values, colors, strict=True):
                mean, se = mean_and_stderr(part.sel(layer=layer))
                if mean.isnull().all():
                    continue  # a layer this combination does not have
                dot = "o" if mean.sizes["epoch"] == 1 else None  # a lone point has no line
                ax.plot(mean.epoch, mean, color=color, marker=dot, label=f"layer {layer}")
                ax.fill_between(mean.epoch, mean - se, mean + se, color=color, alpha=0.25)
            if col == 2:
                ax.axhline(
                    u_max, ls="--", color="0.4", lw=1,
                    label=f"maximum log 2/log |C| = {u_max:.3f}",
                )  # fmt: skip
            _log_epoch_axis(ax, part.epoch.values)
            ax.set_title(title + (f"\n{combo}" if combo else ""), fontsize="medium")
            if row == n_rows - 1:
                ax.set_xlabel("epoch")
    handles = {}  # one legend entry per label, the layers first
    for ax in axes.flat:
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    labels = sorted(handles, key=lambda text: text.startswith("maximum"))
    fig.legend([handles[k] for k in labels], labels, loc="outside right upper", fontsize="small")
    n_seeds = ds.sizes.get("seed", 1)
    fig.suptitle(
        f"Layer means of the sample-set measures, mean ± standard error over {n_seeds} seed"
        + "s" * (n_seeds != 1)
    )
    return fig


FIGURES: dict[str, tuple[Callable[[xr.Dataset], object], Callable[[xr.Dataset], bool]]] = {
    "curves": (curves_figure, lambda ds: "loss" in ds),
    "activation_fraction_nodes": (
        activation_fraction_nodes_figure,
        lambda ds: "activation_fraction" in ds,
    ),
    "sample_set_layer_means": (
        sample_set_layer_means_figure,
        lambda ds: all(name in ds for name, _ in LAYER_MEANS),
    ),
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
