"""Figures of the cooperating-classifiers paper (Figs. 1-7)."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from .. import accessor  # noqa: F401  registers ds.ns
from .cooperating import last_or_best
from .plotting import (
    first_member,
    log_epoch_axis,
    log_epochs,
    mean_and_stderr,
    other_combinations,
    pyplot,
)

SYSTEM_COLORS = {"discrete": "tab:blue", "continuous": "tab:orange", "combined": "tab:green"}
SIZE_DIMS = ("depth", "width")  # sweep dims the paper puts on an axis


def _sweep_dims(ds: xr.Dataset) -> list[str]:
    return json.loads(ds.attrs.get("sweep_dims", "[]"))


def _with_seed(da: xr.DataArray) -> xr.DataArray:
    return da if "seed" in da.dims else da.expand_dims("seed")


def _grid(plt, n_panels: int, width: float = 4.2, height: float = 3.4, **kw):
    ncols = min(n_panels, 3)
    nrows = -(-n_panels // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(width * ncols + 1.5, height * nrows + 0.8),
        squeeze=False,
        layout="constrained",
        **kw,
    )
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def perplexity_layers_figure(ds: xr.Dataset):
    """Paper Fig. 3: mean perplexity over classes against layer, mean ± s.e. over seeds.

    One panel per data set (or per value of the first sweep dim that is not a size), one
    line per network size; the last checkpoint, or the best network.
    """
    plt = pyplot()
    dims = _sweep_dims(ds)
    mean = _with_seed(last_or_best(ds.ns.mean_perplexity()))
    others = [d for d in dims if d != "seed" and d in mean.dims]
    panel_dims = [d for d in others if d not in SIZE_DIMS][:1]
    panels = list(other_combinations(mean, panel_dims))
    fig, axes = _grid(plt, len(panels), sharey=True)
    for ax, (title, part) in zip(axes.flat, panels, strict=False):
        lines = list(other_combinations(part, [d for d in others if d not in panel_dims]))
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(lines)))
        for (label, line), color in zip(lines, colors, strict=True):
            m, se = mean_and_stderr(line)
            if m.isnull().all():
                continue
            ax.errorbar(m.layer, m, yerr=se, color=color, marker="o", ms=3, label=label or None)
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_title(title, fontsize="medium")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean perplexity over classes")
    if "pattern_class_size" in ds:
        size = float(ds["pattern_class_size"].mean())
        for ax in axes.flat:
            ax.axhline(size, ls=":", color="0.4", lw=1)
    fig.suptitle("Per-layer mean pattern perplexity (dotted: mean class size N_c)")
    return fig


def layer_classifiers_epochs_figure(ds: xr.Dataset):
    """Paper Figs. 4-5: accuracy of the discrete, continuous and combined layer classifiers
    against epoch (log axis: first-epoch minibatch steps and epochs), one line per layer,
    mean over seeds; the network's own accuracy dashed red. One row per split (and per
    combination of the other sweep dims), one column per system."""
    plt = pyplot()
    dims = _sweep_dims(ds)
    acc = _with_seed(log_epochs(ds["layer_accuracy"]))
    both = xr.Dataset({"acc": acc})
    if "accuracy" in ds:
        both["net"] = _with_seed(log_epochs(ds["accuracy"]))
    splits = [s for s in acc.split.values if acc.sel(split=s).notnull().any()]
    rows = [
        (label, split, part) for label, part in other_combinations(both, dims) for split in splits
    ]
    systems = list(acc.system.values)
    fig, axes = plt.subplots(
        len(rows),
        len(systems),
        figsize=(4.2 * len(systems) + 1.5, 3.0 * len(rows) + 0.8),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    colors = plt.cm.viridis(np.linspace(0, 0.9, acc.sizes["layer"]))
    for r, (label, split, part) in enumerate(rows):
        network = None
        if "net" in part and split in part.split.values:
            network = part["net"].sel(split=split).mean("seed")
        for c, system in enumerate(systems):
            ax = axes[r, c]
            for layer, color in zip(part.layer.values, colors, strict=True):
                m = part["acc"].sel(split=split, system=system, layer=layer).mean("seed")
                if m.isnull().all():
                    continue
                ax.plot(m.epoch, m, color=color, marker=".", label=f"layer {layer}")
            if network is not None:
                ax.plot(network.epoch, network, "r--", lw=1.2, label="network")
            log_epoch_axis(ax, part.epoch.values)
            ax.set_title(f"{system}, {split}" + (f"\n{label}" if label else ""), fontsize="medium")
            if r == len(rows) - 1:
                ax.set_xlabel("epoch")
        axes[r, 0].set_ylabel("accuracy")
    handles = {}
    for ax in axes.flat:
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize="small")
    fig.suptitle("Layer classifiers during training (nodes as naive-Bayes classifiers)")
    return fig


def layer_classifiers_best_figure(ds: xr.Dataset):
    """Paper Figs. 6-7: accuracy of the three layer classifiers of the best network against
    layer, mean over seeds: test solid, train dashed, the network's test accuracy dotted
    red. One panel per combination of the sweep dims other than seed (e.g. per depth)."""
    plt = pyplot()
    dims = _sweep_dims(ds)
    acc = _with_seed(ds["layer_accuracy"])
    net = _with_seed(ds["final_accuracy"]) if "final_accuracy" in ds else None
    panels = list(other_combinations(xr.Dataset({"acc": acc, "net": net}), dims, "acc"))
    fig, axes = _grid(plt, len(panels), sharey=True)
    for ax, (title, part) in zip(axes.flat, panels, strict=False):
        for system, color in SYSTEM_COLORS.items():
            for split, style in (("test", "-"), ("train", "--")):
                if split not in part.split.values:
                    continue
                m = part["acc"].sel(system=system, split=split).mean("seed")
                if m.isnull().all():
                    continue
                ax.plot(m.layer, m, style, color=color, marker="o", ms=3, label=f"{system} {split}")
        if net is not None and "test" in part.split.values:
            ax.axhline(
                float(part["net"].sel(split="test").mean()), color="r", ls=":", label="network test"
            )
        ax.set_xlabel("layer")
        ax.set_title(title, fontsize="medium")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    handles = {}
    for ax in axes.flat:
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize="small")
    fig.suptitle("Layer classifiers of the network with the lowest validation error")
    return fig


def node_class_activation_figure(ds: xr.Dataset):
    """Paper Fig. 1: percentage of each class's samples that switch every node on, the
    nodes of all hidden layers then the output layer along the x axis; first member, last
    checkpoint."""
    plt = pyplot()
    member, label = first_member(ds)
    hidden = last_or_best(member["activation_fraction"])
    parts = [hidden.sel(layer=lay).dropna("node", how="all") for lay in hidden.layer.values]
    parts = [p for p in parts if p.sizes["node"]]
    if "output_activation_fraction" in member:
        parts.append(last_or_best(member["output_activation_fraction"]).rename(output="node"))
    fig, ax = plt.subplots(figsize=(12, 4), layout="constrained")
    colors = plt.cm.tab10(np.arange(ds.sizes["label"]) % 10)
    start = 0
    for part in parts:
        x = start + np.arange(part.sizes["node"])
        for c, color in zip(range(ds.sizes["label"]), colors, strict=True):
            ax.scatter(x, 100 * part.isel(label=c), s=4, color=color)
        start += part.sizes["node"]
        ax.axvline(start - 0.5, color="0.8", lw=0.8)
    # the first member's class names (they differ between data sets of one sweep)
    names = np.ravel(member["label_name"].values if "label_name" in member else member.label.values)
    for c, color in zip(range(ds.sizes["label"]), colors, strict=True):
        ax.scatter([], [], s=12, color=color, label=str(names[c]))
    fig.legend(fontsize="x-small", loc="outside right upper")
    ax.set_xlabel("node (hidden layers in order, then the output layer)")
    ax.set_ylabel("% of class samples with the node on")
    epoch = f", epoch {float(hidden.epoch):g}" if "epoch" in hidden.coords else ""
    ax.set_title(
        "Class activation percentages of every node" + (f" ({label}{epoch})" if label else epoch)
    )
    return fig


def test_error_figure(ds: xr.Dataset):
    """Paper Fig. 2: test error of the trained (best) networks against depth or width,
    mean ± s.e. over seeds, one line per data set."""
    plt = pyplot()
    dims = _sweep_dims(ds)
    axis = next(d for d in SIZE_DIMS if d in ds.dims)
    error = _with_seed(1 - ds["final_accuracy"].sel(split="test"))
    fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    for label, part in other_combinations(error, [d for d in dims if d != axis]):
        m, se = mean_and_stderr(part)
        ax.errorbar(m[axis], 100 * m, yerr=100 * se, marker="o", ms=3, label=label or None)
    ax.set_xlabel(axis)
    ax.set_ylabel("test error (%)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    ax.set_title(f"Test error against {axis}")
    return fig
