"""Matplotlib figures of a results Dataset, written as PNG and PDF.

FIGURES maps a file name to (figure function, whether the Dataset has its data).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import UserError
from ..results.integrity import fix_for_write, make_folder, temp_path
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
from .plotting import log_epoch_axis, log_epochs, mean_and_stderr, other_combinations, pyplot
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

# Sweep axes whose values change the scale of the loss: each value gets its own panels.
SCALE_PATHS = ("training.loss", "data.name")


def scale_dims(ds: xr.Dataset, dims: list[str]) -> list[str]:
    """The sweep dims (of `dims`) that sweep a spec path in SCALE_PATHS."""
    return [d for d in dims if d in ds.coords and ds[d].attrs.get("spec_path") in SCALE_PATHS]


def axis_label(da: xr.DataArray, fallback: str) -> str:
    """`long name (units)` from a variable's attributes; no unit for dimensionless '1'."""
    name = da.attrs.get("long_name", fallback)
    units = da.attrs.get("units", "1")
    return name if units in ("1", "") else f"{name} ({units})"


def curves_figure(ds: xr.Dataset):
    """Loss and accuracy against log epoch, per split (columns). One pair of rows per
    value of the sweep axes that change the loss scale (training.loss, data.name); in
    each panel one line per combination of the other non-seed sweep axes, mean ± s.e.
    over seeds as a band."""
    plt = pyplot()
    dims = [d for d in json.loads(ds.attrs.get("sweep_dims", "[]")) if d in ds.dims]
    scales = scale_dims(ds, dims)
    lines = [d for d in dims if d not in scales and d != "seed"]
    blocks = list(other_combinations(ds[["loss", "accuracy"]], scales))
    n_split = ds.sizes["split"]
    fig, axes = plt.subplots(
        2 * len(blocks),
        n_split,
        figsize=(3.6 * n_split + 0.4, 2.6 * 2 * len(blocks) + 1.4),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    shown = log_epochs(ds.epoch)
    combos = list(other_combinations(ds["loss"], lines))
    colors = _distinct_colors(plt, len(combos))
    for b, (block_label, block) in enumerate(blocks):
        for m, name in enumerate(("loss", "accuracy")):
            row = 2 * b + m
            for col, split in enumerate(ds.split.values):
                ax = axes[row, col]
                series = log_epochs(block[name].sel(split=split))
                for color, (label, part) in zip(
                    colors, other_combinations(series, lines), strict=True
                ):
                    if part.isnull().all():
                        continue
                    mean, se = mean_and_stderr(part) if "seed" in part.dims else (part, 0 * part)
                    ax.plot(shown, mean, color=color, lw=1.2, label=label or None)
                    ax.fill_between(shown, mean - se, mean + se, color=color, alpha=0.2, lw=0)
                log_epoch_axis(ax, shown.values)
                title = f"{split} {name}" + (f"  ({block_label})" if block_label else "")
                ax.set_title(title, fontsize="medium")
                if col == 0:
                    ax.set_ylabel(axis_label(ds[name], name))
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if labels:
        ncols = min(len(labels), 4)
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize="small")
    n_seeds = ds.sizes.get("seed", 1)
    fig.suptitle(
        "Training curves"
        + (f", mean ± standard error over {n_seeds} seeds (bands)" if n_seeds > 1 else "")
    )
    return fig


def _distinct_colors(plt, n: int) -> list:
    """n colours that stay distinct: tab10 up to 10, tab20 up to 20, then a colormap."""
    if n <= 10:
        return [plt.cm.tab10(i) for i in range(n)]
    if n <= 20:
        return [plt.cm.tab20(i) for i in range(n)]
    return list(plt.cm.turbo(np.linspace(0.05, 0.95, n)))


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


# Figures with a row of panels per sweep combination: one file per loss type (or data
# set) keeps them readable for the papers' grids.
ONE_FILE_PER_SCALE = ("sample_set_layer_means",)


def _figure_parts(name: str, ds: xr.Dataset):
    """(file name, Dataset) of each file a figure is drawn into."""
    dims = [d for d in json.loads(ds.attrs.get("sweep_dims", "[]")) if d in ds.dims]
    scales = [d for d in scale_dims(ds, dims) if ds.sizes[d] > 1]
    if name not in ONE_FILE_PER_SCALE or not scales:
        yield name, ds
        return
    for values in np.ndindex(*(ds.sizes[d] for d in scales)):
        at = {d: [ds[d].values[i]] for d, i in zip(scales, values, strict=True)}
        suffix = "_".join(f"{d}={v[0]}" for d, v in at.items())
        yield f"{name}_{suffix}", ds.sel(at)


def write_figures(ds: xr.Dataset, out: Path) -> list[Path]:
    """Every figure the Dataset has data for, as PNG and PDF in `out`."""
    plt = pyplot()
    make_folder(out, "choose a writable figure folder with --out DIR")
    written = []
    for name, (make, available) in FIGURES.items():
        if not available(ds):
            continue
        for file_name, part in _figure_parts(name, ds):
            fig = make(part)
            for ext in ("png", "pdf"):
                path = out / f"{file_name}.{ext}"
                save_figure(fig, path)
                written.append(path)
            plt.close(fig)
    return written


def save_figure(fig, path: Path) -> None:
    """Draw into a temporary file, then rename it into place: a full disk leaves the
    earlier figure, no empty or half-drawn file, and ends in one line."""
    tmp = temp_path(path)
    try:
        fig.savefig(tmp, dpi=120, format=path.suffix[1:])
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(
            f"cannot write {path} ({exc.strerror or exc}); {fix_for_write(exc)}, or "
            "choose another figure folder with --out DIR"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
