"""Terminal output at 80 columns and narrower: whole columns go, numbers are never cut."""

from __future__ import annotations

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
