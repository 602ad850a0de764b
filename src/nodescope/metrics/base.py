"""The probe mechanism: what a probe needs, what the runner hands it, what it returns.

A probe accumulates statistics over the chunks of each checkpoint's eval pass and
returns named DataArrays at the end; it never keeps every activation of every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import xarray as xr

from ..data.prepare import GroupData
from ..models.mlp import Forward


@dataclass
class ProbeContext:
    n_members: int
    n_checkpoints: int
    widths: list[int]  # hidden layer widths
    n_classes: int
    activation: str
    loss: str
    data: GroupData
    specs: list = field(default_factory=list)  # the members' Spec objects

    @classmethod
    def of(cls, specs: list, n_checkpoints: int, widths: list[int], data: GroupData):
        """The context of a group's members (their Spec objects) and data."""
        first = specs[0]
        return cls(
            len(specs),
            n_checkpoints,
            widths,
            data.n_classes,
            first.model.activation,
            first.training.loss,
            data,
            specs,
        )

    @property
    def max_width(self) -> int:
        return max(self.widths)

    @property
    def device(self) -> torch.device:
        """Where the group's data and activations live: probes sum there, chunk by chunk,
        and copy to the host once per checkpoint (a copy per chunk would make a GPU wait)."""
        return next(iter(self.data.splits.values())).x.device

    def default_eval_split(self) -> str:
        return "val" if "val" in self.data.splits else "test"


@dataclass
class EvalBatch:
    split: str
    index: torch.Tensor  # (B,) sample indices into the split
    labels: torch.Tensor  # (B,) true classes
    targets: torch.Tensor  # (E, B) labels the members are scored on
    fwd: Forward
    loss: torch.Tensor  # (E, B) per-sample loss
    correct: torch.Tensor  # (E, B) bool
    dl_da: list[torch.Tensor] | None = None  # per hidden layer (E, B, H_l): dL_s/da

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(E,) summed per-sample loss (float64) and number of correct predictions."""
        return self.loss.sum(1, dtype=torch.float64), self.correct.sum(1)


@dataclass
class TrainStep:
    """One optimiser step as the training loop sees it (before the update)."""

    index: torch.Tensor  # (E, B) training-sample indices of each member's batch
    active: torch.Tensor | None  # (E,) members that update this step (None: all)
    in_order: bool = False  # every member's batch is the whole split, in order (full batch)


class Probe:
    """Base class: subclasses set `name` and their needs, and implement the hooks.

    The `needs_*` flags may also be set per instance when they depend on options.
    """

    name: ClassVar[str]
    needs_preacts: ClassVar[bool] = False
    needs_acts: ClassVar[bool] = False  # the activations a = rho(z) of the eval pass
    needs_dl_da: ClassVar[bool] = False  # gradients of each sample's own loss
    needs_train_steps: ClassVar[bool] = False  # on_train_grad in every backward pass

    def __init__(self, options: Any, ctx: ProbeContext):
        self.options = options
        self.ctx = ctx

    def splits(self) -> set[str]:
        """Eval splits this probe reads at every checkpoint."""
        return set()

    def update(self, ck: int, batch: EvalBatch) -> None:
        """Accumulate one chunk of checkpoint `ck`'s eval pass."""

    def finish_checkpoint(self, ck: int) -> None:
        """Called once all chunks of checkpoint `ck` were seen."""

    def on_train_grad(self, step: TrainStep, member: int, grad: torch.Tensor) -> None:
        """Called in each training step's backward pass, once per member, when
        `needs_train_steps` is set: grad (B, H) = ∂(batch loss)/∂a of the last hidden
        layer for that member's batch. `grad` may be a reused buffer: read it, do not keep
        it (the ReLU's backward writes over it next)."""

    def on_end(self, model) -> None:
        """Called once with the trained StackedMLP (eval mode, stop rules applied); it must
        leave the model as it is (work on a copy): the final loss and accuracy may come
        from the last checkpoint's eval pass (runner/train.py)."""

    def results(self) -> dict[str, xr.DataArray]:
        """Named arrays with a leading `member` dimension."""
        return {}


def variable(
    dims: tuple[str, ...], values: np.ndarray, long_name: str, units: str, description: str
) -> xr.DataArray:
    """A DataArray carrying the attributes every stored variable must have."""
    return xr.DataArray(
        values,
        dims=dims,
        attrs={"long_name": long_name, "units": units, "description": description},
    )


def pad_layers(per_layer: list[np.ndarray], width: int, fill=np.nan) -> np.ndarray:
    """Stack per-layer arrays (..., H_l, *rest) along a new layer axis after the first
    (member) axis, padding the node axis to `width` with `fill`."""
    out = []
    for a in per_layer:
        pad = [(0, 0)] * a.ndim
        pad[1] = (0, width - a.shape[1])
        out.append(np.pad(a.astype(np.float64) if fill is np.nan else a, pad, constant_values=fill))
    return np.stack(out, axis=1)
