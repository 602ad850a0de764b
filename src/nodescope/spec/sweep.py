"""Sweep expansion (spec -> members) and grouping (members with equal tensor shapes)."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from .checkpoints import weight_steps
from .load import apply_override, spec_hash, validate_dict
from .model import Spec
from .size import (
    estimated_bytes,
    parameters_per_member,
    training_bytes_per_member,
    weight_bytes,
)

MAX_PARAMETERS = 2 * 10**9

# Fields that may differ between members of one stacked group: they change values,
# never tensor shapes, labels or the training schedule.
PER_MEMBER_FIELDS = {
    "experiment.tag",
    "training.seed",
    "optimiser.lr",
    "optimiser.betas",
    "optimiser.eps",
    "optimiser.momentum",
    "noise.input_sigma_train",
    "noise.input_sigma_test",
    "noise.label_fraction",
    "data.sigma",
    "data.sigma_test",
    "model.init",
    "model.init_gain",
}
AXIS_ALIASES = {"seed": "training.seed"}
# Names results already use; a sweep axis ending in one is named by its whole path
# (training.loss -> training_loss) so that it cannot clash with them.
RESERVED_NAMES = {
    "member",
    "epoch",
    "step",
    "layer",
    "layer_width",
    "node",
    "label",
    "label_name",
    "split",
    "loss",
    "accuracy",
    "final_loss",
    "final_accuracy",
    "stop_epoch",
    "wall_time",
    "sample",
}


@dataclass
class Member:
    index: int
    spec: Spec
    coords: dict[str, Any]  # sweep dimension / coordinate name -> value


@dataclass
class Group:
    index: int
    members: list[Member]
    spec: Spec  # the first member's spec: everything shared by the group

    @property
    def hash(self) -> str:
        """Identifies the group's resolved member specs; a stored result is reused on a match."""
        joined = "".join(spec_hash(m.spec) for m in self.members)
        return hashlib.sha256(joined.encode()).hexdigest()[:16]


@dataclass
class SweepAxis:
    dim: str  # dimension name in the results
    paths: list[str]  # spec paths set along this dimension (several when zipped)
    values: list[list[Any]]  # values[i] is the list for paths[i]


def sweep_axes(spec: Spec) -> list[SweepAxis]:
    """The sweep's dimensions in spec order; zipped axes share one dimension."""
    table = dict(spec.sweep)
    zips = table.pop("zip", [])
    if not all(isinstance(z, list) and all(isinstance(k, str) for k in z) for z in zips):
        raise UserError('sweep.zip: expected a list of lists of axis names, e.g. [["a", "b"]]')
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"sweep.{key}: expected a non-empty list of values")
    zipped = {}
    for z in zips:
        for k in z:
            if k in zipped:
                raise UserError(f"sweep.zip: '{k}' is in two zip lists; zip each axis once")
            zipped[k] = z
    for key in zipped:
        if key not in table:
            raise UserError(
                f"sweep.zip: '{key}' is not a sweep axis; add \"{key}\" = [...] to [sweep]"
            )
    swept: dict[str, str] = {}
    for key in table:
        path = AXIS_ALIASES.get(key, key)
        if path in swept:
            raise UserError(
                f"sweep: '{swept[path]}' and '{key}' both sweep {path}; keep one of them"
            )
        swept[path] = key
    axes, done = [], set()
    for key in table:
        if key in done:
            continue
        keys = zipped.get(key, [key])
        lengths = {len(table[k]) for k in keys}
        if len(lengths) > 1:
            raise UserError(f"sweep.zip: axes {keys} have different lengths; zip equal lists")
        paths = [AXIS_ALIASES.get(k, k) for k in keys]
        axes.append(
            SweepAxis(dim=paths[0].split(".")[-1], paths=paths, values=[table[k] for k in keys])
        )
        done.update(keys)
    for axis in axes:  # zipped axes may repeat a value as long as the tuples differ
        tuples = zip(*axis.values, strict=True)
        points = [json.dumps(p, sort_keys=True, default=str) for p in tuples]
        if len(set(points)) != len(points):
            twice = next(p for p in points if points.count(p) > 1)
            raise UserError(
                f"sweep.{' + '.join(axis.paths)}: the value {twice} appears twice; every "
                "member must differ"
            )
    if not any("training.seed" in a.paths for a in axes):
        axes.append(SweepAxis(dim="seed", paths=["training.seed"], values=[[spec.training.seed]]))
    dims = [a.dim for a in axes]
    for axis in axes:
        taken = dims.count(axis.dim) > 1 or axis.dim in RESERVED_NAMES
        if taken and axis.paths[0] != "training.seed":
            axis.dim = axis.paths[0].replace(".", "_")  # data.seed -> data_seed
    return axes


