"""Saved training state: a group interrupted mid-training continues where it stopped.

At the end of an epoch, once `resume.every_epochs` epochs or `resume.every_minutes`
minutes have passed since the last save, everything the rest of training depends on is
written to `state/group-NNN.pt`: the step, the stacked model (parameters, batch-norm
statistics, frozen members), the optimiser's moments and step counts, every member's
batch-order generator, the stop rules, every probe's accumulators and the weight
snapshots taken so far. A re-run of the same group loads it and continues; on CPU the
stored results then equal those of an uninterrupted run exactly (the same arithmetic in
the same order). The file is written atomically, carries the group's hash, and is removed
once the group's results are stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..results.integrity import damage, sidecar, write_file_atomic
from ..spec import Group

STATE_DIR = "state"
STATE_FORMAT = 2  # 2: probe sums are tensors on the device (1: numpy arrays)


def state_path(run_dir: Path, group_index: int) -> Path:
    return Path(run_dir) / STATE_DIR / f"group-{group_index:03d}.pt"


def object_state(obj, skip: tuple[str, ...] = ()) -> dict:
    """The instance attributes of `obj` but `skip` (tensors, arrays, plain values)."""
    return {k: v for k, v in vars(obj).items() if k not in skip}


def restore_object_state(obj, state: dict) -> None:
    """What `object_state` saved, back on `obj`, each tensor on the device of the one it
    replaces: a state file is loaded onto the training device, but some attributes live
    on the host (per-class sample counts, the early-stopping record)."""
    for name, value in state.items():
        setattr(obj, name, _on_device_of(getattr(obj, name, None), value))


def _on_device_of(current, value):
    if isinstance(current, torch.Tensor) and isinstance(value, torch.Tensor):
        return value.to(current.device)
    if isinstance(current, list) and isinstance(value, list) and len(current) == len(value):
        return [_on_device_of(c, v) for c, v in zip(current, value, strict=True)]
    return value


class StateFile:
    """When to save a group's training state, and saving, loading and removing it."""

    def __init__(self, path: Path, group: Group, log: Callable[[str], None] | None = None):
        self.path = path
        self.group = group
        options = group.spec.resume
        self.every_epochs = options.every_epochs
        self.every_seconds = options.every_minutes * 60
        self.log = log or (lambda message: None)
        self.last_epoch = 0
        self.last_time = time.monotonic()

    def due(self, epochs_done: int) -> bool:
        by_epochs = self.every_epochs and epochs_done - self.last_epoch >= self.every_epochs
        by_time = self.every_seconds and time.monotonic() - self.last_time >= self.every_seconds
        return bool(by_epochs or by_time)

    def save(self, state: dict, epochs_done: int) -> None:
        payload = {"format": STATE_FORMAT, "group_hash": self.group.hash, **state}

        def write(tmp: Path) -> None:  # inside, so a folder that cannot be made is one line
            tmp.parent.mkdir(parents=True, exist_ok=True)
            torch.save(payload, tmp)

        write_file_atomic(self.path, write)
        self.last_epoch, self.last_time = epochs_done, time.monotonic()

    def load(self, device: torch.device) -> dict | None:
        """The saved state of this group, or None (with a line saying why) when there is
        none it can continue from."""
        if not self.path.exists():
            return None
        why = damage(self.path)
        state = None
        if why is None:
            try:
                state = torch.load(self.path, map_location=device, weights_only=False)
            except Exception as exc:  # a file torch cannot read is one we cannot trust
                why = f"it cannot be read ({type(exc).__name__})"
        if state is not None and state.get("format") != STATE_FORMAT:
            why, state = "it was written by another nodescope version", None
        elif state is not None and state.get("group_hash") != self.group.hash:
            why, state = "it belongs to a different spec", None
        if state is None:
            self.log(
                f"group {self.group.index}: saved training state {self.path.name} is not "
                f"used ({why}); training the group from the start"
            )
            self.remove()
            return None
        self.last_epoch = state["epoch"]
        self.log(
            f"group {self.group.index}: resuming from its saved training state at epoch "
            f"{state['epoch']}"
        )
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        sidecar(self.path).unlink(missing_ok=True)


def tidy_states(run_dir: Path) -> None:
    """Remove the state folder once no group has a saved state (after a whole run)."""
    folder = Path(run_dir) / STATE_DIR
    if folder.is_dir() and not any(folder.glob("*.pt")):
        remove_states(run_dir)


def remove_states(run_dir: Path) -> None:
    """Every saved training state of a results folder, and its folder."""
    folder = Path(run_dir) / STATE_DIR
    if folder.is_dir():
        for f in folder.iterdir():
            f.unlink(missing_ok=True)
        folder.rmdir()
