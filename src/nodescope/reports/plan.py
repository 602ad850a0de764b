"""The plan of a spec (members, groups, checkpoints, result size) as a Rich tree."""

from __future__ import annotations

from rich.tree import Tree

from ..spec import Group, Spec, checkpoint_steps
from ..spec.size import (
    BYTES_PER_VALUE,
    estimated_bytes,
    gap_pairs,
    training_bytes_per_member,
    values_per_member,
    weight_bytes,
)
from .words import plural


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def _coords_text(members) -> str:
    keys = list(members[0].coords)
    parts = []
    for k in keys:
        values = list(dict.fromkeys(m.coords[k] for m in members))
        parts.append(f"{k}={values[0]}" if len(values) == 1 else f"{k}∈{values}")
    return ", ".join(parts)


def plan_tree(path: str, spec: Spec, groups: list[Group]) -> Tree:
    d, m, o, t = spec.data, spec.model, spec.optimiser, spec.training
    n_members = sum(len(g.members) for g in groups)
    train, val, test = d.sizes()
    steps = checkpoint_steps(spec)
    tree = Tree(f"[bold]{spec.experiment.name}[/]  [dim]{path}[/]")
    if spec.experiment.description:
        tree.add(f"[italic]{spec.experiment.description}[/]")
    tree.add(
        f"data: {d.name}, train {train} / val {val} / test {test}, "
        f"{d.num_features} features, {d.num_classes} classes"
    )
    widths = m.hidden_widths()
    tree.add(
        f"model: {d.num_features} → {widths} → out, {m.activation}, bias {m.bias}, "
        f"init {m.init}" + (", batch norm" if m.batch_norm else "")
    )
    opt = o.name + (f" ({o.layca_base} base)" if o.name == "layca" else "")
    tree.add(
        f"training: {opt} lr {o.lr}, {t.loss} loss, batch {spec.batch_size()}, "
        f"{t.epochs} epochs × {spec.steps_per_epoch()} steps"
        + (", float64 (about 2x the time and memory of float32)" if t.dtype == "float64" else "")
    )
    tree.add(f"checkpoints: {len(steps)} (steps {steps[0]} … {steps[-1]})")
    probes = [name for name, _ in spec.probes.enabled()]
    tree.add(f"probes: {', '.join(probes) or 'none'}")
    if spec.probes.activation_gaps:
        per_member = values_per_member(spec)["activation_gaps"] * BYTES_PER_VALUE
        tree.add(
            f"activation_gaps: at most {gap_pairs(spec.probes.activation_gaps)} sample pairs "
            f"per member ({_human_bytes(per_member)} per member)"
        )
    sweep = tree.add(
        f"sweep: {plural(n_members, 'member')} in {plural(len(groups), 'stacked group')}"
    )
    for g in groups:
        sweep.add(
            f"group {g.index}: {plural(len(g.members), 'member')} ({_coords_text(g.members)})"
        )
    if spec.device.memory_budget_gb:
        budget = spec.device.memory_budget_gb
        per_member = sorted({training_bytes_per_member(g.spec) for g in groups})
        span = _human_bytes(per_member[0])
        span += f" to {_human_bytes(per_member[-1])}" if len(per_member) > 1 else ""
        over = " (a member alone needs more)" if per_member[-1] > budget * 1e9 else ""
        tree.add(
            f"training memory: about {span} per member; groups split to fit "
            f"device.memory_budget_gb = {budget:g}{over}"
        )
    size = sum(estimated_bytes(g.spec, len(g.members)) for g in groups)
    tree.add(f"estimated result size: {_human_bytes(size)}")
    weights = sum(weight_bytes(g.spec, len(g.members)) for g in groups)
    if weights:
        tree.add(f"stored weights (checkpoints.weights): {_human_bytes(weights)}")
    return tree
