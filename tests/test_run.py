from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import nodescope
from nodescope.cli import main
from nodescope.spec.toml_io import dump_toml

ROOT = Path(__file__).resolve().parents[1]


def write_spec(tmp_path: Path, spec: dict, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(dump_toml(spec))
    return path


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "quickstart"
    assert main(["run", str(ROOT / "specs/quickstart.toml"), "--out", str(out)]) == 0
    return out


def test_quickstart_reads_back_with_sweep_axes_as_dimensions(quickstart):
    ds = nodescope.open(quickstart)
    assert ds.sizes["seed"] == 3 and ds.sizes["sigma"] == 2
    assert list(ds.sigma.values) == [0.4, 1.2]
    assert ds.loss.dims == ("seed", "sigma", "split", "epoch")
    assert ds.activation_fraction.dims == ("seed", "sigma", "epoch", "layer", "node", "label")
    val = ds.loss.sel(split="val").mean("seed")
    assert val.dims == ("sigma", "epoch")
    assert ds.step.values[0] == 0 and ds.epoch.values[0] == 0.0
    assert np.allclose(ds.epoch.values, ds.step.values / ds.step.values[-1] * 20)
    # trained networks beat chance clearly; the untrained ones do not
    assert (ds.final_accuracy.sel(split="test") > 0.8).all()
    assert (abs(ds.accuracy.isel(epoch=0).sel(split="test") - 0.5) < 0.1).all()
    # the curves probe's last checkpoint is the final network
    assert np.allclose(ds.loss.isel(epoch=-1), ds.final_loss.sel(split=ds.loss.split))
    for name, var in ds.data_vars.items():
        assert {"long_name", "units", "description"} <= set(var.attrs), name
    for key in (
        "resolved_spec",
        "spec_hash",
        "torch_version",
        "python_version",
        "device",
        "git_commit",
        "wall_time_s",
        "nodescope_version",
    ):
        assert key in ds.attrs, key


def test_activation_fraction_is_a_fraction_per_class(quickstart):
    af = nodescope.open(quickstart).activation_fraction
    assert float(af.min()) >= 0 and float(af.max()) <= 1
    # bias-free ReLU layer on L2-normalised inputs: about half the samples switch each
    # node on at initialisation
    assert 0.3 < float(af.isel(epoch=0).mean()) < 0.7


def test_results_folder_layout(quickstart):
    names = sorted(p.name for p in quickstart.iterdir())
    assert "spec.toml" in names and "resolved_spec.toml" in names
    assert [n for n in names if n.endswith(".nc")] == ["group-000.nc"]
    assert (quickstart / "spec.toml").read_text() == (ROOT / "specs/quickstart.toml").read_text()


def test_rerun_skips_stored_groups(quickstart, capsys):
    before = (quickstart / "group-000.nc").stat().st_mtime_ns
    assert main(["run", str(ROOT / "specs/quickstart.toml"), "--out", str(quickstart)]) == 0
    assert (quickstart / "group-000.nc").stat().st_mtime_ns == before
    assert "1 already stored" in capsys.readouterr().out


def test_report_rerenders_from_files(quickstart, capsys):
    assert main(["report", str(quickstart)]) == 0
    out = capsys.readouterr().out
    assert "final metrics per member" in out and "1.2" in out


def test_plot_writes_png_and_pdf(quickstart, tmp_path):
    assert main(["plot", str(quickstart), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert (tmp_path / "curves.pdf").exists()


def test_same_spec_and_seed_give_identical_results(tiny, tmp_path):
    path = write_spec(tmp_path, tiny)
    for out in ("a", "b"):
        assert main(["run", str(path), "--out", str(tmp_path / out)]) == 0
    a, b = (nodescope.open(tmp_path / out) for out in ("a", "b"))
    for name in ("loss", "accuracy", "activation_fraction", "final_loss"):
        xr.testing.assert_identical(a[name], b[name])


def test_different_spec_in_same_folder_needs_fresh(tiny, tmp_path, capsys):
    path = write_spec(tmp_path, tiny)
    out = str(tmp_path / "run")
    assert main(["run", str(path), "--out", out]) == 0
    assert main(["run", str(path), "--out", out, "--set", "model.width=8"]) == 2
    err = capsys.readouterr().err
    assert "holds results of a different spec" in err and "--fresh" in err
    assert "Traceback" not in err
    assert main(["run", str(path), "--out", out, "--set", "model.width=8", "--fresh"]) == 0
    assert nodescope.open(out).sizes["node"] == 8


def test_groups_of_different_widths_pad_nodes_with_nan(tiny, tmp_path):
    tiny["sweep"] = {"model.width": [4, 8], "seed": [0, 1]}
    out = tmp_path / "run"
    assert main(["run", str(write_spec(tmp_path, tiny)), "--out", str(out)]) == 0
    ds = nodescope.open(out)
    assert len(list(out.glob("group-*.nc"))) == 2
    af = ds.activation_fraction.sel(layer=1)
    assert ds.sizes["node"] == 8
    assert af.sel(width=4, node=slice(4, None)).isnull().all()
    assert af.sel(width=4, node=slice(0, 3)).notnull().all()
    assert af.sel(width=8).notnull().all()


def test_zipped_axes_become_one_dimension(tiny, tmp_path):
    tiny["sweep"] = {
        "model.depth": [1, 2],
        "model.width": [4, 8],
        "zip": [["model.depth", "model.width"]],
    }
    out = tmp_path / "run"
    assert main(["run", str(write_spec(tmp_path, tiny)), "--out", str(out)]) == 0
    ds = nodescope.open(out)
    assert "width" not in ds.dims and list(ds.width.values) == [4, 8]
    assert ds.width.dims == ("depth",)
    assert ds.sizes["layer"] == 2


def test_user_errors_are_one_line_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[experiment]\nname = "x"\n[data]\nname = "synthetic_patterns"\n[model]\nwidht = 3\n'
    )
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean 'width'" in err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "no such spec file" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().err


def test_missing_mnist_tells_how_to_fetch(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NODESCOPE_DATA", str(tmp_path / "empty"))
    tiny["data"] = {"name": "mnist", "train_size": 100, "val_size": 10, "test_size": 10}
    path = write_spec(tmp_path, tiny)
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "nodescope fetch mnist" in err and "Traceback" not in err


def test_every_spec_in_the_repo_validates(capsys):
    specs = sorted(glob.glob(str(ROOT / "specs/**/*.toml"), recursive=True))
    assert specs
    assert main(["validate", *specs]) == 0, capsys.readouterr().err


def test_corrupt_group_file_is_one_line_and_rerun_redoes_it(tiny, tmp_path, capsys):
    path = write_spec(tmp_path, tiny)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    (out / "group-000.nc").write_bytes(b"not netcdf")
    assert main(["report", str(out)]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert main(["run", str(path), "--out", str(out)]) == 0
    assert nodescope.open(out).sizes["seed"] == 1


def test_error_text_with_brackets_is_printed_verbatim(tiny, tmp_path, capsys):
    tiny["sweep"] = {"model.width": [4], "zip": "model.width"}
    assert main(["validate", str(write_spec(tmp_path, tiny))]) == 1
    err = capsys.readouterr().err
    assert "[bold]" not in err and "error:" in err
    assert "sweep" in err
