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
    if "partial" in ds.attrs:
        lines.append(f"[yellow]partial:[/] {escape(ds.attrs['partial'])}")
    return lines


def summary_table(ds: xr.Dataset) -> Table:
    """One row per member: sweep coordinates, final loss and accuracy per split, wall time."""
    dims = json.loads(ds.attrs.get("sweep_dims", "[]"))
    title = f"{ds.attrs.get('experiment', 'run')}: final metrics per member"
    table = Table(title=title, title_justify="left")
    for d in dims:
        table.add_column(d, justify="right", style="cyan")
    splits = [str(s) for s in ds.split.values]
    for s in splits:
        table.add_column(f"{s} loss", justify="right")
        table.add_column(f"{s} acc", justify="right")
    table.add_column("stop epoch", justify="right")
    table.add_column("group wall s", justify="right")
    flat = (
        ds[["final_loss", "final_accuracy", "stop_epoch", "wall_time"]]
        .stack(member=dims)
        .transpose("member", ...)
    )
    for i in range(flat.sizes["member"]):
        row = flat.isel(member=i)
        if np.isnan(row.final_loss.values).all():
            continue  # a grid point no member filled (zipped or ragged sweeps)
        cells = [str(row[d].item()) for d in dims]
        for s in splits:
            cells.append(_fmt(float(row.final_loss.sel(split=s))))
            cells.append(_fmt(float(row.final_accuracy.sel(split=s)), pct=True))
        stop = float(row.stop_epoch)
        cells.append("–" if np.isnan(stop) else f"{stop:g}")
        cells.append(f"{float(row.wall_time):.1f}")
        table.add_row(*cells)
    return table
