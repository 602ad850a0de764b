"""Stored parameters: snapshots taken during training, and trained networks loaded back.

One file per group, `weights/group-NNN.nc`, beside the group's results. Each state tensor
of the stacked model (weights, biases, batch-norm parameters and statistics) is one
variable with dimensions (member, snapshot, ...). A snapshot is a checkpoint (`kind` =
"checkpoint") or the trained network the results describe (`kind` = "final": after the
stop rules, i.e. with the best validation weights restored under early stopping).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from torch import nn

from ..errors import UserError
from ..models.mlp import BN_EPS, BN_MOMENTUM, StackedMLP
from ..spec import Group, Spec
from .lazy import NETCDF_LOCK

WEIGHTS_DIR = "weights"


def weights_path(run_dir: Path, group_index: int) -> Path:
    return Path(run_dir) / WEIGHTS_DIR / f"group-{group_index:03d}.nc"


def training_hash(group: Group) -> str:
    """Identifies what decides a group's weights: its member specs without the probes, so
    that probes added after training leave the stored weights valid."""
    from ..spec.load import result_identity

    parts = []
    for m in group.members:
        identity = result_identity(m.spec)
        identity.pop("probes", None)
        parts.append(json.dumps(identity, sort_keys=True))
    return hashlib.sha256("".join(parts).encode()).hexdigest()[:16]


def _var_name(key: str) -> str:
    return key.replace(".", "_")


class WeightSnapshots:
    """Copies of a stacked model's state at chosen steps, kept on the host."""

    def __init__(self, steps: list[int], steps_per_epoch: int):
        self.steps = set(steps)
        self.steps_per_epoch = steps_per_epoch
        self.taken: list[tuple[int, str, dict[str, np.ndarray]]] = []

    def at_checkpoint(self, model: StackedMLP, step: int) -> None:
        if step in self.steps:
            self._take(model, step, "checkpoint")

    def final(self, model: StackedMLP, step: int) -> None:
        self._take(model, step, "final")

    def _take(self, model: StackedMLP, step: int, kind: str) -> None:
        state = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
        self.taken.append((step, kind, state))

    def dataset(self, group: Group) -> xr.Dataset:
        keys = list(self.taken[0][2])
        variables = {}
        for key in keys:
            stacked = np.stack([state[key] for _, _, state in self.taken], axis=1)
            name = _var_name(key)
            dims = ("member", "snapshot", *(f"{name}_d{i}" for i in range(stacked.ndim - 2)))
            variables[name] = xr.Variable(dims, stacked, attrs={"state_key": key})
        steps = np.array([s for s, _, _ in self.taken])
        coords = {
            "snapshot": np.arange(len(self.taken)),
            "step": ("snapshot", steps),
            "epoch": ("snapshot", steps / self.steps_per_epoch),
            "kind": ("snapshot", [k for _, k, _ in self.taken]),
            "member": [m.index for m in group.members],
        }
        return xr.Dataset(variables, coords=coords, attrs={"training_hash": training_hash(group)})


def read_state(path: Path, snapshot: int) -> dict[str, torch.Tensor]:
    """The stacked model's state dict at one snapshot of a weights file."""
    with NETCDF_LOCK, xr.open_dataset(path, engine="netcdf4") as ds:
        return {
            var.attrs["state_key"]: torch.from_numpy(np.asarray(var.isel(snapshot=snapshot).values))
            for var in ds.data_vars.values()
        }


def snapshot_table(path: Path) -> xr.Dataset:
    """The snapshot coordinates (step, epoch, kind) of a weights file, and its attributes."""
    with NETCDF_LOCK, xr.open_dataset(path, engine="netcdf4") as ds:
        return ds[["step", "epoch", "kind"]].load()


def find_snapshot(path: Path, epoch: float | str) -> int:
    """Index of the snapshot at `epoch` ("final" for the trained network)."""
    table = snapshot_table(path)
    kinds = table.kind.values.tolist()
    if epoch == "final":
        return kinds.index("final")
    checkpoints = [i for i, k in enumerate(kinds) if k == "checkpoint"]
    epochs = table.epoch.values[checkpoints]
    hits = [i for i, e in zip(checkpoints, epochs, strict=True) if np.isclose(e, float(epoch))]
    if not hits:
        have = ", ".join(f"{e:g}" for e in epochs) or "none (only the final network)"
        raise UserError(
            f"{path}: no weights stored at epoch {epoch}; stored epochs: {have}, or 'final'"
        )
    return hits[0]


def build_stacked(group: Group) -> StackedMLP:
    """An untrained stacked model with the group's shapes (its state is loaded next)."""
    from ..models.loss import n_outputs

    spec = group.spec
    specs = [m.spec for m in group.members]
    n_out = n_outputs(spec.training.loss, spec.data.num_classes)
    dtype = getattr(torch, spec.training.dtype)
    return StackedMLP(specs, spec.data.num_features, n_out).to(dtype)


def checked_weights(run_dir: Path, group: Group) -> Path:
    """The group's weights file, after checking it exists and belongs to this group."""
    path = weights_path(run_dir, group.index)
    if not path.exists():
        raise UserError(
            f"{run_dir}: no stored weights for group {group.index}; run the spec with "
            'checkpoints.weights = true (or "final") to keep them'
        )
    with NETCDF_LOCK, xr.open_dataset(path, engine="netcdf4") as ds:
        stored = ds.attrs.get("training_hash")
    if stored != training_hash(group):
        raise UserError(
            f"{path}: the weights belong to another version of the spec; run the spec "
            "again to redo that group"
        )
    return path


def load_group_model(spec: Spec, group: Group, run_dir: Path, epoch: float | str) -> StackedMLP:
    path = checked_weights(run_dir, group)
    model = build_stacked(group)
    model.load_state_dict(read_state(path, find_snapshot(path, epoch)))
    return model.eval()


def member_sequential(model: StackedMLP, e: int) -> nn.Sequential:
    """Member `e` of a stacked model as a plain nn.Sequential with the same outputs:
    Linear [-> BatchNorm1d] -> activation per hidden layer, then the output Linear."""
    act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "linear": nn.Identity}[model.activation]
    layers: list[nn.Module] = []
    n_layers = len(model.weights)
    for i in range(n_layers):
        w = model.weights[i].detach()[e]
        linear = nn.Linear(w.shape[0], w.shape[1], bias=i in model.bias_of, dtype=w.dtype)
        with torch.no_grad():
            linear.weight.copy_(w.T)
            if i in model.bias_of:
                linear.bias.copy_(model.biases[model.bias_of[i]].detach()[e, 0])
        layers.append(linear)
        if i == n_layers - 1:
            break
        if model.batch_norm:
            h = w.shape[1]
            bn = nn.BatchNorm1d(h, eps=BN_EPS, momentum=BN_MOMENTUM, dtype=w.dtype)
            with torch.no_grad():
                bn.weight.copy_(model.bn_weight[i].detach()[e, 0])
                bn.bias.copy_(model.bn_bias[i].detach()[e, 0])
                bn.running_mean.copy_(getattr(model, f"bn_mean{i}")[e, 0])
                bn.running_var.copy_(getattr(model, f"bn_var{i}")[e, 0])
            layers.append(bn)
        layers.append(act())
    return nn.Sequential(*layers).eval()
