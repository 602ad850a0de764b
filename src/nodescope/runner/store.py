"""Results on disk: one netCDF file per group (written atomically), read back as one Dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import UserError
from ..spec import Group, Spec, resolved_toml, spec_hash, sweep_axes

GROUP_GLOB = "group-*.nc"


def group_path(run_dir: Path, group: Group) -> Path:
    return run_dir / f"group-{group.index:03d}.nc"


def sweep_layout(spec: Spec) -> tuple[list[str], dict[str, str]]:
    """Sweep dimension names, and zipped coordinates -> the dimension they ride on."""
    dims, riders = [], {}
    for axis in sweep_axes(spec):
        dims.append(axis.dim)
        for path in axis.paths[1:]:
            riders[path.split(".")[-1]] = axis.dim
    return dims, riders


def group_dataset(
    spec: Spec, group: Group, run, device_name: str, provenance: dict[str, str] | None = None
) -> xr.Dataset:
    """The labelled Dataset of one trained group (`run` is a runner.train.GroupRun);
    `provenance` holds the attributes of results.provenance.group_provenance."""
    ds = xr.Dataset(run.variables)
    members = group.members
    coords = {"member": [m.index for m in members]}
    for key in members[0].coords:
        coords[key] = ("member", [m.coords[key] for m in members])
    steps = np.array(run.steps)
    coords["epoch"] = steps / run.steps_per_epoch
    coords["step"] = ("epoch", steps)
    if "layer" in ds.dims:
        coords["layer"] = np.arange(1, len(run.widths) + 1)
        coords["layer_width"] = (("member", "layer"), np.tile(run.widths, (len(members), 1)))
    if "node" in ds.dims:
        coords["node"] = np.arange(ds.sizes["node"])
    if "label" in ds.dims:
        coords["label"] = np.arange(len(run.class_names))
        coords["label_name"] = ("label", run.class_names)
    for dim in ds.dims:  # index dims like rank or train_sample so groups align on concat
        if dim not in coords and dim not in ds.coords:
            coords[dim] = np.arange(ds.sizes[dim])
    ds = ds.assign_coords(coords)
    describe_coordinates(ds, spec)
    dims, riders = sweep_layout(spec)
    ds.attrs.update(
        experiment=spec.experiment.name,
        resolved_spec=resolved_toml(spec),
        spec_hash=spec_hash(spec),
        group_hash=group.hash,
        group_index=group.index,
        sweep_dims=json.dumps(dims),
        sweep_riders=json.dumps(riders),
        device=device_name,
        wall_time_s=run.wall_time,
        **(provenance or {}),
    )
    return ds


COORDINATE_ATTRS = {
    "member": ("member", "1", "index of the member in the spec's sweep order"),
    "epoch": ("epoch", "epoch", "checkpoint position: step / steps_per_epoch"),
    "step": ("optimiser step", "1", "optimiser steps taken before the checkpoint"),
    "layer": ("hidden layer", "1", "hidden layer, 1 = first after the input"),
    "layer_width": (
        "layer width",
        "1",
        "nodes in the member's hidden layer (0: the member has no such layer)",
    ),
    "node": ("node", "1", "node index inside its layer; beyond layer_width values are NaN"),
    "label": ("class", "1", "class label"),
    "label_name": ("class name", "1", "name of the class label"),
    "split": ("data split", "1", "train, val (carved from the training set) or test"),
}


def describe_coordinates(ds: xr.Dataset, spec: Spec) -> None:
    """long_name, units and description on every coordinate; sweep coordinates name the
    spec path they sweep (also as the attribute `spec_path`)."""
    paths = {}
    for axis in sweep_axes(spec):
        for path in axis.paths:
            name = axis.dim if path == axis.paths[0] else path.split(".")[-1]
            paths[name] = path
    for name in ds.coords:
        if name in paths:
            attrs = (name, "1", f"sweep axis: the spec value {paths[name]}")
        else:
            attrs = COORDINATE_ATTRS.get(name, (name, "1", f"index along {name}"))
        long_name, units, description = attrs
        ds[name].attrs.update(long_name=long_name, units=units, description=description)
        if name in paths:
            ds[name].attrs["spec_path"] = paths[name]


def write_atomic(ds: xr.Dataset, path: Path) -> None:
    """Write to a uniquely named temporary file beside `path`, then rename: readers never
    see half a file. Variables are compressed and carry fletcher32 checksums; the file
    gets a SHA-256 sidecar (results.integrity)."""
    from ..results.integrity import write_file_atomic
    from ..results.lazy import NETCDF_LOCK

    encoding = {
        name: {"zlib": True, "complevel": 4, "fletcher32": True}
        for name, var in ds.data_vars.items()
        if var.dtype.kind in "fiub"
    }

    def write(tmp: Path) -> None:
        # What ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding) does, with the
        # netCDF library's lock given: to_netcdf asks dask for its scheduler to pick a
        # lock, which imports dask.distributed (0.3 s of every run) though nothing here
        # is distributed. The file is new and unique, and NETCDF_LOCK is held.
        from xarray.backends import NetCDF4DataStore
        from xarray.backends.common import ArrayWriter
        from xarray.backends.locks import NETCDFC_LOCK

        with NETCDF_LOCK:
            store = NetCDF4DataStore.open(tmp, mode="w", format="NETCDF4", lock=NETCDFC_LOCK)
            try:
                writer = ArrayWriter()
                ds.dump_to_store(store, writer=writer, encoding=encoding)
                writer.sync()
            finally:
                store.close()

    write_file_atomic(path, write)


def stored_hash(path: Path) -> str | None:
    """The group hash a group file was written with (None: missing or unreadable)."""
    from ..results.lazy import read_attrs

    try:
        return read_attrs(path).get("group_hash")
    except (OSError, ValueError, RuntimeError):
        return None


BOOLEAN_FLAGS = ("dead", "always_active")


def _read_layout(path: Path) -> dict:
    from ..results.lazy import read_layout

    try:
        return read_layout(path)
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(
            f"{path}: cannot be read ({exc}); delete it and run the spec again to redo that group"
        ) from None


def _planned_groups(run_dir: Path) -> list[Group] | None:
    """The groups of the folder's resolved spec (None when it cannot be read)."""
    from ..results.folder import read_resolved_spec
    from ..spec import plan

    try:
        return plan(read_resolved_spec(run_dir))
    except UserError:
        return None


