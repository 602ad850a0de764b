"""Run a spec: resolve the device, skip stored groups, train the rest, store each atomically."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..spec import Group, Spec, plan, resolved_toml, spec_hash
from .store import GROUP_GLOB, group_path, stored_hash

RESOLVED_NAME = "resolved_spec.toml"


@dataclass
class RunPlan:
    spec: Spec
    spec_text: str
    run_dir: Path
    groups: list[Group]
    todo: list[Group]  # groups without a stored result for the same resolved spec


def resolve_device(requested: str):
    import torch

    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def prepare_run(spec: Spec, spec_text: str, out: str | Path | None, fresh: bool) -> RunPlan:
    """Create the results folder and decide which groups still need training."""
    run_dir = Path(out) if out else Path("runs") / spec.experiment.name
    groups = plan(spec)
    resolved = run_dir / RESOLVED_NAME
    if resolved.exists() and not fresh:
        from ..spec.load import validate_dict
        from ..spec.toml_io import read_toml

        old = validate_dict(read_toml(resolved)[0], str(resolved))
        if spec_hash(old) != spec_hash(spec):
            raise UserError(
                f"{run_dir} holds results of a different spec; pass --fresh to replace them "
                "or --out DIR to keep both"
            )
    if fresh and run_dir.exists():
        for f in run_dir.glob(GROUP_GLOB):
            f.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.toml").write_text(spec_text)
    resolved.write_text(resolved_toml(spec) + "\n")
    todo = [g for g in groups if stored_hash(group_path(run_dir, g)) != g.hash]
    return RunPlan(spec, spec_text, run_dir, groups, todo)


def run_group_task(
    spec: Spec,
    group_index: int,
    run_dir: str,
    device_request: str,
    progress: Callable | None = None,
) -> str:
    """Train one group and store it; the same task runs in-process or on a Dask worker."""
    import torch

    from ..results.weights import weights_path
    from .store import group_dataset, write_atomic
    from .train import train_group

    group = plan(spec)[group_index]
    device = resolve_device(device_request)
    try:
        result = train_group(group, device, progress)
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
    write_atomic(group_dataset(spec, group, result, device_name(device)), path)
    return str(path)


def clean_stale_temp_files(run_dir: Path) -> None:
    for tmp in run_dir.glob("*.nc.tmp"):
        tmp.unlink()