def expand(spec: Spec) -> list[Member]:
    """Every member of the sweep (grid product over axes), validated on its own."""
    axes = sweep_axes(spec)
    base = spec.model_dump(mode="python", exclude={"sweep"})
    members = []
    for index, choice in enumerate(itertools.product(*(range(len(a.values[0])) for a in axes))):
        data = copy.deepcopy(base)
        coords: dict[str, Any] = {}
        for axis, i in zip(axes, choice, strict=True):
            for path, values in zip(axis.paths, axis.values, strict=True):
                apply_override(data, path, values[i])
                coords[axis.dim if path == axis.paths[0] else path.split(".")[-1]] = values[i]
        label = ", ".join(f"{k}={v}" for k, v in coords.items())
        members.append(Member(index, validate_dict(data, f"sweep member ({label})"), coords))
    return members


def _group_key(spec: Spec) -> str:
    data = spec.model_dump(mode="json")
    for path in PER_MEMBER_FIELDS:
        table, key = path.split(".")
        data[table].pop(key, None)
    return json.dumps(data, sort_keys=True)


def members_per_group(spec: Spec) -> int | None:
    """The most members a stacked group may hold: device.max_group_size, and what fits in
    device.memory_budget_gb (at least one); None: no limit."""
    limits = [spec.device.max_group_size]
    if spec.device.memory_budget_gb:
        fit = int(spec.device.memory_budget_gb * 1e9 // training_bytes_per_member(spec))
        limits.append(max(1, fit))
    limits = [n for n in limits if n]
    return min(limits) if limits else None


def _check_sizes(spec: Spec, groups: list[Group]) -> None:
    """Refuse a plan whose estimated results or per-group training memory exceed the
    limits of [device]."""
    limit = spec.device.max_result_gb
    results = sum(
        estimated_bytes(g.spec, len(g.members)) + weight_bytes(g.spec, len(g.members))
        for g in groups
    )
    if results > limit * 1e9:
        raise UserError(
            f"the results would take about {results / 1e9:.3g} GB, more than "
            f"device.max_result_gb = {limit:g}; raise it, or store fewer checkpoints or probes"
        )
    limit = spec.device.max_memory_gb
    for g in groups:
        need = training_bytes_per_member(g.spec) * len(g.members)
        if need > limit * 1e9:
            raise UserError(
                f"group {g.index} would need about {need / 1e9:.3g} GB to train, more than "
                f"device.max_memory_gb = {limit:g}; set device.memory_budget_gb to split it "
                "or raise the limit"
            )


def plan(spec: Spec) -> list[Group]:
    """Members grouped by shared tensor shapes and schedule, split at device.max_group_size."""
    by_key: dict[str, list[Member]] = {}
    for member in expand(spec):
        by_key.setdefault(_group_key(member.spec), []).append(member)
    groups = []
    for members in by_key.values():
        size = members_per_group(members[0].spec) or len(members)
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            groups.append(Group(len(groups), chunk, chunk[0].spec))
    for group in groups:
        weight_steps(group.spec)  # a weights epoch that is no checkpoint is a spec error
        parameters = parameters_per_member(group.spec)
        if parameters > MAX_PARAMETERS:
            raise UserError(
                f"group {group.index}: {parameters:.3g} parameters per member, more than "
                f"{MAX_PARAMETERS:.0e} nodescope trains; reduce model.depth or model.width"
            )
    _check_sizes(spec, groups)
    return groups
