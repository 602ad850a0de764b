"""Aggregates of the cooperating-classifiers paper on stored results (xarray only)."""

from __future__ import annotations

import numpy as np
import xarray as xr


def _need(ds: xr.Dataset, *names: str) -> None:
    for name in names:
        if name not in ds:
            raise KeyError(f"{name!r} is not in this dataset; record it with the perplexity probe")


def mean_perplexity(ds: xr.Dataset) -> xr.DataArray:
    """Per-layer mean perplexity over classes, (1/|C|) Σ_c P(c, l) (the paper's Fig. 3).

    Classes without samples in the measured split (NaN) are left out; layers a member does
    not have stay NaN.
    """
    _need(ds, "perplexity")
    with np.errstate(invalid="ignore"):
        out = ds["perplexity"].mean("label")
    out.attrs = {
        "long_name": "mean layer perplexity",
        "units": "1",
        "description": "(1/|C|) Σ_c exp H(c,l): perplexity averaged over classes "
        "(cooperating-classifiers paper, Fig. 3)",
    }
    return out


def relative_perplexity(ds: xr.DataArray | xr.Dataset) -> xr.DataArray:
    """P(c, l) / N_c per class: 1 when every class-c sample has its own pattern, 1/N_c when
    all share one (N_c the class size of the split the perplexity was measured on)."""
    _need(ds, "perplexity", "pattern_class_size")
    out = ds["perplexity"] / ds["pattern_class_size"]
    out.attrs = {
        "long_name": "perplexity relative to the class size",
        "units": "1",
        "description": "P(c,l) / N_c: 1 = a distinct pattern per sample, 1/N_c = one pattern "
        "for the whole class",
    }
    return out
