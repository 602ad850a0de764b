"""The winner-take-most panels of `nodescope report` (winner-take-most paper, Secs. 3-4).

accuracy_grid_panel: Fig. 1 as a table, test accuracy of every sigma_train (rows) at
every sigma_test (columns), the best sigma_train of each column highlighted.
wtm_panel: per member, final test accuracy, stop epoch, the winner-take-most index

    W_c = 2 max(0, min(max_{k∈c} μ_k − max_{k∉c} μ_k, min_{k∉c} μ_k − min_{k∈c} μ_k))
          / (max_{k∈c} μ_k − min_{k∈c} μ_k)

of the top neuron (largest |w_out|) for the class it pushes up (`ds.ns.top_neuron_wtm`)
over epoch, and the difficult samples' share of the training loss (Fig. 5, eq. 2).
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import xarray as xr
from rich.table import Table
from rich.text import Text

from .. import accessor  # noqa: F401  registers ds.ns
from .plotting import seed_spread
from .sample_sets import _thin, sparkline
from .tables import panel_table, table_width
from .words import plural

BEST = "bold green"
SHARE_CROSSING = 0.5  # difficult samples carry more than half of the training loss
DIFFICULT_NOTE = "; diff. share = loss share of the difficult samples, d(x) > 0"


def _sweep_dims(ds: xr.Dataset) -> list[str]:
    """The sweep dims of `ds` (attr `sweep_dims`) that are dimensions of it."""
    return [d for d in json.loads(ds.attrs.get("sweep_dims", "[]")) if d in ds.dims]


def _points(ds: xr.Dataset, dims: list[str]) -> list[dict]:
    """Every combination of the values of `dims`, as `sel` dicts, in coordinate order."""
    return [
        dict(zip(dims, combo, strict=True))
        for combo in itertools.product(*(ds[d].values.tolist() for d in dims))
    ]


def _pct(value: float) -> str:
    return "–" if np.isnan(value) else f"{100 * value:.1f}"


def _pct_pm(value: float, error: float, between: str = "") -> str:
    """A percentage with its standard error in points (none when NaN: a single seed),
    `between` them ("\n" puts the error on a line of its own)."""
    if np.isnan(value) or np.isnan(error):
        return _pct(value)
    return f"{100 * value:.1f}{between}±{100 * error:.1f}"


def _num(value: float, fmt: str = ".2f") -> str:
    return "–" if np.isnan(value) else format(value, fmt)


def _table(title: str, caption: str) -> Table:
    # a narrow grid would wrap its title word by word
    return panel_table(title, caption, min_width=min(len(title), 80))


def accuracy_grid_panel(ds: xr.Dataset, width: int | None = None) -> Table | None:
    """Paper Fig. 1 as a table: test accuracy (%) at every sigma_test (columns).

    Rows: the training noise, sweep dim `sigma` (one block per combination of the other
    non-seed sweep dims), accuracy averaged over seeds; without a `sigma` dim, one row per
    member. In each column (and block) the best row is bold green, ties included. None
    without the noise_robustness probe's `accuracy_noise`. Where "mean±error" cells do
    not fit `width` (the terminal's), each error goes on a line below its mean.
    """
    if "accuracy_noise" not in ds:
        return None
    table = _accuracy_grid(ds, between="")
    if width is not None and table_width(table) > width:
        table = _accuracy_grid(ds, between="\n")
    return table


def _accuracy_grid(ds: xr.Dataset, between: str) -> Table:
    dims = _sweep_dims(ds)
    acc = ds["accuracy_noise"]
    stderr = xr.full_like(acc, np.nan, dtype=float)
    if "sigma" in dims:
        n_seeds = ds.sizes.get("seed", 1)
        acc, stderr = seed_spread(acc)
        groups, rows = [d for d in dims if d not in ("sigma", "seed")], ["sigma"]
        title, row_head = "sigma_train (rows) × sigma_test (columns)", ["sigma_train"]
        spread = " ± standard error" if n_seeds > 1 else ""
        note = f"mean{spread} over {plural(n_seeds, 'seed')}; best sigma_train per column"
    else:
        groups, rows = [], dims
        title, row_head = "member (rows) × sigma_test (columns)", dims
        note = "best member per column"
    table = _table(
        f"{ds.attrs.get('experiment', 'run')}: test accuracy: {title}",
        f"accuracy (%) on fresh test sets at each sigma_test; {note} in [{BEST}]{BEST}[/]",
    )
    for head in [*groups, *row_head]:
        table.add_column(head, justify="right", style="cyan", no_wrap=True)
    for sigma_test in acc.sigma_test.values:
        table.add_column(f"{sigma_test:g}", justify="right", no_wrap=True)

    for group in _points(acc, groups):
        block = acc.sel(group)
        keys = _points(block, rows)
        values = np.array([block.sel(k).values for k in keys], dtype=float).reshape(
            len(keys), acc.sizes["sigma_test"]
        )
        errors = np.array([stderr.sel(group).sel(k).values for k in keys], dtype=float)
        errors = errors.reshape(values.shape)
        filled = ~np.isnan(values).all(axis=1)  # grid points no member filled are left out
        if not filled.any():
            continue
        with np.errstate(invalid="ignore"):
            best = np.nanmax(np.where(filled[:, None], values, np.nan), axis=0)
        for key, row, row_errors, keep in zip(keys, values, errors, filled, strict=True):
            if not keep:
                continue
            cells: list[str | Text] = [str(v) for v in [*group.values(), *key.values()]]
            cells += [
                Text(_pct_pm(v, e, between), style=BEST if np.isclose(v, b) else "")
                for v, e, b in zip(row, row_errors, best, strict=True)
            ]
            table.add_row(*cells)
    return table


def first_crossing(series: np.ndarray, epochs: np.ndarray, level: float) -> float:
    """The first epoch whose value exceeds `level` (strictly); NaN if none does."""
    above = np.nan_to_num(series, nan=-np.inf) > level
    return float(epochs[np.argmax(above)]) if above.any() else np.nan


def wtm_panel(ds: xr.Dataset) -> Table | None:
    """One row per member (every sweep coordinate, seed included).

    Columns: final test accuracy (%), stop epoch, the top neuron's W (rank 0 of
    `ds.ns.top_neuron_wtm()`) at the first checkpoint, its minimum, at the last
    checkpoint and a sparkline over epoch; with the difficulty probe, the difficult
    samples' share Σ_{d(x) > 0} L_x / Σ_x L_x of the training loss at the first and last
    checkpoint and the first epoch where it exceeds 0.5 ('–': never). None without the
    grad_sign and pattern_preactivation probes.
    """
    if not all(name in ds for name in ("grad_sign_mean", "pattern_preactivation", "top_node")):
        return None
    dims = _sweep_dims(ds)
    index = ds.ns.top_neuron_wtm().isel(rank=0)
    share = ds["loss_share"].sel(sample_group="difficult") if "loss_share" in ds else None
    epochs = ds.epoch.values
    with np.errstate(invalid="ignore"):
        reach = float(np.nanmax(np.abs(index.values))) if index.notnull().any() else 0.0
    scale = (-reach, reach) if reach > 0 else None  # one scale for every row, 0 in the middle
    table = _table(
        f"{ds.attrs.get('experiment', 'run')}: winner-take-most index of the top neuron",
        "W = winner-take-most index (0: none; 1: the other class in the middle of class c's "
        "range) of the neuron with the largest |w_out|, c = the class it pushes up (most "
        "negative mean dL/da sign); see ds.ns.wtm_index\n"
        f"{len(epochs)} checkpoints, epoch {epochs[0]:g} → {epochs[-1]:g}; W sparklines share "
        f"one scale, ▁ {-reach:.2f} … █ {reach:.2f}"
        + (DIFFICULT_NOTE if share is not None else ""),
    )
    for d in dims:
        table.add_column(d, justify="right", style="cyan", no_wrap=True)
    heads = ["test\nacc %", "stop\nepoch", "W\nfirst", "W\nmin", "W\nlast", "W over\nepoch"]
    if share is not None:
        heads += ["diff.\nshare\nfirst", "diff.\nshare\nlast", "share\n> 0.5\nat epoch"]
    for head in heads:
        table.add_column(head, justify="right")

    for at in _points(ds, dims):
        w = index.sel(at).values.astype(float)
        if np.isnan(w).all():
            continue  # a grid point no member filled (zipped or ragged sweeps)
        cells = [str(v) for v in at.values()]
        acc = np.nan
        if "final_accuracy" in ds and "test" in ds.split.values:
            acc = float(ds["final_accuracy"].sel(at).sel(split="test"))
        stop = float(ds["stop_epoch"].sel(at)) if "stop_epoch" in ds else np.nan
        cells += [_pct(acc), _num(stop, "g")]
        cells += [_num(w[0]), _num(np.nanmin(w)), _num(w[-1]), sparkline(_thin(w), scale)]
        if share is not None:
            s = share.sel(at).values.astype(float)
            cells += [
                _num(s[0]),
                _num(s[-1]),
                _num(first_crossing(s, epochs, SHARE_CROSSING), ".3g"),
            ]
        table.add_row(*cells)
    return table
