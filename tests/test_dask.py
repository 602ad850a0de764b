from __future__ import annotations

import pytest
import xarray as xr

import nodescope
from nodescope.cli import main
from nodescope.spec.toml_io import dump_toml

pytest.importorskip("dask.distributed")


def test_dask_executor_stores_the_same_results_as_local(tiny, tmp_path):
    tiny["sweep"] = {"seed": [0, 1], "model.width": [4, 8]}
    spec = tmp_path / "spec.toml"
    spec.write_text(dump_toml(tiny))
    assert main(["run", str(spec), "--out", str(tmp_path / "local")]) == 0
    assert main(["run", str(spec), "--out", str(tmp_path / "dask"), "--executor", "dask"]) == 0
    local, remote = nodescope.open(tmp_path / "local"), nodescope.open(tmp_path / "dask")
    assert len(list((tmp_path / "dask").glob("group-*.nc"))) == 2
    for name in ("loss", "activation_fraction", "final_accuracy"):
        xr.testing.assert_identical(local[name], remote[name])
