"""Panels of the activation gap paper in `nodescope report`: the model selection of
Sec. 4 with the paper's Table 1, and the fractions of sample pairs meeting each gap
condition, before and after weight normalisation.

The selected member of an architecture (every combination of the sweep dims other than
`lr` and `seed`) is the one with the lowest best_val_error (early stopping), else the
lowest final validation error, else the first member.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import xarray as xr
from rich import box
from rich.table import Table

from .tables import panel_table

SELECTION_DIMS = ("lr", "seed")  # the paper's grid: learning rates across training seeds
CONDITION_LABELS = {
    "pair_separated": "Eqs. 9–10",
    "eq15": "Eq. 15",
    "eq16": "Eq. 16",
    "ratio_form": "Eqs. 17–18",
}


def _sweep_dims(ds: xr.Dataset) -> list[str]:
    return [d for d in json.loads(ds.attrs.get("sweep_dims", "[]")) if d in ds.dims]


def architecture_dims(ds: xr.Dataset) -> list[str]:
    return [d for d in _sweep_dims(ds) if d not in SELECTION_DIMS]


def selection_error(ds: xr.Dataset) -> tuple[xr.DataArray | None, str]:
    """The error members are selected by, and its name."""
    if "best_val_error" in ds:
        return ds["best_val_error"].load(), "best validation error (early stopping)"
    if "val" in ds.split.values:
        return 1 - ds["final_accuracy"].sel(split="val").load(), "final validation error"
    return None, "no validation split: the first member"


def selected_members(ds: xr.Dataset) -> list[tuple[dict, dict]]:
    """(architecture coords, the selected member's full sweep coords) per architecture."""
    arch = architecture_dims(ds)
    chooser = [d for d in _sweep_dims(ds) if d in SELECTION_DIMS]
    error, _ = selection_error(ds)
    chosen = []
    for combo in itertools.product(*(ds[d].values for d in arch)):
        where = dict(zip(arch, (v.item() for v in combo), strict=True))
        present = ds["final_accuracy"].sel(where).isel(split=0).notnull().load()
        if not present.any():
            continue  # a grid point no member filled
        pick = {}
        if chooser:
            key = error.sel(where) if error is not None else xr.zeros_like(present, float)
            candidates = key.where(present).stack(_m=chooser)
            best = int(np.nanargmin(candidates.values))  # the first member on ties
            pick = {d: candidates[d].values[best] for d in chooser}
        pick = {d: v.item() if hasattr(v, "item") else v for d, v in pick.items()}
        chosen.append((where, {**where, **pick}))
    return chosen


def selected_mask(ds: xr.Dataset) -> xr.DataArray:
    """True at the selected member of every architecture, over the sweep dims."""
    dims = _sweep_dims(ds)
    mask = xr.zeros_like(ds["final_accuracy"].isel(split=0, drop=True), dtype=bool)
    mask = mask.transpose(*dims)
    for _, member in selected_members(ds):
        mask.loc[member] = True
    return mask


def _small_variables(ds: xr.Dataset) -> xr.Dataset:
    """The per-member variables the panels read, in memory (not the per-pair ones)."""
    names = ["final_accuracy", "gap_condition_fraction", "gap_pair_count"]
    names += [n for n in ("best_val_error", "best_epoch") if n in ds]
    return ds[names].load()


def _pct(value: float) -> str:
    return "–" if np.isnan(value) else f"{100 * value:.1f}%"


def selection_panel(ds: xr.Dataset) -> Table | None:
    """Paper Table 1: train and test accuracy of the selected member per architecture."""
    if "gap_condition_fraction" not in ds:
        return None
    ds = _small_variables(ds)
    _, how = selection_error(ds)
    arch = architecture_dims(ds)
    chooser = [d for d in _sweep_dims(ds) if d in SELECTION_DIMS]
    n_members = int(ds["final_accuracy"].isel(split=0).notnull().sum())
    table = Table(
        title=f"{ds.attrs.get('experiment', 'run')}: selected model per architecture "
        "(activation gap paper Table 1)",
        title_justify="left",
        caption=f"selected by the lowest {how} over {' × '.join(chooser) or 'one member'}; "
        f"{n_members} members",
        caption_justify="left",
        box=box.SIMPLE_HEAVY,
    )
    for d in [*arch, *chooser]:
        table.add_column(d, justify="right", style="cyan" if d in arch else "green")
    for name in ("best val error", "best epoch", "train acc", "test acc"):
        table.add_column(name, justify="right")
    for _, member in selected_members(ds):
        row = ds.sel(member)
        cells = [str(member[d]) for d in [*arch, *chooser]]
        error = float(row["best_val_error"]) if "best_val_error" in ds else np.nan
        epoch = float(row["best_epoch"]) if "best_epoch" in ds else np.nan
        cells += [_pct(error), "–" if np.isnan(epoch) else f"{epoch:g}"]
        for split in ("train", "test"):
            acc = row["final_accuracy"].sel(split=split) if split in ds.split else np.nan
            cells.append(_pct(float(acc)))
        table.add_row(*cells)
    return table


def gap_condition_panel(ds: xr.Dataset) -> Table | None:
    """Fractions of sample pairs meeting each gap condition for the selected member of
    every architecture, pairs of correctly classified samples and pairs with a
    misclassified one, before and after weight normalisation."""
    if "gap_condition_fraction" not in ds:
        return None
    ds = _small_variables(ds)
    arch = architecture_dims(ds)
    frac = ds["gap_condition_fraction"]
    dims = _sweep_dims(ds)
    correct_all = frac.sel(pair_kind="correct").min([*dims, "normalised"], skipna=True)
    every = ", ".join(
        f"{CONDITION_LABELS[c]} {_pct(float(correct_all.sel(condition=c)))}"
        for c in frac.condition.values
    )
    table = panel_table(
        f"{ds.attrs.get('experiment', 'run')}: sample pairs meeting the gap conditions "
        "(selected model, before and after weight normalisation)",
        f"lowest fraction of correct pairs over all members: {every}",
    )
    for d in arch:
        table.add_column(d, justify="right", style="cyan", no_wrap=True)
    table.add_column("pairs", justify="left", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("weights", justify="left", no_wrap=True)
    for c in frac.condition.values:
        table.add_column(CONDITION_LABELS[str(c)], justify="right")
    for where, member in selected_members(ds):
        row = ds.sel(member)
        for kind in frac.pair_kind.values:
            n = str(int(row["gap_pair_count"].sel(pair_kind=kind)))
            for normalised, stage in ((False, "trained"), (True, "normalised")):
                cells = [str(where[d]) for d in arch] if not normalised else [""] * len(arch)
                cells += [str(kind), n] if not normalised else ["", ""]
                cells.append(stage)
                f = row["gap_condition_fraction"].sel(pair_kind=kind, normalised=normalised)
                cells += [_pct(float(f.sel(condition=c))) for c in frac.condition.values]
                table.add_row(*cells)
    return table
