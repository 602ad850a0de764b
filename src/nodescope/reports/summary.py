"""The per-member summary table of a results Dataset."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr
from rich.table import Table


def _fmt(value: float, pct: bool = False) -> str:
    if value is None or np.isnan(value):
        return "–"
    return f"{100 * value:.1f}%" if pct else f"{value:.4f}"


def provenance_lines(ds: xr.Dataset) -> list[str]:
    """What the reader should know before the numbers: the spec's description, the --set
    overrides it ran with, and groups that are not stored yet."""
    from rich.markup import escape

    from ..spec.toml_io import tomllib

    lines = []
    try:
        spec = tomllib.loads(ds.attrs.get("resolved_spec", ""))
    except tomllib.TOMLDecodeError:
        spec = {}
    description = spec.get("experiment", {}).get("description", "")
    if description:
        lines.append(escape(description.strip()))
    overrides = json.loads(ds.attrs.get("overrides", "[]"))
    if overrides:
        lines.append("overrides: " + escape(" ".join(f"--set {o}" for o in overrides)))
    if "diverged_epoch" in ds:
        dims = json.loads(ds.attrs.get("sweep_dims", "[]"))
        epochs = ds["diverged_epoch"].stack(member=dims).load()
        bad = [
            ", ".join(f"{d}={epochs[d].values[i]}" for d in dims)
            + f" (epoch {float(epochs.values[i]):g})"
            for i in range(epochs.sizes["member"])
            if not np.isnan(epochs.values[i])
        ]
        if bad:
            lines.append(
                "[red]diverged[/] (loss not finite; frozen, later values NaN): "
                + escape("; ".join(bad))
            )
    if "partial" in ds.attrs:
        lines.append(f"[yellow]partial:[/] {escape(ds.attrs['partial'])}")
    return lines


# Columns dropped first when the terminal is too narrow; sweep columns always stay.
DROP_ORDER = ("group wall s", "stop epoch", "train loss", "val loss", "test loss", "train acc")


def summary_table(ds: xr.Dataset, width: int | None = None) -> Table:
    """One row per member: sweep coordinates, final loss and accuracy per split, wall time.

    With `width` (the terminal's), whole columns are left out (DROP_ORDER) until the
    table fits, so that no number is cut; the caption names what was left out.
    """
    dims = json.loads(ds.attrs.get("sweep_dims", "[]"))
    splits = [str(s) for s in ds.split.values]
    names = ["final_loss", "final_accuracy", "stop_epoch", "wall_time"]
    names += ["diverged_epoch"] if "diverged_epoch" in ds else []
    flat = ds[names].stack(member=dims).transpose("member", ...).load()
    columns: dict[str, list[str]] = {d: [] for d in dims}
    for s in splits:
        columns[f"{s} loss"], columns[f"{s} acc"] = [], []
    columns["stop epoch"], columns["group wall s"] = [], []
    for i in range(flat.sizes["member"]):
        row = flat.isel(member=i)
        diverged = float(row.diverged_epoch) if "diverged_epoch" in row else np.nan
        if np.isnan(row.final_loss.values).all() and np.isnan(diverged):
            continue  # a grid point no member filled (zipped or ragged sweeps)
        for d in dims:
            columns[d].append(str(row[d].item()))
        for s in splits:
            columns[f"{s} loss"].append(_fmt(float(row.final_loss.sel(split=s))))
            columns[f"{s} acc"].append(_fmt(float(row.final_accuracy.sel(split=s)), pct=True))
        stop = float(row.stop_epoch)
        if not np.isnan(diverged):
            columns["stop epoch"].append(f"diverged {diverged:g}")
        else:
            columns["stop epoch"].append("–" if np.isnan(stop) else f"{stop:g}")
        columns["group wall s"].append(f"{float(row.wall_time):.1f}")
    dropped = []
    for name in DROP_ORDER:
        if width is None or _table_width(columns) <= width:
            break
        if name in columns:
            del columns[name]
            dropped.append(name)
    title = f"{ds.attrs.get('experiment', 'run')}: final metrics per member"
    caption = f"not shown at this width: {', '.join(dropped)}" if dropped else None
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for name in columns:
        style = "cyan" if name in dims else None
        header = name if name in dims else name.replace(" ", "\n", 1)  # "train\nloss"
        table.add_column(header, justify="right", style=style, no_wrap=True)
    for cells in zip(*columns.values(), strict=True):
        table.add_row(*cells)
    return table


def _table_width(columns: dict[str, list[str]]) -> int:
    """Characters a Rich box table needs: each column as wide as its widest cell or its
    header's longer line (headers break after their first word), plus one space each
    side and the borders."""
    widths = [
        max([len(c) for c in cells] + [len(line) for line in name.split(" ", 1)])
        for name, cells in columns.items()
    ]
    return sum(widths) + 3 * len(widths) + 1
