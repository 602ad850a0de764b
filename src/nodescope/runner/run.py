"""Run a spec: resolve the device, skip stored groups, train the rest, store each atomically."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..results.folder import OVERRIDES_NAME, RESOLVED_NAME, SPEC_NAME
from ..spec import Group, Spec, plan, resolved_toml, spec_hash
from .store import GROUP_GLOB, group_path, stored_hash


@dataclass
class RunPlan:
    spec: Spec
    spec_text: str
    run_dir: Path
    groups: list[Group]
    todo: list[Group]  # groups without a stored result for the same resolved spec
    context: dict[str, str] = field(default_factory=dict)  # provenance of the invocation


def resolve_device(requested: str):
    import torch

    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
    if requested.startswith("cuda:"):  # one GPU of several, chosen by a Dask worker
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def _stored_intact(run_dir: Path, group: Group) -> bool:
    """A group counts as stored when its file (and its weights file, when the spec keeps
    weights) was written for this group and still matches its recorded checksum."""
    from ..results.integrity import damage
    from ..results.weights import weights_path

    path = group_path(run_dir, group)
    if stored_hash(path) != group.hash or damage(path):
        return False
    if group.spec.checkpoints.weights:
        weights = weights_path(run_dir, group.index)
        return weights.exists() and not damage(weights)
    return True


def run_dir_for(spec: Spec, out: str | Path | None) -> Path:
    return Path(out) if out else Path("runs") / spec.experiment.name


def _check_same_spec(run_dir: Path, spec: Spec) -> None:
    """Refuse to mix results of two specs in one folder; a folder without stored groups
    (a run that failed before its first group finished) may take any spec."""
    from ..spec.load import spec_differences, validate_dict
    from ..spec.toml_io import read_toml

    resolved = run_dir / RESOLVED_NAME
    if not resolved.exists() or not any(run_dir.glob(GROUP_GLOB)):
        return
    try:
        old = validate_dict(read_toml(resolved)[0], str(resolved))
    except UserError as exc:
        why = str(exc).split("; fix")[0]
        raise UserError(
            f"{why}: the stored spec is damaged; pass --fresh to replace the results in "
            f"{run_dir} or --out DIR to keep them"
        ) from None
    if spec_hash(old) != spec_hash(spec):
        changed = spec_differences(old, spec)
        shown = ", ".join(changed[:4]) + (
            f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        )
        raise UserError(
            f"{run_dir} holds results of a different spec (changed: {shown}); pass --fresh "
            "to replace them or --out DIR to keep both"
        )


def prepare_run(
    spec: Spec,
    spec_text: str,
    out: str | Path | None,
    fresh: bool,
    overrides: list[str] = (),
    command: list[str] | None = None,
) -> RunPlan:
    """Create the results folder and decide which groups still need training."""
    from ..results.integrity import remove_stale_temp_files
    from ..results.provenance import invocation
    from ..spec.toml_io import dump_toml
    from .resume import remove_states

    run_dir = run_dir_for(spec, out)
    groups = plan(spec)
    if not fresh:
        _check_same_spec(run_dir, spec)
    if fresh and run_dir.exists():
        for f in run_dir.glob(GROUP_GLOB):
            f.unlink()
        remove_states(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SPEC_NAME).write_text(spec_text)
    (run_dir / RESOLVED_NAME).write_text(resolved_toml(spec) + "\n")
    overrides_file = run_dir / OVERRIDES_NAME
    if overrides:
        overrides_file.write_text(
            "# --set overrides applied to spec.toml; resolved_spec.toml holds the result\n"
            + dump_toml({"set": list(overrides)})
            + "\n"
        )
    elif overrides_file.exists():
        overrides_file.unlink()
    remove_stale_temp_files(run_dir)
    todo = [g for g in groups if not _stored_intact(run_dir, g)]
    context = {**invocation(list(overrides), command), "spec_as_given": spec_text}
    return RunPlan(spec, spec_text, run_dir, groups, todo, context)


def run_group_task(
    spec: Spec,
    group_index: int,
    run_dir: str,
    device_request: str,
    progress: Callable | None = None,
    context: dict[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> str:
    """Train one group and store it; the same task runs in-process or on a Dask worker.
    `context` is the invocation's provenance (RunPlan.context). Training continues from
    the group's saved training state when there is one (runner/resume.py)."""
    import torch

    from ..results.provenance import group_provenance, timestamp
    from ..results.weights import weights_path
    from .resume import StateFile, state_path
    from .store import group_dataset, write_atomic
    from .train import train_group

    group = plan(spec)[group_index]
    device = resolve_device(device_request)
    started = timestamp()
    state_file = StateFile(state_path(Path(run_dir), group.index), group, log)
    try:
        result = train_group(group, device, progress, state_file)
    except torch.OutOfMemoryError:
        raise UserError(
            f"out of memory training group {group_index} ({len(group.members)} members) on "
            f"{device}; set device.max_group_size to a smaller number"
        ) from None
    if result.weights is not None:  # before the results: a stored group has its weights
        path = weights_path(Path(run_dir), group.index)
        path.parent.mkdir(exist_ok=True)
        write_atomic(result.weights, path)
    path = group_path(Path(run_dir), group)
    provenance = group_provenance(spec, device, started, context or {})
    write_atomic(group_dataset(spec, group, result, device_name(device), provenance), path)
    state_file.remove()
    if progress:
        total = group.spec.training.epochs * group.spec.steps_per_epoch()
        progress(total, total, float("nan"), "stored")
    return str(path)
