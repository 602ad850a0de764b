"""Terminal output at 80 columns and narrower: whole columns go, numbers are never cut."""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr
from rich.console import Console

from nodescope.reports.summary import summary_table


def results(n_seeds: int = 3) -> xr.Dataset:
    rng = np.random.default_rng(0)
    splits = ["train", "val", "test"]
    ds = xr.Dataset(
        {
            "final_loss": (("seed", "lr", "split"), rng.random((n_seeds, 2, 3)) * 100),
            "final_accuracy": (("seed", "lr", "split"), rng.random((n_seeds, 2, 3))),
            "stop_epoch": (("seed", "lr"), np.full((n_seeds, 2), 12.0)),
            "wall_time": (("seed", "lr"), np.full((n_seeds, 2), 1234.5)),
        },
        coords={"seed": np.arange(n_seeds), "lr": [0.001, 0.0003], "split": splits},
        attrs={"sweep_dims": '["seed", "lr"]', "experiment": "wide"},
    )
    ds["final_accuracy"][0, 0, 0] = 1.0  # "100.0%", the widest accuracy
    return ds


def render(table, width: int) -> str:
    console = Console(width=width, record=True, force_terminal=False)
    console.print(table)
    return console.export_text()


@pytest.mark.parametrize("width", [50, 60, 70, 80, 100])
def test_summary_never_cuts_a_number(width):
    ds = results()
    text = render(summary_table(ds, width=width), width)
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    assert "100.0%" in text and "0.0003" in text
    if width <= 80:
        assert "not shown at this width: group wall s" in text


def test_wide_terminals_show_every_column():
    text = render(summary_table(results(), width=200), 200)
    assert "wall s" in text and "1234.5" in text and "not shown" not in text


@pytest.mark.parametrize("width", [80, 120])
def test_progress_shows_phase_steps_elapsed_and_eta_uncut(width):
    from nodescope.reports.progress import RunProgress

    console = Console(width=width, record=True, force_terminal=True)
    bars = RunProgress(console, {0: 800, 11: 800}, total_steps=320000)
    group = bars.for_group(11, 3)
    group(123456, 160000, 0.0123, "training")
    bars.for_group(0, 3)(0, 160000, float("nan"), "first checkpoint")
    console.print(bars.progress.get_renderable())
    text = console.export_text()
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    lines = text.splitlines()
    sweep, training, starting = (
        next(line for line in lines if line.startswith(key))
        for key in ("sweep", "group 11", "group 0")
    )
    assert "123456/320000" in sweep
    assert "123456/160000" in training and "epoch 154.32 loss 0.0123" in training
    assert "0/160000" in starting and "first checkpoint" in starting
    for line in (sweep, training, starting):
        assert re.search(r"elapsed \d+:\d\d:\d\d ETA (\d+:\d\d:\d\d|-:--:--)", line), line
    if width >= 110:
        assert "group 11 (3 members)" in training and "steps" in training


def test_progress_in_logs_names_each_phase():
    from nodescope.reports.progress import RunProgress

    console = Console(width=80, record=True, force_terminal=False)
    log = RunProgress(console, {0: 10}).for_group(0, 1)
    for phase in ("loading data", "first checkpoint"):
        log(0, 100, float("nan"), phase)
    log(10, 100, 0.5)
    log(100, 100, 0.25, "final evaluation")
    text = console.export_text()
    assert "group 0 (1 member): step 0/100, loading data" in text
    assert "step 0/100, first checkpoint" in text and "ETA –" in text
    assert "step 10/100, epoch 1.00, loss 0.5000" in text
    assert "step 100/100, final evaluation" in text


