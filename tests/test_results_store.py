"""The results folder as a contract: lazy opening, provenance, spec identity, partial runs."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array
import numpy as np
import pytest

import nodescope
from nodescope.cli import main
from nodescope.results import lazy
from nodescope.spec.toml_io import dump_toml


def run(tmp_path: Path, spec: dict, out: str = "run", *extra: str) -> int:
    path = tmp_path / "spec.toml"
    path.write_text(dump_toml(spec))
    return main(["run", str(path), "--out", str(tmp_path / out), *extra])


@pytest.fixture
def three_groups(tiny, tmp_path):
    """Three widths (three groups), two seeds each, depth 1 and 2 zipped with width."""
    tiny["sweep"] = {
        "model.width": [8, 16, 24],
        "model.depth": [1, 2, 2],
        "zip": [["model.width", "model.depth"]],
        "seed": [0, 1],
    }
    tiny["probes"] = {"curves": {}, "sample_sets": {"churn": False}}
    assert run(tmp_path, tiny) == 0
    return tmp_path / "run"


def test_open_is_lazy_and_a_selection_reads_only_its_group(three_groups, monkeypatch):
    reads = []
    original = lazy.read_variable

    def counting(path, name):
        reads.append((Path(path).name, name))
        return original(path, name)

    monkeypatch.setattr(lazy, "read_variable", counting)
    ds = nodescope.open(three_groups)
    assert reads == []
    for name, var in ds.data_vars.items():
        assert isinstance(var.data, dask.array.Array), name
    values = ds.sel(width=16).activation_fraction.load()
    assert reads == [("group-001.nc", "activation_fraction")]
    assert values.sel(layer=2).notnull().any()  # the depth-2 member's second layer


def test_results_that_fit_in_memory_read_at_once_equal_the_lazy_ones(three_groups, monkeypatch):
    """Reports read small results whole, without dask: the same Dataset, padding included
    (depth-1 members have NaN in layer 2; integer and boolean variables padded to float)."""
    from nodescope.runner.store import open_run

    lazy_ds = open_run(three_groups)
    opened = []
    original = lazy._read_padded
    monkeypatch.setattr(lazy, "_read_padded", lambda p, s: opened.append(p) or original(p, s))
    eager = open_run(three_groups, load_below=2**30)
    assert len(opened) == 3  # one open per group file
    assert not any(v.chunks for v in eager.variables.values())
    xr_testing = pytest.importorskip("xarray.testing")
    xr_testing.assert_identical(eager, lazy_ds.compute())
    assert eager.activation_fraction.sel(width=8, layer=2).isnull().all()
    assert any(lazy_ds[name].chunks for name in lazy_ds.data_vars)
    assert open_run(three_groups, load_below=1000).activation_fraction.chunks  # too big


def test_the_size_bound_for_reading_at_once_covers_partial_grids_and_joins(tiny, tmp_path):
    """A 2 x 2 width x depth grid with its off-diagonal groups missing unstacks to the
    whole grid (NaN where missing), and groups with different epochs join on the union of
    their epochs: the bound that decides on reading at once must cover both."""
    from nodescope.results.lazy import combined_nbytes, padded_sizes, read_layout
    from nodescope.runner.store import open_run

    tiny["sweep"] = {"model.width": [8, 16], "model.depth": [1, 2], "training.epochs": [2, 3]}
    tiny["sweep"]["zip"] = [["model.depth", "training.epochs"]]
    assert run(tmp_path, tiny) == 0
    folder = tmp_path / "run"
    for name in ("group-001.nc", "group-002.nc"):
        (folder / name).unlink()
    files = sorted(folder.glob("group-*.nc"))
    layouts = [read_layout(f) for f in files]
    bound = combined_nbytes(layouts, padded_sizes(layouts))
    combined = open_run(folder)
    assert "partial" in combined.attrs
    data_bytes = sum(v.nbytes for v in combined.data_vars.values())
    stored = sum(
        np.prod(shape) * dtype.itemsize
        for f in layouts
        for _, shape, dtype, _ in f["layout"].values()
    )
    assert data_bytes > stored  # the grid and the join grew it
    assert bound >= data_bytes
    assert open_run(folder, load_below=bound).identical(combined.compute())


def test_building_results_leaves_dask_unimported_until_used():
    """xarray looks dask.array up on its first Variable and dask.base on its first index;
    nodescope defers both imports until dask is imported, after which xarray's dask
    handling is whole again."""
    import subprocess
    import sys

    code = (
        "import sys, numpy, nodescope, xarray as xr\n"
        "xr.Dataset({'a': ('x', numpy.arange(3.0))}, coords={'x': [1, 5, 2]}).mean()\n"
        "assert 'dask' not in sys.modules, 'dask imported'\n"
        "import dask.array as da\n"
        "from xarray.namedarray.pycompat import array_type\n"
        "from xarray.namedarray.utils import is_dask_collection\n"
        "assert array_type('dask') == (da.Array,)\n"
        "lazy = xr.DataArray(da.zeros(4, chunks=2), dims='x', coords={'x': [0, 1, 2, 3]})\n"
        "assert 'dask.array' in repr(lazy) and lazy.chunks == ((2, 2),)\n"
        "assert is_dask_collection(lazy) and not is_dask_collection(lazy.x)\n"
        "assert float(lazy.sum().compute()) == 0.0\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_layer_width_and_node_flags_explain_themselves(three_groups):
    ds = nodescope.open(three_groups)
    assert ds.layer_width.dtype.kind == "i"
    assert ds.layer_width.sel(seed=0).values.tolist() == [[8, 0], [16, 16], [24, 24]]
    assert ds.dead.dtype == bool and ds.always_active.dtype == bool
    counts = ds.ns.node_counts("dead").sel(seed=0).isel(epoch=-1)
    assert np.isnan(float(counts.sel(width=8, layer=2)))  # no such layer, not 0 dead nodes
    assert float(counts.sel(width=16, layer=2)) >= 0
    for name in ds.coords:
        assert {"long_name", "units", "description"} <= set(ds[name].attrs), name
    assert "model.width" in ds.width.attrs["description"]
    assert "model.depth" in ds.depth.attrs["description"]


def test_provenance_attributes(tiny, tmp_path, capsys):
    tiny["experiment"]["description"] = "a tiny run"
    assert run(tmp_path, tiny, "run", "--set", "model.width=12", "--set", "training.epochs=2") == 0
    out = tmp_path / "run"
    ds = nodescope.open(out)
    for key in (
        "group_started",
        "group_finished",
        "nodescope_version",
        "torch_version",
        "numpy_version",
        "xarray_version",
        "netcdf4_version",
        "python_version",
        "git_commit",
        "git_dirty",
        "device",
        "cuda_device_count",
        "command",
        "data_sha256",
        "spec_as_given",
        "resolved_spec",
    ):
        assert key in ds.attrs, key
    assert json.loads(ds.attrs["overrides"]) == ["model.width=12", "training.epochs=2"]
    assert "--set model.width=12" in ds.attrs["command"]
    assert "model.width=12" in (out / "overrides.toml").read_text()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "a tiny run" in shown and "--set model.width=12" in shown


def test_mnist_provenance_records_data_checksums(tmp_path):
    from nodescope.results.provenance import cached_sha256

    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert cached_sha256(f) == sha
    assert cached_sha256(f) == sha  # from the cache
    f.write_bytes(b"abcd")  # a changed file is hashed again
    assert cached_sha256(f) != sha
    other = tmp_path / "x.bin.old"
    other.write_bytes(b"abc")
    cached_sha256(other)
    cache = json.loads((tmp_path / ".sha256-cache.json").read_text())
    assert sorted(k.split(":")[0] for k in cache) == ["x.bin", "x.bin.old"]  # one entry each


def test_settings_that_cannot_change_results_keep_the_stored_groups(tiny, tmp_path, capsys):
    tiny["sweep"] = {"seed": [0, 1, 2]}
    assert run(tmp_path, tiny) == 0
    before = nodescope.open(tmp_path / "run").final_loss.load()
    tiny["experiment"]["description"] = "now described"
    tiny["training"]["eval_chunk"] = 17
    tiny["device"] = {"type": "cpu"}
    capsys.readouterr()
    assert run(tmp_path, tiny) == 0
    assert "1 already stored" in capsys.readouterr().out
    # regrouping retrains what it must and never mixes stale files into the results
    tiny["device"] = {"max_group_size": 2}
    assert run(tmp_path, tiny) == 0
    after = nodescope.open(tmp_path / "run")
    assert after.sizes["seed"] == 3 and "partial" not in after.attrs
    np.testing.assert_allclose(after.final_loss, before, rtol=1e-6)


def test_settings_that_change_results_are_refused_by_name(tiny, tmp_path, capsys):
    assert run(tmp_path, tiny) == 0
    tiny["optimiser"]["lr"] = 0.02
    tiny["checkpoints"]["weights"] = "final"
    capsys.readouterr()
    assert run(tmp_path, tiny) == 2
    err = capsys.readouterr().err
    assert "checkpoints.weights" in err and "optimiser.lr" in err and "--fresh" in err


def test_a_failed_start_does_not_block_a_corrected_spec(tiny, tmp_path, capsys):
    tiny["data"] = {"name": "mnist", "train_size": 100, "val_size": 0, "test_size": 100}
    import os

    os.environ["NODESCOPE_DATA"] = str(tmp_path / "empty")
    try:
        assert run(tmp_path, tiny) == 2
    finally:
        del os.environ["NODESCOPE_DATA"]
    from tiny_specs import tiny_spec_dict

    assert run(tmp_path, tiny_spec_dict()) == 0


def test_partial_folders_name_the_missing_sweep_points(tiny, tmp_path, capsys):
    tiny["sweep"] = {"model.width": [8, 16], "seed": [0, 1]}
    assert run(tmp_path, tiny) == 0
    (tmp_path / "run" / "group-001.nc").unlink()
    ds = nodescope.open(tmp_path / "run")
    assert ds.attrs["partial"].startswith("1 of 2 groups not stored yet")
    assert "width=16, seed=0" in ds.attrs["partial"]
    capsys.readouterr()
    assert main(["report", str(tmp_path / "run")]) == 0
    assert "partial" in capsys.readouterr().out


def test_at_epoch_takes_the_nearest_checkpoint_and_says_so(tiny, tmp_path):
    assert run(tmp_path, tiny) == 0
    ds = nodescope.open(tmp_path / "run")
    with pytest.warns(UserWarning, match="took the checkpoint at epoch"):
        near = ds.ns.at_epoch(2.2)
    assert float(near.epoch) in ds.epoch.values and "epoch" not in near.loss.dims
    exact = ds.ns.at_epoch(float(ds.epoch[-1]))
    assert exact.attrs["at_epoch"].startswith("asked for epoch 3")


def test_group_files_read_back_as_xarray_writes_them_and_skip_dask_distributed(tmp_path):
    """write_atomic bypasses to_netcdf (whose lock choice imports dask.distributed); the
    file must read back identical to to_netcdf's, compression and checksums included."""
    import subprocess
    import sys

    import xarray as xr

    from nodescope.runner.store import write_atomic

    ds = xr.Dataset(
        {
            "value": (("member", "node"), np.arange(6.0).reshape(2, 3) / 7),
            "flag": ("node", np.array([True, False, True])),
            "count": ("member", np.array([3, -1], dtype=np.int64)),
            "gap": ("node", np.array([np.nan, 1.5, -2.0], dtype=np.float32)),
        },
        coords={"member": ["a", "b"], "node": np.arange(3), "label": ("node", ["x", "y", "z"])},
        attrs={"spec": "[model]\nwidth = 3", "steps": [1, 2]},
    )
    ds["value"].attrs.update(units="1", description="μ over samples")
    write_atomic(ds, tmp_path / "ours.nc")
    ds.to_netcdf(tmp_path / "xarray.nc", engine="netcdf4")
    with (
        xr.open_dataset(tmp_path / "ours.nc") as ours,
        xr.open_dataset(tmp_path / "xarray.nc") as ref,
    ):
        assert ours.identical(ref) and ours.identical(ds)
        assert ours["value"].encoding["zlib"] and ours["value"].encoding["fletcher32"]
        assert ours["flag"].dtype == bool
    code = (
        "import sys, numpy, xarray; from pathlib import Path;"
        "from nodescope.runner.store import write_atomic;"
        "ds = xarray.Dataset({'a': ('x', numpy.ones(3))});"
        f"write_atomic(ds, Path({str(tmp_path / 'c.nc')!r}));"
        "print('distributed' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        == "False\n"
    )
