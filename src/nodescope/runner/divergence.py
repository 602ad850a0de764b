"""Members whose training loss became NaN or infinite: frozen, recorded, never reported as
if they had trained.

The loss is summed per member on the device through each epoch and checked once at the
epoch's end (one host synchronisation per epoch). A diverged member stops updating; the
rest of its group trains on unchanged, since members share no parameters.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..metrics.base import variable

# Per-member bookkeeping that stays meaningful for a diverged member.
KEPT = {"stop_epoch", "wall_time", "diverged", "diverged_epoch", "label_corrupted"}


def mask_diverged(
    variables: dict[str, xr.DataArray], diverged_epoch: np.ndarray, checkpoint_epochs: np.ndarray
) -> dict[str, xr.DataArray]:
    """NaN for every value a diverged member produced after it could have diverged: from
    the checkpoints after the start of the epoch whose loss was not finite, and every
    value without an epoch (measured on the trained network)."""
    out = dict(variables)
    bad = ~np.isnan(diverged_epoch)
    if not bad.any():
        return out
    for name, var in variables.items():
        if name in KEPT or "member" not in var.dims or var.dtype.kind != "f":
            continue
        member = xr.DataArray(bad, dims="member")
        if "epoch" in var.dims:
            started = xr.DataArray(diverged_epoch - 1, dims="member")
            after = xr.DataArray(checkpoint_epochs, dims="epoch") > started
            member = member & after
        out[name] = var.where(~member).assign_attrs(var.attrs)
    out["diverged"] = variable(
        ("member",),
        bad.astype(np.int8),
        "diverged",
        "1",
        "1 where the member's training loss became NaN or infinite; it was frozen then",
    )
    out["diverged_epoch"] = variable(
        ("member",),
        diverged_epoch,
        "divergence epoch",
        "epoch",
        "epoch during which the training loss stopped being finite (NaN: never); later "
        "values of the member are NaN",
    )
    return out
