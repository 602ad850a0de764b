"""Matplotlib figures of a results Dataset, written as PNG and PDF.

FIGURES maps a file name to (figure function, whether the Dataset has its data).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from .activation_gap_figures import (
    gap_products_figure,
    gap_ratios_figure,
    gap_weight_products_figure,
)
from .cooperating_figures import (
    layer_classifiers_best_figure,
    layer_classifiers_epochs_figure,
    node_class_activation_figure,
    perplexity_layers_figure,
    test_error_figure,
)
from .plotting import mean_and_stderr, other_combinations, pyplot
from .sample_set_figures import (
    LAYER_MEANS,
    activation_fraction_nodes_figure,
    sample_set_layer_means_figure,
)
from .wtm_figures import (
    wtm_ablations_figure,
    wtm_accuracy_grid_figure,
    wtm_difficulty_figure,
    wtm_final_distributions_figure,
    wtm_pattern_preactivations_figure,
)


def curves_figure(ds: xr.Dataset):
    """Loss and accuracy against epoch (log axis), per split, mean ± s.e. over seeds."""
    plt = pyplot()
    dims = json.loads(ds.attrs.get("sweep_dims", "[]"))
    fig, axes = plt.subplots(
        2, ds.sizes["split"], figsize=(4 * ds.sizes["split"], 6), squeeze=False, sharex=True
    )
    epoch = ds.epoch.where(ds.epoch > 0, np.nan)
    for row, name in enumerate(("loss", "accuracy")):
        for col, split in enumerate(ds.split.values):
            ax = axes[row, col]
            for label, part in other_combinations(ds[name].sel(split=split), dims):
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
    "activation_fraction_nodes": (
        activation_fraction_nodes_figure,
        lambda ds: "activation_fraction" in ds,
    ),
    "sample_set_layer_means": (
        sample_set_layer_means_figure,
        lambda ds: all(name in ds for name, _ in LAYER_MEANS),
    ),
    "wtm_accuracy_grid": (wtm_accuracy_grid_figure, lambda ds: "accuracy_noise" in ds),
    "wtm_pattern_preactivations": (
        wtm_pattern_preactivations_figure,
        lambda ds: "pattern_preactivation" in ds and "top_node" in ds,
    ),
    "wtm_final_distributions": (
        wtm_final_distributions_figure,
        lambda ds: "preactivation_final" in ds and "grad_sign_mean" in ds,
    ),
    "wtm_ablations": (
        wtm_ablations_figure,
        lambda ds: "tag" in ds.dims and "pattern_preactivation" in ds and "top_node" in ds,
    ),
    "wtm_difficulty": (wtm_difficulty_figure, lambda ds: "difficulty" in ds and "loss_share" in ds),
    "cooperating_perplexity": (perplexity_layers_figure, lambda ds: "perplexity" in ds),
    "cooperating_classifiers_epochs": (
        layer_classifiers_epochs_figure,
        lambda ds: "layer_accuracy" in ds and "epoch" in ds["layer_accuracy"].dims,
    ),
    "cooperating_classifiers_best": (
        layer_classifiers_best_figure,
        lambda ds: "layer_accuracy" in ds and "epoch" not in ds["layer_accuracy"].dims,
    ),
    "cooperating_node_activation": (
        node_class_activation_figure,
        lambda ds: "output_activation_fraction" in ds,
    ),
    "cooperating_test_error": (
        test_error_figure,
        lambda ds: "perplexity" in ds and any(d in ds.dims for d in ("depth", "width")),
    ),
    "gap_weight_products": (gap_weight_products_figure, lambda ds: "activation_gap" in ds),
    "gap_products": (gap_products_figure, lambda ds: "activation_gap" in ds),
    "gap_ratios": (gap_ratios_figure, lambda ds: "activation_gap" in ds),
}


def write_figures(ds: xr.Dataset, out: Path) -> list[Path]:
    """Every figure the Dataset has data for, as PNG and PDF in `out`."""
    plt = pyplot()
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
