"""Results on disk: one netCDF file per group (written atomically), read back as one Dataset."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import UserError
from ..spec import Group, Spec, resolved_toml, spec_hash, sweep_axes

GROUP_GLOB = "group-*.nc"


def group_path(run_dir: Path, group: Group) -> Path:
    return run_dir / f"group-{group.index:03d}.nc"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sweep_layout(spec: Spec) -> tuple[list[str], dict[str, str]]:
    """Sweep dimension names, and zipped coordinates -> the dimension they ride on."""
    dims, riders = [], {}
    for axis in sweep_axes(spec):
        dims.append(axis.dim)
        for path in axis.paths[1:]:
            riders[path.split(".")[-1]] = axis.dim
    return dims, riders


def group_dataset(spec: Spec, group: Group, run, device_name: str) -> xr.Dataset:
    """The labelled Dataset of one trained group (`run` is a runner.train.GroupRun)."""
    import torch

    import nodescope

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
        coords["layer_width"] = ("layer", run.widths)
    if "node" in ds.dims:
        coords["node"] = np.arange(ds.sizes["node"])
    if "label" in ds.dims:
        coords["label"] = np.arange(len(run.class_names))
        coords["label_name"] = ("label", run.class_names)
    for dim in ds.dims:  # index dims like rank or train_sample so groups align on concat
        if dim not in coords and dim not in ds.coords:
            coords[dim] = np.arange(ds.sizes[dim])
    ds = ds.assign_coords(coords)
    ds["epoch"].attrs.update(
        long_name="epoch", units="epoch", description="checkpoint position: step / steps_per_epoch"
    )
    ds["step"].attrs.update(long_name="optimiser step", units="1")
    dims, riders = sweep_layout(spec)
    ds.attrs.update(
        experiment=spec.experiment.name,
        resolved_spec=resolved_toml(spec),
        spec_hash=spec_hash(spec),
        group_hash=group.hash,
        group_index=group.index,
        sweep_dims=json.dumps(dims),
        sweep_riders=json.dumps(riders),
        nodescope_version=nodescope.__version__,
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        device=device_name,
        git_commit=git_commit(),
        wall_time_s=run.wall_time,
    )
    return ds


def write_atomic(ds: xr.Dataset, path: Path) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    tmp = path.with_suffix(".nc.tmp")
    encoding = {
        name: {"zlib": True, "complevel": 4}
        for name, var in ds.data_vars.items()
        if var.dtype.kind in "fiub"
    }
    ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
    os.replace(tmp, path)


def stored_hash(path: Path) -> str | None:
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            return ds.attrs.get("group_hash")
    except (OSError, ValueError):
        return None


def _load_group(path: Path) -> xr.Dataset:
    try:
        return xr.load_dataset(path, engine="netcdf4")
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{path}: cannot be read ({exc}); delete it and run the spec again to redo that group"
        ) from None


def open_run(run_dir: str | Path) -> xr.Dataset:
    """All groups of a results folder as one Dataset with the sweep axes as dimensions."""
    run_dir = Path(run_dir)
    files = sorted(run_dir.glob(GROUP_GLOB))
    if not files:
        raise UserError(
            f"{run_dir}: no results (group-*.nc) found; run `nodescope run SPEC` first "
            "or check the folder"
        )
    parts = [_load_group(f) for f in files]
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
    dims = json.loads(parts[0].attrs["sweep_dims"])
    riders = json.loads(parts[0].attrs["sweep_riders"])
    rider_values = {
        name: dict(zip(ds[dim].values.tolist(), ds[name].values.tolist(), strict=True))
        for name, dim in riders.items()
    }
    ds = ds.sortby("member")  # global member index: the spec's sweep order
    spec_order = {d: list(dict.fromkeys(ds[d].values.tolist())) for d in dims}
    ds = ds.drop_vars(list(riders))
    if len(dims) == 1:
        ds = ds.swap_dims(member=dims[0]).drop_vars("member")
    else:  # unstack sorts the values; put them back in the order the spec lists them
        ds = ds.set_index(member=dims).unstack("member").reindex(spec_order)
    for name, dim in riders.items():
        ds = ds.assign_coords({name: (dim, [rider_values[name][v] for v in ds[dim].values])})
    return ds.transpose(*dims, ...)
