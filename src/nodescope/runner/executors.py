"""Where groups train: in this process (with a live progress display) or on a Dask cluster."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UserError
from .run import RunPlan, run_group_task

ProgressFactory = Callable[[int, int], Callable]  # (group index, members) -> progress callback


def run_local(rp: RunPlan, device: str, progress_for: ProgressFactory | None = None) -> list[str]:
    paths = []
    for group in rp.todo:
        progress = progress_for(group.index, len(group.members)) if progress_for else None
        paths.append(
            run_group_task(rp.spec, group.index, str(rp.run_dir), device, progress, rp.context)
        )
    return paths


def run_dask(rp: RunPlan, device: str, scheduler: str | None) -> list[str]:
    """Submit one task per group; each worker trains its group and writes its own file.

    The results folder must be on storage every worker can reach.
    """
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise UserError(
            "--executor dask needs dask.distributed; pip install 'nodescope[dask]'"
        ) from None
    client = Client(scheduler) if scheduler else Client(LocalCluster(processes=True))
    with client:
        futures = [
            client.submit(
                run_group_task,
                rp.spec,
                g.index,
                str(rp.run_dir.resolve()),
                device,
                None,
                rp.context,
                pure=False,
            )
            for g in rp.todo
        ]
        return client.gather(futures)
