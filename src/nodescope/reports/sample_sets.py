"""The sample-set panel of `nodescope report`: layer aggregates of the sample-set paper.

Per layer (and per combination of the sweep dims other than seed), averaged over seeds:
sparklines over epoch of f_l, p_l and u_l (`ds.ns.layer_mean`), the epoch where f_l
peaks, and the dead and always-active node counts at the last checkpoint.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable

import numpy as np
import xarray as xr
from rich.table import Table

from .. import accessor  # noqa: F401  registers ds.ns
from .tables import panel_table

BLOCKS = "▁▂▃▄▅▆▇█"
MAX_POINTS = 12  # sparkline characters at most; longer series are thinned evenly
AGGREGATES = {
    "f_l": "activation_fraction",
    "p_l": "predictability",
    "u_l": "informativeness",
}


FRACTION_SCALE = (0.0, 1.0)  # f_l, p_l and u_l are fractions: one fixed scale for every row


def sparkline(values: Iterable[float], scale: tuple[float, float] | None = None) -> str:
    """One block character per value, scaled onto ▁..█.

    With `scale = (lo, hi)` every series uses that fixed range (values outside it are
    clipped), so rows of a table compare; without it the series' own min-max, where a
    constant series (or a single finite value) is all middle blocks (▄). NaN (and ±inf)
    becomes a space.
    """
    arr = np.asarray(list(values), dtype=float)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return " " * arr.size
    lo, hi = scale if scale is not None else (finite.min(), finite.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        levels = np.full(arr.shape, (len(BLOCKS) - 1) // 2)
    else:
        scaled = np.clip((np.where(np.isfinite(arr), arr, lo) - lo) / (hi - lo), 0, 1)
        levels = np.rint(scaled * (len(BLOCKS) - 1)).astype(int)
    return "".join(BLOCKS[i] if np.isfinite(v) else " " for v, i in zip(arr, levels, strict=True))


def _thin(values: np.ndarray, n: int = MAX_POINTS) -> np.ndarray:
    """At most n evenly spaced entries of values (checkpoints are log-spaced already)."""
    if values.size <= n:
        return values
    return values[np.unique(np.linspace(0, values.size - 1, n).round().astype(int))]


def _fmt(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.2f}"


def _spark_cell(series: np.ndarray) -> str:
    """`first ▁▃▅█▆▄ last` of a series over epoch; '–' where it has no data at all."""
    if np.isnan(series).all():
        return "–"
    return f"{_fmt(series[0])} {sparkline(_thin(series), FRACTION_SCALE)} {_fmt(series[-1])}"


def _count(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.1f}"


def _seed_mean(da: xr.DataArray) -> xr.DataArray:
    return da.mean("seed") if "seed" in da.dims else da


def node_flag_counts(ds: xr.Dataset) -> dict[str, xr.DataArray]:
    """Dead and always-active nodes per member and layer at the last checkpoint.

    From the `dead` / `always_active` flags of the sample_sets probe; with only the
    activation_fraction probe, from the class-mean activation fraction (0: dead, 1:
    always active, the same definitions). NaN for members without data.
    """
    last = ds.isel(epoch=-1)
    if "dead" in ds and "always_active" in ds:
        # nodes with a measurement: not padding, not an absent layer, not a diverged member
        valid = last["activation_fraction"].notnull().any("label")
        flags = {
            "dead": last["dead"].where(valid),
            "always\nactive": last["always_active"].where(valid),
        }
    else:
        mean = last["activation_fraction"].mean("label")
        flags = {
            "dead": (mean == 0).where(mean.notnull()),
            "always\nactive": (mean == 1).where(mean.notnull()),
        }
    return {name: flag.sum("node", min_count=1) for name, flag in flags.items()}


def sample_set_panel(ds: xr.Dataset) -> Table | None:
    """Per-layer table of the sample-set aggregates, averaged over seeds.

    Columns: the non-seed sweep dims, layer, f_l / p_l / u_l as `first sparkline last`
    over epoch, the epoch where f_l peaks, and the dead and always-active node counts
    at the last checkpoint. p_l and u_l appear only with the sample_sets probe; None
    when the Dataset has no activation fraction at all.
    """
    if "activation_fraction" not in ds:
        return None
    dims = json.loads(ds.attrs.get("sweep_dims", "[]"))
    others = [d for d in dims if d != "seed" and d in ds.dims]
    means = {k: _seed_mean(ds.ns.layer_mean(v)) for k, v in AGGREGATES.items() if v in ds}
    counts = {k: _seed_mean(v) for k, v in node_flag_counts(ds).items()}
    epochs = ds.epoch.values

    n_seeds = ds.sizes.get("seed", 1)
    table = panel_table(
        f"{ds.attrs.get('experiment', 'run')}: "
        + ("sample sets per layer" if "predictability" in ds else "activation fraction per layer"),
        f"mean over {n_seeds} seed{'s' * (n_seeds != 1)}; {len(epochs)} checkpoints, "
        f"epoch {epochs[0]:g} → {epochs[-1]:g}; sparklines on a fixed 0–1 scale "
        "(▁ 0, █ 1); node counts at the last checkpoint",
    )
    for d in [*others, "layer"]:
        table.add_column(d, justify="right", style="cyan", no_wrap=True)
    for name in means:
        table.add_column(name)  # narrow terminals wrap it: first / sparkline / last
    table.add_column("f_l peak\nepoch", justify="right", no_wrap=True)
    for name in counts:
        table.add_column(name, justify="right", no_wrap=True)

    for combo in itertools.product(*(ds[d].values for d in others)):
        where = dict(zip(others, combo, strict=True))
        for layer in ds.layer.values:
            at = {**where, "layer": layer}
            f_l = means["f_l"].sel(at).values
            if np.isnan(f_l).all():
                continue  # a layer this combination does not have (depth sweeps)
            cells = [str(v) for v in combo] + [str(layer)]
            cells += [_spark_cell(m.sel(at).values) for m in means.values()]
            cells.append(f"{epochs[np.nanargmax(f_l)]:.3g}")
            cells += [_count(float(c.sel(at))) for c in counts.values()]
            table.add_row(*cells)
    return table