@pytest.fixture(scope="module")
def cooperating_run(tmp_path_factory):
    """A real run with both cooperating-classifier probes over a learning-rate sweep."""
    from tiny_specs import tiny_spec_dict

    import nodescope
    from nodescope.cli import main
    from nodescope.spec.toml_io import dump_toml

    folder = tmp_path_factory.mktemp("cooperating")
    spec = tiny_spec_dict(
        **{
            "model.depth": 2,
            "probes": {"perplexity": {}, "node_classifiers": {}},
            "sweep": {"optimiser.lr": [0.01, 0.0003]},
        }
    )
    (folder / "spec.toml").write_text(dump_toml(spec))
    assert main(["run", str(folder / "spec.toml"), "--out", str(folder / "run")]) == 0
    return nodescope.open(folder / "run").load()


@pytest.mark.parametrize("width", [60, 80, 100])
def test_cooperating_panel_never_cuts_a_number(cooperating_run, width):
    from nodescope.reports.cooperating import cooperating_panel

    text = render(cooperating_panel(cooperating_run, width=width), width)
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    assert "0.0003" in text and "perplexity" in text and "comb %" in text
    assert "not shown at this width: train net %" in text.replace("\n", " ")


def test_cooperating_panel_on_a_wide_terminal_shows_every_column(cooperating_run):
    from nodescope.reports.cooperating import cooperating_panel

    text = render(cooperating_panel(cooperating_run, width=200), 200)
    assert "not shown" not in text and text.count("net %") == 2 and "distinct" in text


def test_gap_condition_panel_fits_80_columns_with_an_architecture_sweep(tmp_path):
    from tiny_specs import tiny_spec_dict

    import nodescope
    from nodescope.cli import main
    from nodescope.reports.activation_gaps import gap_condition_panel
    from nodescope.spec.toml_io import dump_toml

    spec = tiny_spec_dict(
        **{
            "model.summary_width": 2,
            "model.output_bias": False,
            "probes": {"activation_gaps": {"n_samples": 20, "n_misclassified": 8}},
            "sweep": {"model.width": [16, 300], "seed": [0, 1]},
        }
    )
    (tmp_path / "spec.toml").write_text(dump_toml(spec))
    assert main(["run", str(tmp_path / "spec.toml"), "--out", str(tmp_path / "run")]) == 0
    text = render(gap_condition_panel(nodescope.open(tmp_path / "run").load()), 80)
    assert "…" not in text and "misclassified" in text and "normalised" in text
    assert all(len(line) <= 80 for line in text.splitlines())


def noise_grid(n: int = 8) -> xr.Dataset:
    """Paper Fig. 1's grid: n sigma_train × n sigma_test, 3 seeds; seed 0 of the first
    cell at 100% makes the widest mean."""
    rng = np.random.default_rng(1)
    acc = rng.uniform(0.5, 0.99, (n, 3, n))
    acc[0, :, 0] = [1.0, 0.9, 0.8]  # mean 90.0, standard error 5.8
    sigmas = np.round(np.linspace(0.1, 1.5, n), 2)
    return xr.Dataset(
        {"accuracy_noise": (("sigma", "seed", "sigma_test"), acc)},
        coords={"sigma": sigmas, "seed": [0, 1, 2], "sigma_test": sigmas},
        attrs={"sweep_dims": '["sigma", "seed"]', "experiment": "grid"},
    )


@pytest.mark.parametrize("width", [80, 100])
def test_accuracy_grid_never_cuts_a_number(width):
    from nodescope.reports.winner_take_most import accuracy_grid_panel

    text = render(accuracy_grid_panel(noise_grid(), width=width), width)
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("0.1 "))
    if width == 80:  # "mean±error" cells do not fit: each error below its mean
        assert lines[first].split()[1] == "90.0" and lines[first + 1].split()[0] == "±5.8"
    else:
        assert lines[first].split()[1] == "90.0±5.8"


def test_accuracy_grid_on_a_wide_terminal_keeps_mean_and_error_on_one_line():
    from nodescope.reports.winner_take_most import accuracy_grid_panel

    text = render(accuracy_grid_panel(noise_grid(), width=200), 200)
    assert "90.0±5.8" in text
