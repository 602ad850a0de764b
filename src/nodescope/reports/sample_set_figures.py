"""Figures of the sample-set paper (Figs. 4-7)."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from .. import accessor  # noqa: F401  registers ds.ns
from .plotting import (
    first_member,
    log_epoch_axis,
    log_epochs,
    mean_and_stderr,
    member_caption,
    other_combinations,
    pyplot,
)


def activation_fraction_nodes_figure(ds: xr.Dataset):
    """Paper Fig. 4: every node's class-mean activation fraction against log epoch.

    First member only, one subplot per layer it has; epoch 0 is left out.
    """
    plt = pyplot()
    member, label = first_member(ds)
    fraction = log_epochs(member["activation_fraction"].mean("label"))
    layers = [lay for lay in fraction.layer.values if fraction.sel(layer=lay).notnull().any()]
    ncols = min(len(layers), 4)
    nrows = -(-len(layers) // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(max(3.6 * ncols, 5), 3 * nrows + 0.8),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    for ax, layer in zip(axes.flat, layers, strict=False):
        nodes = fraction.sel(layer=layer)
        nodes = nodes.isel(node=nodes.notnull().any("epoch").values)
        colors = plt.cm.viridis(np.linspace(0, 0.9, nodes.sizes["node"]))
        dot = "." if nodes.sizes["epoch"] == 1 else None  # a lone checkpoint has no line
        for node, color in zip(nodes.node.values, colors, strict=True):
            ax.plot(nodes.epoch, nodes.sel(node=node), lw=0.7, alpha=0.8, color=color, marker=dot)
        log_epoch_axis(ax, fraction.epoch.values)
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
        + (f"\n{member_caption(ds, label)}" if label else "")
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
    plt = pyplot()
    dims = json.loads(ds.attrs.get("sweep_dims", "[]"))
    means = {name: log_epochs(ds.ns.layer_mean(name)) for name, _ in LAYER_MEANS}
    if "seed" not in ds.dims:
        means = {name: da.expand_dims("seed") for name, da in means.items()}
    rows = [list(other_combinations(da, dims)) for da in means.values()]
    colors = plt.cm.viridis(np.linspace(0, 0.85, ds.sizes["layer"]))
    u_max = np.log(2) / np.log(ds.sizes["label"])
    n_rows = len(rows[0])
    fig, axes = plt.subplots(
        n_rows,
        3,
        figsize=(13, 3.2 * n_rows + 0.8),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
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
                    u_max,
                    ls="--",
                    color="0.4",
                    lw=1,
                    label=f"maximum log 2/log |C| = {u_max:.3f}",
                )
            log_epoch_axis(ax, part.epoch.values)
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


# --------------------------------------------------------------------------- winner-take-most