def _missing_note(missing: list[Group], n_groups: int) -> str:
    points = [
        ", ".join(f"{k}={v}" for k, v in m.coords.items()) for g in missing for m in g.members
    ]
    shown = "; ".join(points[:3]) + (f"; and {len(points) - 3} more" if len(points) > 3 else "")
    return f"{len(missing)} of {n_groups} groups not stored yet ({shown})"


def open_run(run_dir: str | Path, load_below: int | None = None) -> xr.Dataset:
    """All groups of a results folder as one Dataset with the sweep axes as dimensions.

    Lazy: variables are dask arrays with one chunk per group file, read when used; but
    read into memory now, without dask, when they take at most `load_below` bytes.
    Only the files of the folder's current spec are read; groups not stored yet are
    named in the attribute `partial`.
    """
    from ..results.integrity import damage

    run_dir = Path(run_dir)
    groups = _planned_groups(run_dir)
    if groups is None:
        files, missing = sorted(run_dir.glob(GROUP_GLOB)), []
    else:
        files, missing = [], []
        for g in groups:
            path = group_path(run_dir, g)
            stored = stored_hash(path)
            if stored == g.hash:
                why = damage(path)
                if why:
                    raise UserError(
                        f"{path} is damaged ({why}); run the spec again to redo that group"
                    )
                files.append(path)
            elif stored is None and path.exists():
                _read_layout(path)  # names the damaged file and how to redo it
            else:
                missing.append(g)
    if not files:
        raise UserError(
            f"{run_dir}: no results (group-*.nc) found; run `nodescope run SPEC` first "
            "or check the folder"
        )
    from ..results.lazy import combined_nbytes, open_padded, padded_sizes

    layouts = [_read_layout(f) for f in files]
    sizes = padded_sizes(layouts)
    eager = load_below is not None and combined_nbytes(layouts, sizes) <= load_below
    parts = [open_padded(f, found, sizes, eager) for f, found in zip(files, layouts, strict=True)]
    wall = sum(float(p.attrs.get("wall_time_s", 0.0)) for p in parts)
    ds = (
        parts[0]
        if len(parts) == 1
        else xr.concat(
            parts,
            dim="member",
            join="outer",
            coords="different",
            compat="equals",
            combine_attrs="drop_conflicts",
        )
    )
    ds.attrs["wall_time_s"] = wall
    if missing:
        ds.attrs["partial"] = _missing_note(missing, len(groups))
    dims = json.loads(parts[0].attrs["sweep_dims"])
    riders = json.loads(parts[0].attrs["sweep_riders"])
    rider_values = {
        name: dict(zip(ds[dim].values.tolist(), ds[name].values.tolist(), strict=True))
        for name, dim in riders.items()
    }
    rider_attrs = {name: dict(ds[name].attrs) for name in riders}
    ds = ds.sortby("member")  # global member index: the spec's sweep order
    spec_order = {d: list(dict.fromkeys(ds[d].values.tolist())) for d in dims}
    ds = ds.drop_vars(list(riders))
    if len(dims) == 1:
        ds = ds.swap_dims(member=dims[0]).drop_vars("member")
    else:  # unstack sorts the values; put them back in the order the spec lists them
        ds = ds.set_index(member=dims).unstack("member").reindex(spec_order)
    for name, dim in riders.items():
        ds = ds.assign_coords({name: (dim, [rider_values[name][v] for v in ds[dim].values])})
        ds[name].attrs.update(rider_attrs[name])
    return _tidy(ds.transpose(*dims, ...))


def _tidy(ds: xr.Dataset) -> xr.Dataset:
    """Integer layer widths (0 where a member has no such layer) and boolean node flags."""
    if "layer_width" in ds.coords:
        attrs = ds["layer_width"].attrs
        width = ds["layer_width"].fillna(0).astype(int).compute()
        ds = ds.assign_coords(layer_width=width)
        ds["layer_width"].attrs.update(attrs)
    for name in BOOLEAN_FLAGS:
        if name in ds:
            attrs = ds[name].attrs
            ds[name] = ds[name] == 1
            ds[name].attrs.update(attrs, units="1")
    return ds
