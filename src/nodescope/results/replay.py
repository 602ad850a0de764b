"""Probes added after training: evaluated from the stored weights, stored beside the rest.

A probe that only reads the network at checkpoints (an eval pass, or the trained network
at the end) gives the same values from stored weights as it gave during training, because
the eval pass sees the same parameters, batch-norm statistics and data. Probes that watch
every training step cannot be replayed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import xarray as xr

from ..errors import UserError
from ..spec import Group, Spec, checkpoint_steps, plan, resolved_toml
from ..spec.load import apply_override, parse_overrides, validate_dict
from .folder import RESOLVED_NAME, read_resolved_spec
from .lazy import NETCDF_LOCK
from .weights import build_stacked, checked_weights, read_state, snapshot_table


def spec_with_probe(spec: Spec, name: str, overrides: list[str]) -> Spec:
    """The run's spec with probe `name` switched on; `overrides` are KEY=VALUE pairs,
    relative to the probe's table (`churn=false`) or full paths (`probes.NAME.churn=false`)."""
    from ..metrics import PROBES

    if name not in PROBES:
        raise UserError(f"unknown probe {name!r}; choose one of {', '.join(sorted(PROBES))}")
    data = spec.model_dump(mode="json")
    if not isinstance(data["probes"].get(name), dict):
        data["probes"][name] = {}
    for key, value in parse_overrides(overrides):
        path = key if key.startswith("probes.") else f"probes.{name}.{key}"
        apply_override(data, path, value)
    return validate_dict(data, f"probe {name}")


def _replayable(name: str, probe) -> None:
    if probe.needs_train_steps:
        raise UserError(
            f"probe {name!r} watches every training step and cannot be computed from stored "
            f"weights; add [probes.{name}] to the spec and run it again (--out NEW_DIR)"
        )


def add_probe(
    run_dir: str | Path,
    name: str,
    overrides: list[str] = (),
    device: str = "auto",
    log: Callable[[str], None] = lambda _: None,
) -> list[Path]:
    """Evaluate probe `name` on every group's stored weights and add its variables to the
    group files (atomically); the stored resolved spec then lists the probe."""
    from ..runner.run import device_name, resolve_device
    from ..runner.store import group_path, stored_hash

    run_dir = Path(run_dir)
    old = read_resolved_spec(run_dir)
    new = spec_with_probe(old, name, list(overrides))
    dev = resolve_device(device)
    written = []
    for before, after in zip(plan(old), plan(new), strict=True):
        path = group_path(run_dir, before)
        stored = stored_hash(path)
        if stored == after.hash:
            log(f"group {before.index}: {name} already stored")
            continue
        if stored != before.hash:
            raise UserError(
                f"{path}: missing or from another spec; finish the run (`nodescope run "
                f"{run_dir / RESOLVED_NAME}`) before adding probes"
            )
        started = time.perf_counter()
        variables = replay_group(new, after, name, run_dir, dev)
        _store(path, new, after, variables, name, device_name(dev))
        log(f"group {before.index}: {name} added ({time.perf_counter() - started:.1f} s)")
        written.append(path)
    (run_dir / RESOLVED_NAME).write_text(resolved_toml(new) + "\n")
    return written


def replay_group(spec: Spec, group: Group, name: str, run_dir: Path, device) -> dict:
    """The probe's variables for one group, computed from its stored weights."""
    from ..data.prepare import build_group_data
    from ..metrics import PROBES, ProbeContext
    from ..runner.train import record_checkpoint

    wpath = checked_weights(run_dir, group)
    torch.set_flush_denormal(True)
    specs = [m.spec for m in group.members]
    data = build_group_data(specs, device, getattr(torch, spec.training.dtype))
    model = build_stacked(group).to(device).eval()
    steps = checkpoint_steps(spec)
    ctx = ProbeContext.of(specs, len(steps), model.widths, data)
    probe = PROBES[name](getattr(spec.probes, name), ctx)
    _replayable(name, probe)
    table = snapshot_table(wpath)
    ck_of = {s: i for i, s in enumerate(steps)}
    for snap, (step, kind) in enumerate(zip(table.step.values, table.kind.values, strict=True)):
        if kind == "checkpoint" and int(step) in ck_of:
            model.load_state_dict(read_state(wpath, snap))
            loss, chunk = spec.training.loss, spec.training.eval_chunk
            record_checkpoint(model, data, [probe], ck_of[int(step)], loss, chunk)
    final = table.kind.values.tolist().index("final")
    model.load_state_dict(read_state(wpath, final))
    model.eval()
    with torch.no_grad():
        probe.on_end(model)
    return probe.results()


def _store(path: Path, spec: Spec, group: Group, variables: dict, name: str, device: str):
    from ..runner.store import group_dataset, write_atomic
    from ..runner.train import GroupRun

    with NETCDF_LOCK, xr.open_dataset(path, engine="netcdf4") as ds:
        existing = ds.load()
    labels = existing["label_name"].values.tolist() if "label_name" in existing else []
    run = GroupRun(
        variables,
        existing["step"].values.tolist(),
        group.spec.steps_per_epoch(),
        group.spec.model.hidden_widths(),
        labels or group.spec.data.class_names(),
        float(existing.attrs.get("wall_time_s", 0.0)),
    )
    fresh = group_dataset(spec, group, run, device)
    merged = existing.copy()
    for var in variables:
        merged[var] = fresh[var]
    replayed = json.loads(existing.attrs.get("replayed_probes", "[]"))
    replayed.append({"probe": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": device})
    merged.attrs.update(
        group_hash=group.hash,
        spec_hash=fresh.attrs["spec_hash"],
        resolved_spec=fresh.attrs["resolved_spec"],
        replayed_probes=json.dumps(replayed),
    )
    write_atomic(merged, path)
