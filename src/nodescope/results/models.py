"""Trained networks of a results folder, back as PyTorch modules.

model = nodescope.load_model("runs/sample_sets", depth=2, width=80, seed=0)
stacked = nodescope.load_stacked("runs/sample_sets", epoch=10, depth=2, width=80)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UserError
from ..models.mlp import StackedMLP
from ..spec import Group, Member, Spec, plan
from .folder import read_resolved_spec
from .weights import load_group_model, member_sequential


def find_members(spec: Spec, coords: dict[str, Any]) -> list[tuple[Group, Member]]:
    """Every (group, member) whose sweep coordinates match `coords`."""
    groups = plan(spec)
    known = set(groups[0].members[0].coords)
    unknown = set(coords) - known
    if unknown:
        raise UserError(
            f"unknown sweep coordinate(s) {', '.join(sorted(unknown))}; this run has "
            f"{', '.join(sorted(known))}"
        )
    return [
        (g, m)
        for g in groups
        for m in g.members
        if all(_same(m.coords[k], v) for k, v in coords.items())
    ]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)))
        except (TypeError, ValueError):
            return False
    return a == b


def _describe(spec: Spec) -> str:
    members = [m for g in plan(spec) for m in g.members]
    names = list(members[0].coords)
    values = {n: sorted({str(m.coords[n]) for m in members}) for n in names}
    return "; ".join(f"{n} in {{{', '.join(v)}}}" for n, v in values.items())


def load_stacked(run_dir: str | Path, epoch: float | str = "final", **coords) -> StackedMLP:
    """The stacked model of the group holding the members that match `coords` (eval mode).

    `epoch`: a checkpoint epoch whose weights were stored, or "final" for the trained
    network the results describe.
    """
    run_dir = Path(run_dir)
    spec = read_resolved_spec(run_dir)
    found = find_members(spec, coords)
    groups = {g.index: g for g, _ in found}
    if len(groups) != 1:
        what = "no member matches" if not groups else "the members span several groups"
        raise UserError(
            f"{run_dir}: {what} {coords or '(no coordinates)'}; narrow it with sweep "
            f"coordinates: {_describe(spec)}"
        )
    group = next(iter(groups.values()))
    return load_group_model(spec, group, run_dir, epoch)


def load_model(run_dir: str | Path, epoch: float | str = "final", **coords) -> nn.Sequential:
    """One member as a plain `nn.Sequential` (Linear, [BatchNorm1d,] activation per hidden
    layer, then the output Linear; eval mode) with the same outputs as in the stacked model.

    `coords` must pick exactly one member, e.g. `load_model(run, depth=2, width=80, seed=0)`.
    """
    run_dir = Path(run_dir)
    spec = read_resolved_spec(run_dir)
    found = find_members(spec, coords)
    if len(found) != 1:
        what = "no member matches" if not found else f"{len(found)} members match"
        raise UserError(
            f"{run_dir}: {what} {coords or '(no coordinates)'}; choose one with sweep "
            f"coordinates: {_describe(spec)}"
        )
    group, member = found[0]
    stacked = load_group_model(spec, group, run_dir, epoch)
    return member_sequential(stacked, group.members.index(member))
