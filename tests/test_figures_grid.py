"""Figures and --sel of a small multi-architecture sweep: 2 depths x 2 losses x 2 seeds."""

from __future__ import annotations

import matplotlib
import pytest

import nodescope
from nodescope.cli import main
from nodescope.errors import UserError
from nodescope.reports.figures import curves_figure
from nodescope.reports.sample_set_figures import activation_fraction_nodes_figure
from nodescope.reports.selection import select
from nodescope.spec.toml_io import dump_toml

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    from tiny_specs import tiny_spec_dict

    tmp = tmp_path_factory.mktemp("grid")
    spec = tiny_spec_dict()
    spec["probes"] = {"curves": {}, "sample_sets": {}}
    spec["sweep"] = {"model.depth": [1, 2], "training.loss": ["mse", "ce"], "seed": [0, 1]}
    path = tmp / "spec.toml"
    path.write_text(dump_toml(spec))
    assert main(["run", str(path), "--out", str(tmp / "run")]) == 0
    return path, tmp / "run"


def visible(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def test_curves_have_panels_per_loss_and_a_line_per_depth(grid):
    _, run = grid
    ds = nodescope.open(run).load()
    loss_dim = next(d for d in ds.dims if ds[d].attrs.get("description", "").endswith("loss"))
    fig = curves_figure(ds)
    axes = visible(fig)
    assert len(axes) == 2 * 2 * ds.sizes["split"]  # (mse, ce) x (loss, accuracy) x splits
    titles = [ax.get_title() for ax in axes]
    for loss in ("mse", "ce"):
        assert sum(f"({loss_dim}={loss})" in t for t in titles) == 2 * ds.sizes["split"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["depth=1", "depth=2"]
    for ax in axes:  # one line per depth, in distinct colours
        assert len(ax.get_lines()) == 2
        assert ax.get_lines()[0].get_color() != ax.get_lines()[1].get_color()
        assert ax.get_xscale() == "log"
    assert {ax.get_ylabel() for ax in axes if ax.get_ylabel()} == {
        ds["loss"].attrs["long_name"],
        ds["accuracy"].attrs["long_name"],
    }
    assert all(ax.get_xlabel() == "epoch" for ax in axes[-ds.sizes["split"] :])
    assert "mean ± standard error over 2 seeds" in fig._suptitle.get_text()


def test_per_node_figure_shows_the_selected_member_and_says_so(grid):
    _, run = grid
    ds = nodescope.open(run)
    loss_dim = next(d for d in ds.dims if ds[d].attrs.get("description", "").endswith("loss"))
    chosen = select(ds, ["depth=2", f"{loss_dim}=ce", "seed=1"]).load()
    fig = activation_fraction_nodes_figure(chosen)
    assert len(visible(fig)) == 2  # the depth-2 member's two layers
    assert f"depth=2, {loss_dim}=ce, seed=1" in fig._suptitle.get_text()
    default = activation_fraction_nodes_figure(ds.load())
    assert f"depth=1, {loss_dim}=mse, seed=0" in default._suptitle.get_text()


def test_sel_errors_are_one_line_naming_the_choices(grid):
    _, run = grid
    ds = nodescope.open(run)
    with pytest.raises(UserError, match=r"--sel depth=3: depth takes 1, 2"):
        select(ds, ["depth=3"])
    with pytest.raises(UserError, match="no sweep dimension width"):
        select(ds, ["width=16"])
    with pytest.raises(UserError, match="write dim=value"):
        select(ds, ["depth"])


def test_plot_and_report_take_sel(grid, tmp_path, capsys):
    _, run = grid
    assert main(["plot", str(run), "--out", str(tmp_path / "f"), "--sel", "depth=2"]) == 0
    assert (tmp_path / "f" / "curves.png").exists()
    capsys.readouterr()
    assert main(["report", str(run), "--sel", "depth=2", "seed=0"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == 2  # one member per loss


def test_run_sel_trains_only_the_chosen_points(grid, tmp_path):
    spec, _ = grid
    out = tmp_path / "narrow"
    assert main(["run", str(spec), "--out", str(out), "--sel", "depth=2", "seed=1"]) == 0
    ds = nodescope.open(out)
    assert ds.depth.values.tolist() == [2]
    assert ds.seed.values.tolist() == [1]
    assert "sweep" in (out / "overrides.toml").read_text()
    assert main(["run", str(spec), "--out", str(out), "--sel", "depth=5"]) == 2


def test_layer_means_get_one_file_per_loss(grid, tmp_path):
    from nodescope.reports.figures import write_figures

    _, run = grid
    ds = nodescope.open(run).load()
    loss_dim = next(d for d in ds.dims if ds[d].attrs.get("description", "").endswith("loss"))
    names = {p.name for p in write_figures(ds, tmp_path)}
    for loss in ("mse", "ce"):
        assert f"sample_set_layer_means_{loss_dim}={loss}.png" in names
    assert "curves.png" in names and "sample_set_layer_means.png" not in names
