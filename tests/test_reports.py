"""Tests for the sample-set report panel and figures, on a small hand-made Dataset.

The Dataset is built here (no training run), so every expected value below is worked
out by hand from the numbers in `_dataset`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xarray as xr
from rich.console import Console

from nodescope.reports.figures import (
    FIGURES,
    activation_fraction_nodes_figure,
    sample_set_layer_means_figure,
    write_figures,
)
from nodescope.reports.sample_sets import sample_set_panel, sparkline

NAN = float("nan")
EPOCHS = [0.0, 0.1, 1.0, 10.0]
N_LABELS = 4

# Class-mean activation fraction per (seed, layer, node) over the 4 epochs; every class
# gets the same value. Layer 2 is 2 nodes wide (node 2 is padding).
FRACTION = {
    (0, 1): [[0.2, 0.4, 0.8, 0.0], [0.2, 0.4, 0.8, 0.0], [0.2, 0.4, 0.8, 0.3]],
    (1, 1): [[0.2, 0.4, 0.8, 0.0], [0.2, 0.4, 0.8, 0.3], [0.2, 0.4, 0.8, 0.3]],
    (0, 2): [[0.5, 0.4, 0.3, 1.0], [0.6, 0.5, 0.4, 0.2], [NAN] * 4],
    (1, 2): [[0.5, 0.4, 0.3, 1.0], [0.6, 0.5, 0.4, 0.6], [NAN] * 4],
}
# Hand results, seed means at the last checkpoint (epoch 10):
#   layer 1: f_l = 0.2, 0.4, 0.8, 0.3 -> peaks at epoch 1; dead 2 and 1 -> 1.5; always 0
#   layer 2: f_l = 0.55, 0.45, 0.35, (0.6 + 0.8) / 2 -> peaks at epoch 10; dead 0;
#            always active 1 and 1 -> 1.0


def _dataset() -> xr.Dataset:
    shape = (2, len(EPOCHS), 2, 3)  # seed, epoch, layer, node
    mean = np.full(shape, NAN)
    for (seed, layer), nodes in FRACTION.items():
        mean[seed, :, layer - 1, :] = np.array(nodes).T
    dead = np.where(np.isnan(mean), NAN, mean == 0)
    always = np.where(np.isnan(mean), NAN, mean == 1)
    defined = (dead == 0) & (always == 0)
    step = np.arange(1, len(EPOCHS) + 1)[None, :, None, None]
    dims = ("seed", "epoch", "layer", "node")
    return xr.Dataset(
        {
            "activation_fraction": (
                (*dims, "label"),
                np.repeat(mean[..., None], N_LABELS, axis=-1),
            ),
            "predictability": (dims, np.where(defined, 0.1 * step, NAN)),
            "informativeness": (dims, np.where(defined, 0.05 * step, NAN)),
            "dead": (dims, dead),
            "always_active": (dims, always),
        },
        coords={
            "seed": [0, 1],
            "epoch": EPOCHS,
            "step": ("epoch", [0, 1, 10, 100]),
            "layer": [1, 2],
            "layer_width": ("layer", [3, 2]),
            "node": [0, 1, 2],
            "label": np.arange(N_LABELS),
            "label_name": ("label", [f"class {c}" for c in range(N_LABELS)]),
        },
        attrs={"experiment": "hand", "sweep_dims": json.dumps(["seed"])},
    )


def _with_width_dim(ds: xr.Dataset) -> xr.Dataset:
    """The same members under a second sweep dim `width` = 8, 16."""
    out = xr.concat([ds, ds], dim="width").assign_coords(width=[8, 16])
    out = out.transpose("width", "seed", ...)
    out.attrs["sweep_dims"] = json.dumps(["width", "seed"])
    return out


def _only_fraction() -> xr.Dataset:
    """The Dataset as the activation_fraction probe alone would store it."""
    ds = _dataset()
    return ds[["activation_fraction"]].assign_attrs(ds.attrs)


def _render(panel) -> str:
    console = Console(record=True, width=200)
    console.print(panel)
    return console.export_text()


def _rows(panel, n_keys: int = 1) -> dict[str, list[str]]:
    """Rendered table rows split on whitespace, keyed by their first n_keys cells."""
    rows = {}
    for line in _render(panel).splitlines():
        tokens = line.split()
        if tokens and tokens[0].isdigit():
            rows[" ".join(tokens[:n_keys])] = tokens
    return rows


# --------------------------------------------------------------------------- sparkline


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 1, 2, 3, 4, 5, 6, 7], "▁▂▃▄▅▆▇█"),
        ([7, 0], "█▁"),
        ([0, 7, 3], "▁█▄"),
        ([0.2, 0.4, 0.8, 0.3], "▁▃█▂"),  # 0, 2.33, 7, 1.17 eighths-of-range -> rounded
        ([1.0, NAN, 3.0], "▁ █"),
        ([2.0, 2.0, 2.0], "▄▄▄"),  # constant: middle block
        ([NAN, 5.0, NAN], " ▄ "),  # one finite value is constant too
        ([NAN, NAN], "  "),
        ([], ""),
    ],
)
def test_sparkline(values, expected):
    assert sparkline(values) == expected


# --------------------------------------------------------------------------- panel


def test_panel_rows_hold_hand_values():
    rows = _rows(sample_set_panel(_dataset()))
    assert set(rows) == {"1", "2"}
    # layer, f_l first/spark/last, p_l ..., u_l ..., peak epoch, dead, always active;
    # sparklines on the fixed 0-1 scale: block rint(7 v), e.g. f_l 0.2 0.4 0.8 0.3 -> 1 3 6 2
    assert rows["1"] == [
        "1",
        *["0.20", "▂▄▇▃", "0.30"],
        *["0.10", "▂▂▃▄", "0.40"],  # 0.1 0.2 0.3 0.4 -> 1 1 2 3
        *["0.05", "▁▂▂▂", "0.20"],  # 0.05 0.1 0.15 0.2 -> 0 1 1 1
        *["1", "1.5", "0.0"],
    ]
    # 0.55 0.45 0.35 0.7 -> 4 3 2 5
    assert rows["2"][1:4] == ["0.55", "▅▄▃▆", "0.70"]
    assert rows["2"][-3:] == ["10", "0.0", "1.0"]


def test_panel_one_row_per_other_sweep_value_and_layer():
    rows = _rows(sample_set_panel(_with_width_dim(_dataset())), n_keys=2)
    assert sorted(rows) == ["16 1", "16 2", "8 1", "8 2"]
    assert rows["16 1"][-3:] == ["1", "1.5", "0.0"]


def test_panel_with_activation_fraction_only():
    ds = _only_fraction()
    text = _render(sample_set_panel(ds))
    assert "f_l" in text and "p_l" not in text and "u_l" not in text
    assert "activation fraction per layer" in text and "sample sets" not in text
    rows = _rows(sample_set_panel(ds))
    # dead / always active now come from the class-mean fraction (0 / 1): same counts
    assert rows["1"] == ["1", "0.20", "▂▄▇▃", "0.30", "1", "1.5", "0.0"]
    assert rows["2"][-3:] == ["10", "0.0", "1.0"]


def test_panel_none_without_sample_sets():
    ds = _dataset().drop_vars(
        ["activation_fraction", "predictability", "informativeness", "dead", "always_active"]
    )
    assert sample_set_panel(ds) is None


# --------------------------------------------------------------------------- figures

NEW_FIGURES = ("activation_fraction_nodes", "sample_set_layer_means")


def test_write_figures_png_and_pdf(tmp_path):
    written = write_figures(_dataset(), tmp_path)
    for name in NEW_FIGURES:
        assert name in FIGURES
        png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
        assert png in written and pdf in written
        assert png.read_bytes().startswith(b"\x89PNG")
        assert pdf.read_bytes().startswith(b"%PDF")
    assert "curves" not in {p.stem for p in written}  # no loss variable here


def test_write_figures_activation_fraction_only(tmp_path):
    written = {p.name for p in write_figures(_only_fraction(), tmp_path)}
    assert written == {"activation_fraction_nodes.png", "activation_fraction_nodes.pdf"}


def test_activation_fraction_nodes_figure_first_member():
    import matplotlib.pyplot as plt

    fig = activation_fraction_nodes_figure(_dataset())
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [len(ax.lines) for ax in axes] == [3, 2]  # every node of the layer, no padding
    assert "seed=0" in fig.get_suptitle()
    node2 = axes[0].lines[2]
    np.testing.assert_allclose(node2.get_xdata(), [0.1, 1.0, 10.0])  # epoch 0 left out
    np.testing.assert_allclose(node2.get_ydata(), [0.4, 0.8, 0.3])
    plt.close(fig)


def test_layer_means_figure_lines_and_informativeness_maximum():
    import matplotlib.pyplot as plt

    fig = sample_set_layer_means_figure(_dataset())
    f_ax, _, u_ax = fig.axes
    layer1 = next(line for line in f_ax.lines if line.get_label() == "layer 1")
    np.testing.assert_allclose(layer1.get_xdata(), [0.1, 1.0, 10.0])
    np.testing.assert_allclose(layer1.get_ydata(), [0.4, 0.8, 0.3])
    maxima = [line for line in u_ax.lines if line.get_label().startswith("maximum")]
    assert len(maxima) == 1
    np.testing.assert_allclose(maxima[0].get_ydata(), math.log(2) / math.log(N_LABELS))
    assert math.log(2) / math.log(N_LABELS) == 0.5
    plt.close(fig)


def test_layer_means_figure_one_row_per_other_sweep_value():
    import matplotlib.pyplot as plt

    fig = sample_set_layer_means_figure(_with_width_dim(_dataset()))
    assert len(fig.axes) == 6
    titles = [ax.get_title() for ax in fig.axes]
    assert sum("width=16" in t for t in titles) == 3
    maxima = [ln for ax in fig.axes for ln in ax.lines if ln.get_label().startswith("maximum")]
    assert len(maxima) == 2
    plt.close(fig)


@pytest.mark.parametrize(
    ("values", "scale", "expected"),
    [
        ([0.502, 0.527, 0.499], (0.0, 1.0), "▅▅▄"),  # a flat fraction stays (almost) flat
        ([0.0, 0.0, 0.0], (-2.0, 2.0), "▅▅▅"),  # an index that stays 0 sits in the middle
        ([0.0, 1 / 7, 1.0, 2.0, -1.0], (0.0, 1.0), "▁▂██▁"),  # clipped outside the scale
        ([NAN, 0.5], (0.0, 1.0), " ▅"),
    ],
)
def test_sparkline_on_a_fixed_scale(values, scale, expected):
    assert sparkline(values, scale) == expected
