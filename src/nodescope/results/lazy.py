"""Group files opened lazily: coordinates now, every data variable as one dask chunk
(or, for results small enough to load whole, read at once without dask).

Each chunk opens the file, reads its variable and closes it again, under one process-wide
lock. No file handle outlives a read, so nothing depends on xarray's shared per-path file
cache (where closing one reader closes the others) and netCDF/HDF5, which is not thread
safe, is never entered from two threads or from a garbage collector at once.

Groups of different architectures differ in their number of layers and nodes. Each chunk
is padded with NaN to the widest group when it is read, so that the groups line up
without a reindex of every variable (which costs more than the reads themselves).
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import xarray as xr

NETCDF_LOCK = threading.RLock()

# Dimensions padded to the widest group, with their coordinate values.
PADDED = {"layer": lambda n: np.arange(1, n + 1), "node": np.arange}


def read_attrs(path: str | Path) -> dict:
    """A file's global attributes, read without decoding any variable."""
    import netCDF4

    with NETCDF_LOCK, netCDF4.Dataset(path) as nc:
        return {key: nc.getncattr(key) for key in nc.ncattrs()}


def read_layout(path: str | Path) -> xr.Dataset:
    """A file's coordinates (loaded) and its data variables' layout (not loaded)."""
    with NETCDF_LOCK, xr.open_dataset(path, engine="netcdf4") as ds:
        coords = {name: ds[name].load().variable for name in ds.coords}
        layout = {
            name: (var.dims, var.shape, var.dtype, dict(var.attrs))
            for name, var in ds.data_vars.items()
        }
        return {"coords": coords, "layout": layout, "attrs": dict(ds.attrs)}


def read_variable(path: str, name: str) -> np.ndarray:
    with NETCDF_LOCK, xr.open_dataset(path, engine="netcdf4", cache=False) as ds:
        return ds[name].values


def _padded(path: str, name: str, shape: tuple[int, ...]) -> np.ndarray:
    return _pad(read_variable(path, name), shape)


def _read_padded(path: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Every data variable of the file in one open, each padded to its shape."""
    with NETCDF_LOCK, xr.open_dataset(path, engine="netcdf4", cache=False) as ds:
        return {name: _pad(ds[name].values, shape) for name, shape in shapes.items()}


def _pad(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if values.shape == shape:
        return values
    if values.dtype.kind in "iub":
        values = values.astype(np.float64)
    return np.pad(
        values,
        [(0, want - have) for have, want in zip(values.shape, shape, strict=True)],
        constant_values=np.nan,
    )


def _pad_coordinate(var: xr.Variable, sizes: dict[str, int]) -> xr.Variable:
    widths = [(0, sizes.get(d, n) - n) for d, n in zip(var.dims, var.shape, strict=True)]
    if not any(after for _, after in widths):
        return var
    fill = 0 if var.dtype.kind in "iu" else np.nan
    return xr.Variable(var.dims, np.pad(var.values, widths, constant_values=fill), var.attrs)


def open_padded(
    path: str | Path, found: dict | None = None, sizes: dict | None = None, eager: bool = False
):
    """The file's Dataset with eager coordinates and dask-backed data variables (numpy
    ones, read now, if `eager`); the dimensions in PADDED are padded to `sizes` (NaN; 0
    for integer coordinates). `found` is the file's read_layout, when already read."""
    path = str(path)
    found = found or read_layout(path)
    sizes = {d: n for d, n in (sizes or {}).items() if d in PADDED}
    coords = {}
    for name, var in found["coords"].items():
        if name in PADDED and name in sizes:
            coords[name] = xr.Variable(name, PADDED[name](sizes[name]), var.attrs)
        else:
            coords[name] = _pad_coordinate(var, sizes)
    layout = found["layout"]
    wants = {name: padded_shape(dims, shape, sizes) for name, (dims, shape, *_) in layout.items()}
    arrays = _read_padded(path, wants) if eager else _dask_arrays(path, found, wants)
    variables = {
        name: xr.Variable(dims, arrays[name], attrs=attrs)
        for name, (dims, _, _, attrs) in layout.items()
    }
    return xr.Dataset(variables, coords=coords, attrs=found["attrs"])


def padded_shape(dims: tuple[str, ...], shape: tuple[int, ...], sizes: dict) -> tuple[int, ...]:
    return tuple(sizes.get(d, n) for d, n in zip(dims, shape, strict=True))


def _dask_arrays(path: str, found: dict, wants: dict[str, tuple[int, ...]]) -> dict:
    import dask  # here: a run that only writes should not pay dask's import
    import dask.array as da

    token = f"{path}-{Path(path).stat().st_mtime_ns}"
    arrays = {}
    for name, (_, shape, dtype, _) in found["layout"].items():
        want = wants[name]
        if want != shape and dtype.kind in "iub":
            dtype = np.dtype(np.float64)
        chunk = dask.delayed(_padded, pure=True)(path, name, want)
        arrays[name] = da.from_delayed(chunk, shape=want, dtype=dtype, name=f"ns-{token}-{name}")
    return arrays


def combined_nbytes(layouts: list[dict], sizes: dict[str, int]) -> int:
    """At most the bytes of the files' data variables once combined as `open_run` does:
    each over the grid of the sweep values present (what the unstack builds, a partial
    grid included), every other dimension over the union of its coordinate values (what
    the outer join builds) or its padded size, 8 bytes a value."""
    sweep_dims = json.loads(layouts[0]["attrs"].get("sweep_dims", "[]"))
    values: dict[str, set] = {}
    lengths: dict[str, int] = {}
    for found in layouts:
        for name, var in found["coords"].items():
            if name in sweep_dims or var.dims == (name,):
                values.setdefault(name, set()).update(np.asarray(var.values).ravel().tolist())
        for dims, shape, _, _ in found["layout"].values():
            for d, n in zip(dims, shape, strict=True):
                lengths[d] = max(lengths.get(d, 0), n)
    members = sum(f["coords"]["member"].shape[0] for f in layouts if "member" in f["coords"])
    grid = math.prod(len(values[d]) for d in sweep_dims if d in values) or members
    size = {d: sizes.get(d, len(values.get(d, ())) or n) for d, n in lengths.items()}
    size["member"] = max(grid, members)
    shapes = {name: dims for found in layouts for name, (dims, *_) in found["layout"].items()}
    return sum(8 * math.prod(size[d] for d in dims) for dims in shapes.values())


def padded_sizes(layouts: list[dict]) -> dict[str, int]:
    """The largest size of each PADDED dimension over files' read_layout results."""
    sizes: dict[str, int] = {}
    for found in layouts:
        dims = {}
        for var in found["coords"].values():
            dims.update(zip(var.dims, var.shape, strict=True))
        for var_dims, shape, _, _ in found["layout"].values():
            dims.update(zip(var_dims, shape, strict=True))
        for dim in PADDED:
            if dim in dims:
                sizes[dim] = max(sizes.get(dim, 0), dims[dim])
    return sizes
