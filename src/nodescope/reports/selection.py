"""`--sel dim=value ...`: the sweep points a report, a figure set or a run is about."""

from __future__ import annotations

import json
import sys

import numpy as np
import xarray as xr

from ..errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def parse_selection(items: list[str]) -> dict[str, str]:
    """{dim: value text} from `dim=value` items, in order."""
    chosen: dict[str, str] = {}
    for item in items:
        dim, sep, value = item.partition("=")
        if not sep or not dim.strip() or not value.strip():
            raise UserError(f"--sel {item}: write dim=value, e.g. --sel width=80 seed=0")
        if dim.strip() in chosen:
            raise UserError(f"--sel {item}: {dim.strip()} is chosen twice; give it once")
        chosen[dim.strip()] = value.strip()
    return chosen


def toml_value(text: str):
    """The TOML value `text` spells (8, 0.4, true), else the text itself (mse)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _matching(coord: xr.DataArray, text: str):
    value = toml_value(text)
    for candidate in coord.values:
        plain = candidate.item() if isinstance(candidate, np.generic) else candidate
        if plain == value or str(plain) == text:
            return candidate
        if isinstance(plain, float) and isinstance(value, int | float) and np.isclose(plain, value):
            return candidate
    return None


def select(ds: xr.Dataset, items: list[str]) -> xr.Dataset:
    """The Dataset narrowed to the chosen sweep values; every dim stays (length 1) and
    `ds.attrs["selection"]` says what was chosen."""
    chosen = parse_selection(items)
    if not chosen:
        return ds
    sweep_dims = [d for d in json.loads(ds.attrs.get("sweep_dims", "[]")) if d in ds.dims]
    picks = {}
    for dim, text in chosen.items():
        if dim not in sweep_dims:
            raise UserError(
                f"--sel {dim}={text}: the run has no sweep dimension {dim}; it has "
                f"{', '.join(sweep_dims) or 'none'}"
            )
        value = _matching(ds[dim], text)
        if value is None:
            have = ", ".join(str(v) for v in ds[dim].values)
            raise UserError(f"--sel {dim}={text}: {dim} takes {have}")
        picks[dim] = [value]
    narrowed = ds.sel(picks)
    narrowed.attrs["selection"] = ", ".join(f"{d}={v[0]}" for d, v in picks.items())
    return narrowed


def selection_overrides(spec, items: list[str]) -> list[str]:
    """`--set` overrides that narrow the spec's sweep to the chosen points (run --sel); a
    zipped axis narrows every list it zips to the chosen position."""
    from ..spec.sweep import sweep_axes

    chosen = parse_selection(items)
    axes = {axis.dim: axis for axis in sweep_axes(spec)}
    overrides = []
    for dim, text in chosen.items():
        if dim not in axes:
            raise UserError(
                f"--sel {dim}={text}: the spec sweeps no {dim}; it sweeps "
                f"{', '.join(axes) or 'nothing'}"
            )
        axis = axes[dim]
        coord = xr.DataArray(axis.values[0], dims="v")
        value = _matching(coord, text)
        if value is None:
            have = ", ".join(str(v) for v in axis.values[0])
            raise UserError(f"--sel {dim}={text}: {dim} takes {have}")
        k = [str(v) for v in axis.values[0]].index(str(value))
        for path, values in zip(axis.paths, axis.values, strict=True):
            key = path if path in spec.sweep else "seed"  # the sweep table spells it "seed"
            overrides.append(f'sweep."{key}"=[{json.dumps(values[k])}]')
    return overrides
