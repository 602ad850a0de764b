"""`--sel dim=value ...`: the sweep points a report, a figure set or a run is about."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import xarray as xr

from ..errors import UserError
from ..spec.toml_io import parse_value


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


def _position(values: Sequence, text: str) -> int | None:
    """Where `text` (a TOML value, or a bare string such as mse) is in `values`."""
    value = parse_value(text)
    for i, candidate in enumerate(values):
        plain = candidate.item() if isinstance(candidate, np.generic) else candidate
        if plain == value or str(plain) == text:
            return i
        if isinstance(plain, float) and isinstance(value, int | float) and np.isclose(plain, value):
            return i
    return None


def _not_taken(dim: str, text: str, values: Sequence) -> UserError:
    return UserError(f"--sel {dim}={text}: {dim} takes {', '.join(str(v) for v in values)}")


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
        k = _position(ds[dim].values, text)
        if k is None:
            raise _not_taken(dim, text, ds[dim].values)
        picks[dim] = [ds[dim].values[k]]
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
        k = _position(axis.values[0], text)
        if k is None:
            raise _not_taken(dim, text, axis.values[0])
        for path, values in zip(axis.paths, axis.values, strict=True):
            key = path if path in spec.sweep else "seed"  # the sweep table spells it "seed"
            overrides.append(f'sweep."{key}"=[{json.dumps(values[k])}]')
    return overrides
