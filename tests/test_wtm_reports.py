"""Tests for the winner-take-most panels and figures, on a small hand-made Dataset.

The Dataset is built here (no training run); every expected value below follows by hand
from the numbers in `_dataset`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from rich.console import Console

from nodescope.reports.figures import FIGURES, write_figures, wtm_pattern_preactivations_figure
from nodescope.reports.winner_take_most import (
    BEST,
    accuracy_grid_panel,
    first_crossing,
    wtm_panel,
)

NAN = float("nan")
SIGMAS = [0.2, 0.4, 1.2]
SIGMA_TEST = [0.1, 0.4, 0.8]
EPOCHS = [0.0, 0.5, 2.0, 8.0]
PATTERN_CLASS = [0, 0, 1, 1]
TRAIN_PATTERN = [0, 1, 0, 1, 2, 3, 2, 3]
TRAIN_LABEL = [0, 0, 0, 0, 1, 1, 1, 1]

# Seed-mean test accuracy, sigma_train (rows) x sigma_test (columns). Best per column:
# 0.2 (90.0), 0.4 (90.0), 1.2 (65.0). Seeds are mean ± 0.01, except (0.4, 0.1) at
# mean ± 0.15: seed 0 alone (1.00) would make 0.4 the best of column 0.
ACC_MEAN = np.array([[0.90, 0.80, 0.50], [0.85, 0.90, 0.60], [0.70, 0.75, 0.65]])
ACC_DELTA = np.full(ACC_MEAN.shape, 0.01)
ACC_DELTA[1, 0] = 0.15
BEST_ROW = {0: "0.2", 1: "0.4", 2: "1.2"}

# Winner-take-most index of the top neuron per epoch: node 2 is the top for seed 0,
# node 1 for seed 1; node 0 (never top) has W = 1 throughout. At sigma 1.2 the dL/da
# signs are flipped, so class 1 is the pushed-up one there, and its W is 0 (both at 0).
W_TOP = {0: (2, [0.5, 0.2, 0.4, 0.9]), 1: (1, [0.1, 0.3, 0.6, 0.9])}
# Difficult share of the training loss: seed 0 first exceeds 0.5 at epoch 2; seed 1
# only touches 0.5 (not above it): never.
SHARE = {0: [0.2, 0.45, 0.6, 0.55], 1: [0.1, 0.5, 0.5, 0.4]}


def _mu(w: float) -> list[float]:
    """Pattern means with W_0 = w: class 1 at 0, class 0 at 1 and −d, so the overhangs
    are 1 above and d below and W_0 = 2 min(1, d) / (1 + d) = w for d = w / (2 − w)."""
    return [1.0, -w / (2 - w), 0.0, 0.0]


def _dataset() -> xr.Dataset:
    n_sig, n_seed, n_ep = len(SIGMAS), 2, len(EPOCHS)
    acc = np.stack([ACC_MEAN + ACC_DELTA, ACC_MEAN - ACC_DELTA], axis=1)  # sigma, seed, test
    mu = np.zeros((n_sig, n_seed, n_ep, 1, 3, 4))  # sigma, seed, epoch, layer, node, pattern
    top = np.zeros((n_sig, n_seed, 2), dtype=int)
    for seed, (node, w) in W_TOP.items():
        for e in range(n_ep):
            mu[:, seed, e, 0, node] = _mu(w[e])
            mu[:, seed, e, 0, 0] = [1.0, -1.0, 0.0, 0.0]  # W_0 = 1
        top[:, seed] = [node, 0]
    share = np.zeros((n_sig, n_seed, n_ep, 2))
    for seed, s in SHARE.items():
        share[:, seed, :, 0] = s
        share[:, seed, :, 1] = 1 - np.array(s)
    signs = np.where(np.array(TRAIN_LABEL) == 0, -1.0, 1.0)  # class 0 is pushed up
    signs = (
        np.broadcast_to(signs, (n_sig, n_seed, 2, 8)) * np.array([1, 1, -1])[:, None, None, None]
    )
    rng = np.random.default_rng(0)
    final_acc = np.stack([np.full((n_sig, n_seed), 1.0), np.full((n_sig, n_seed), 0.9)], -1)
    dims = ("sigma", "seed")
    return xr.Dataset(
        {
            "accuracy_noise": ((*dims, "sigma_test"), acc),
            "pattern_preactivation": ((*dims, "epoch", "layer", "node", "pattern"), mu),
            "top_node": ((*dims, "rank"), top),
            "grad_sign_mean": (
                (*dims, "rank", "train_sample"),
                signs,
            ),
            "preactivation_final": (
                (*dims, "rank", "train_sample"),
                rng.normal(size=(n_sig, n_seed, 2, 8)),
            ),
            "difficulty": ((*dims, "train_sample"), np.tile(np.linspace(-1, 0.5, 8), (3, 2, 1))),
            "loss_share": ((*dims, "epoch", "sample_group"), share),
            "final_accuracy": ((*dims, "split"), final_acc),
            "stop_epoch": (dims, np.tile([2.0, NAN], (n_sig, 1))),
        },
        coords={
            "sigma": SIGMAS,
            "seed": [0, 1],
            "sigma_test": SIGMA_TEST,
            "epoch": EPOCHS,
            "layer": [1],
            "node": [0, 1, 2],
            "pattern": np.arange(4),
            "pattern_class": ("pattern", PATTERN_CLASS),
            "train_pattern": ("train_sample", TRAIN_PATTERN),
            "train_label": ("train_sample", TRAIN_LABEL),
            "sample_group": ["difficult", "regular"],
            "split": ["train", "test"],
        },
        attrs={"experiment": "hand", "sweep_dims": json.dumps(["sigma", "seed"])},
    )


def _tagged() -> xr.Dataset:
    """The same members under an ablation-style `tag` dim with zipped rider coords."""
    ds = _dataset().rename(sigma="tag").assign_coords(tag=["baseline", "linear", "low noise"])
    ds = ds.assign_coords(sigma=("tag", SIGMAS), activation=("tag", ["relu", "linear", "relu"]))
    ds.attrs["sweep_dims"] = json.dumps(["tag", "seed"])
    return ds


def _render(table) -> str:
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def _rows(table, n_keys: int) -> dict[str, list[str]]:
    """Rendered rows split on whitespace, keyed by their first n_keys tokens (numbers)."""
    rows = {}
    for line in _render(table).splitlines():
        tokens = line.split()
        if len(tokens) > n_keys and all(t.replace(".", "").isdigit() for t in tokens[:n_keys]):
            rows[" ".join(tokens[:n_keys])] = tokens
    return rows


def _cells(table, column: int) -> list:
    return list(table.columns[column]._cells)


# --------------------------------------------------------------------------- accuracy grid


def test_accuracy_grid_values_are_seed_means_in_percent():
    table = accuracy_grid_panel(_dataset())
    text = _render(table)
    assert "sigma_train (rows) × sigma_test (columns)" in text
    assert "mean ± standard error over 2 seeds" in " ".join(text.split())
    rows = _rows(table, 1)
    # two seeds at m ± d: standard error s / sqrt(2) with s = d sqrt(2) (ddof 1), i.e. d
    assert rows["0.2"] == ["0.2", "90.0±1.0", "80.0±1.0", "50.0±1.0"]
    assert rows["0.4"] == ["0.4", "85.0±15.0", "90.0±1.0", "60.0±1.0"]
    assert rows["1.2"] == ["1.2", "70.0±1.0", "75.0±1.0", "65.0±1.0"]


def test_accuracy_grid_of_one_seed_has_no_error():
    table = accuracy_grid_panel(_dataset().isel(seed=[0]))
    assert "±" not in _render(table)
    assert _rows(table, 1)["0.4"] == ["0.4", "100.0", "91.0", "61.0"]


def test_accuracy_grid_marks_best_sigma_train_per_column():
    table = accuracy_grid_panel(_dataset())
    sigma_train = [str(c) for c in _cells(table, 0)]
    assert sigma_train == ["0.2", "0.4", "1.2"]
    for col in range(len(SIGMA_TEST)):
        styles = [cell.style for cell in _cells(table, col + 1)]
        best = [s for s, style in zip(sigma_train, styles, strict=True) if style == BEST]
        assert best == [BEST_ROW[col]], col


def test_accuracy_grid_ties_are_all_marked():
    ds = _dataset()
    ds["accuracy_noise"][:, :, 2] = 0.7
    table = accuracy_grid_panel(ds)
    assert [cell.style for cell in _cells(table, 3)] == [BEST] * 3


def test_accuracy_grid_without_sigma_dim_one_row_per_member():
    table = accuracy_grid_panel(_tagged())
    text = _render(table)
    assert "member (rows)" in text
    tags, seeds = [str(c) for c in _cells(table, 0)], [str(c) for c in _cells(table, 1)]
    assert list(zip(tags, seeds, strict=True)) == [
        (t, s) for t in ("baseline", "linear", "low noise") for s in ("0", "1")
    ]
    # no seed mean here: (linear, seed 0) at 1.00 is now the best of column 0
    styles = [cell.style for cell in _cells(table, 2)]
    assert [f"{t} {s}" for t, s, st in zip(tags, seeds, styles, strict=True) if st == BEST] == [
        "linear 0"
    ]
    assert str(_cells(table, 2)[2]) == "100.0"


def test_accuracy_grid_none_without_probe():
    assert accuracy_grid_panel(_dataset().drop_vars("accuracy_noise")) is None


# --------------------------------------------------------------------------- wtm panel


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ([0.2, 0.45, 0.6, 0.55], 2.0),
        ([0.1, 0.5, 0.5, 0.4], NAN),  # equal to the level is not above it
        ([NAN, 0.7, 0.2, 0.9], 0.5),
        ([0.6, 0.1, 0.1, 0.1], 0.0),
    ],
)
def test_first_crossing(series, expected):
    got = first_crossing(np.array(series), np.array(EPOCHS), 0.5)
    assert got == expected or (np.isnan(got) and np.isnan(expected))


def test_wtm_panel_rows_hold_hand_values():
    table = wtm_panel(_dataset())
    rows = _rows(table, 2)
    assert sorted(rows) == [f"{s} {seed}" for s in ("0.2", "0.4", "1.2") for seed in (0, 1)]
    # sigma seed | test acc | stop | W first min last sparkline | share first last crossing
    # sparklines share the scale -0.9..0.9 (the largest |W|): block rint(7 (W + 0.9) / 1.8),
    # so 0.5 0.2 0.4 0.9 -> 5 4 5 7
    assert rows["0.4 0"] == [
        "0.4",
        "0",
        "90.0",
        "2",
        "0.50",
        "0.20",
        "0.90",
        "▆▅▆█",
        "0.20",
        "0.55",
        "2",
    ]
    assert rows["0.4 1"][2:8] == ["90.0", "–", "0.10", "0.10", "0.90", "▅▆▇█"]  # 4 5 6 7
    assert rows["0.4 1"][8:] == ["0.10", "0.40", "–"]
    # class 1 pushed up; W = 0 throughout: rint(3.5) = 4, the upper of the two middle blocks
    assert rows["1.2 0"][4:8] == ["0.00", "0.00", "0.00", "▅▅▅▅"]


def test_wtm_panel_without_loss_share_has_no_share_columns():
    text = _render(wtm_panel(_dataset().drop_vars("loss_share")))
    assert "difficult" not in text
    assert _rows(wtm_panel(_dataset().drop_vars("loss_share")), 2)["0.2 0"][4:7] == [
        "0.50",
        "0.20",
        "0.90",
    ]


def test_wtm_panel_none_without_probes():
    assert wtm_panel(_dataset().drop_vars("grad_sign_mean")) is None
    assert wtm_panel(_dataset().drop_vars("pattern_preactivation")) is None


# --------------------------------------------------------------------------- figures

WTM_FIGURES = (
    "wtm_accuracy_grid",
    "wtm_pattern_preactivations",
    "wtm_final_distributions",
    "wtm_difficulty",
)


def _written(ds: xr.Dataset, tmp_path) -> dict[str, set[str]]:
    by_name: dict[str, set[str]] = {}
    for path in write_figures(ds, tmp_path):
        by_name.setdefault(path.stem, set()).add(path.suffix)
        head = path.read_bytes()[:5]
        assert head.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF")
    return by_name


def test_write_figures_wtm_png_and_pdf(tmp_path):
    written = _written(_dataset(), tmp_path)
    assert set(written) == set(WTM_FIGURES)  # no tag dim: no ablations figure
    assert all(exts == {".png", ".pdf"} for exts in written.values())
    assert all(name in FIGURES for name in WTM_FIGURES)


def test_write_figures_ablations_with_tag_dim(tmp_path):
    written = _written(_tagged(), tmp_path)
    assert set(written) == {*WTM_FIGURES, "wtm_ablations"}
    assert written["wtm_ablations"] == {".png", ".pdf"}


@pytest.mark.parametrize(
    ("dropped", "missing"),
    [
        (["accuracy_noise"], {"wtm_accuracy_grid"}),
        (["top_node"], {"wtm_pattern_preactivations"}),
        (["grad_sign_mean"], {"wtm_final_distributions"}),
        (["loss_share"], {"wtm_difficulty"}),
    ],
)
def test_write_figures_only_when_variables_exist(tmp_path, dropped, missing):
    written = _written(_dataset().drop_vars(dropped), tmp_path)
    assert set(written) == set(WTM_FIGURES) - missing


def test_pattern_preactivations_figure_top_neurons_of_first_seed():
    import matplotlib.pyplot as plt

    fig = wtm_pattern_preactivations_figure(_dataset())
    assert len(fig.axes) == 3 * 2  # one row per sigma, both ranks
    ax = fig.axes[0]
    assert "sigma=0.2" in ax.get_title() and "node 2" in ax.get_title()  # seed 0's top
    pattern1 = [ln for ln in ax.lines if ln.get_label() == "class 0 patterns"][1]
    np.testing.assert_allclose(pattern1.get_xdata(), EPOCHS[1:])  # epoch 0 left out
    np.testing.assert_allclose(pattern1.get_ydata(), [_mu(w)[1] for w in W_TOP[0][1][1:]])
    colors = {ln.get_label(): ln.get_color() for ln in ax.lines if "patterns" in ln.get_label()}
    assert len(set(colors.values())) == 2  # one colour per class
    plt.close(fig)
