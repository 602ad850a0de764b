"""The cooperating-classifiers panel of `nodescope report`.

Per layer (and per combination of the sweep dims other than seed), averaged over seeds, at
the last checkpoint or on the best network: mean perplexity over classes, the same relative
to the class size, distinct patterns, and the accuracy of the discrete, continuous and
combined layer classifiers on train and test beside the network's own.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import xarray as xr
from rich.table import Table

from .. import accessor  # noqa: F401  registers ds.ns
from .sample_sets import _seed_mean
from .tables import panel_table, table_width

SYSTEM_HEADS = {"discrete": "disc", "continuous": "cont", "combined": "comb"}


def last_or_best(da: xr.DataArray) -> xr.DataArray:
    """The last checkpoint of a per-checkpoint measurement; a best-network one as it is."""
    return da.isel(epoch=-1) if "epoch" in da.dims else da


def network_accuracy(ds: xr.Dataset, like: xr.DataArray) -> xr.DataArray | None:
    """The network's accuracy per split when `like` was measured: the curves at the last
    checkpoint for per-checkpoint measurements, the final (restored) network otherwise."""
    if "epoch" in like.dims and "accuracy" in ds:
        return ds["accuracy"].isel(epoch=-1)
    return ds.get("final_accuracy")


def _pct(value: float) -> str:
    return "–" if np.isnan(value) else f"{100 * value:.1f}"


def _num(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.3g}"


def cooperating_panel(ds: xr.Dataset, width: int | None = None) -> Table | None:
    """Per-layer table of the perplexity and node-classifier measurements; None without them.
    With `width` (the terminal's), whole columns are left out (DROP_ORDER) until the table
    fits, so that no number is cut; the caption names what was left out."""
    if "perplexity" not in ds and "layer_accuracy" not in ds:
        return None
    dims = json.loads(ds.attrs.get("sweep_dims", "[]"))
    others = [d for d in dims if d != "seed" and d in ds.dims]
    columns: dict[str, xr.DataArray] = {}
    when = []
    if "perplexity" in ds:
        columns["perplexity"] = _seed_mean(last_or_best(ds.ns.mean_perplexity()))
        if "pattern_class_size" in ds:
            relative = ds.ns.relative_perplexity().mean("label")
            columns["P / N_c"] = _seed_mean(last_or_best(relative))
        columns["distinct"] = _seed_mean(last_or_best(ds["distinct_patterns"].mean("label")))
        when.append(_when(ds["perplexity"], ds))
    accuracy_columns = {}
    if "layer_accuracy" in ds:
        acc = _seed_mean(last_or_best(ds["layer_accuracy"]))
        net = network_accuracy(ds, ds["layer_accuracy"])
        for split in [s for s in ("train", "test") if s in acc.split.values]:
            for system, head in SYSTEM_HEADS.items():
                accuracy_columns[f"{split}\n{head} %"] = acc.sel(split=split, system=system)
            if net is not None and split in net.split.values:
                accuracy_columns[f"{split}\nnet %"] = _seed_mean(net.sel(split=split))
        when.append(_when(ds["layer_accuracy"], ds))

    columns = {k: v.compute() for k, v in columns.items()}  # one read of lazy results
    accuracy_columns = {k: v.compute() for k, v in accuracy_columns.items()}
    heads = [*others, "layer", *columns, *accuracy_columns]
    rows = []
    for combo in itertools.product(*(ds[d].values for d in others)):
        where = dict(zip(others, combo, strict=True))
        for layer in ds.layer.values:
            at = {**where, "layer": layer}
            values = [_value(c, at) for c in columns.values()]
            accs = [_value(c, at) for c in accuracy_columns.values()]
            per_layer = values + [
                v for v, c in zip(accs, accuracy_columns.values(), strict=True) if "layer" in c.dims
            ]
            if np.isnan(per_layer).all():
                continue  # a layer this combination does not have (depth sweeps)
            cells = [str(v) for v in combo] + [str(layer)]
            cells += [_num(v) for v in values] + [_pct(v) for v in accs]
            rows.append(cells)
    n_seeds = ds.sizes.get("seed", 1)
    caption = [f"mean over {n_seeds} seed{'s' * (n_seeds != 1)}; " + "; ".join(when)]
    title = f"{ds.attrs.get('experiment', 'run')}: layers of cooperating classifiers"
    keep = list(heads)
    dropped = []
    for head in [h for h in DROP_ORDER if h in heads]:
        if width is None or table_width(_table(others, heads, keep, rows)) <= width:
            break
        keep.remove(head)
        dropped.append(head.replace("\n", " "))
    if dropped:
        caption.append(f"not shown at this width: {', '.join(dropped)}")
    return _table(others, heads, keep, rows, title, "\n".join(caption))


# Columns left out first when the terminal is too narrow: train before test, the
# network's own accuracy (also in the summary table) and pattern counts before the rest.
DROP_ORDER = (
    "train\nnet %",
    "train\ncont %",
    "train\ndisc %",
    "train\ncomb %",
    "distinct",
    "test\nnet %",
    "P / N_c",
)


def _table(others, heads, keep, rows, title=None, caption=None) -> Table:
    """The columns `keep` of `heads`, one row per cell list of `rows`."""
    table = panel_table(title, caption)
    for head in keep:
        style = "cyan" if head in [*others, "layer"] else None
        table.add_column(head, justify="right", style=style, no_wrap=True)
    index = [heads.index(h) for h in keep]
    for cells in rows:
        table.add_row(*(cells[i] for i in index))
    return table


def _value(da: xr.DataArray, at: dict) -> float:
    return float(da.sel({k: v for k, v in at.items() if k in da.dims}))


def _when(da: xr.DataArray, ds: xr.Dataset) -> str:
    name = "perplexity" if da.name == "perplexity" else "layer classifiers"
    if "epoch" in da.dims:
        return f"{name} at epoch {float(ds.epoch[-1]):g}"
    return f"{name} on the best network (best_epoch)"
