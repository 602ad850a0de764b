"""Where groups train: in this process, or as tasks on a Dask cluster (a local one of
`--workers N` processes, or an existing one at `--scheduler ADDRESS`).

Every mode runs the same `run_group_task`, so the stored results do not depend on where
a group trained. On Dask, workers send their progress and messages to the client as
events while they train, and a worker that dies has its group rescheduled by Dask; the
group then continues from its saved training state (runner/resume.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable

from ..errors import UserError
from ..interrupts import interrupts_held, uninterrupted
from .allocator import keep_freed_memory
from .run import RunPlan, run_group_task

ProgressFactory = Callable[[int, int], Callable]  # (group index, members) -> progress callback
Log = Callable[[str], None]

PROGRESS_TOPIC = "nodescope-progress"
LOG_TOPIC = "nodescope-log"
PROGRESS_EVERY = 0.5  # seconds between a worker's progress events for one group
CONNECT_TIMEOUT = "10s"


def run_local(
    rp: RunPlan, device: str, progress_for: ProgressFactory | None = None, log: Log | None = None
) -> list[str]:
    paths = []
    for group in rp.todo:
        progress = progress_for(group.index, len(group.members)) if progress_for else None
        paths.append(
            run_group_task(rp.spec, group.index, str(rp.run_dir), device, progress, rp.context, log)
        )
    return paths


def worker_count(requested: str, device: str) -> int:
    """`--workers N`, or `auto`: one worker per visible GPU, else one per CPU core."""
    if requested != "auto":
        try:
            n = int(requested)
        except ValueError:
            n = 0
        if n < 1:
            raise UserError(f"--workers {requested}: give a positive number or 'auto'")
        return n
    if device != "cpu":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    return os.cpu_count() or 1


def _distributed():
    try:
        import distributed
    except ImportError:
        raise UserError(
            "running on Dask needs dask.distributed; pip install 'nodescope[dask]'"
        ) from None
    return distributed


def connect(scheduler: str | None, workers: int):
    """A Client of the cluster at `scheduler`, or of a new local cluster of `workers`
    single-threaded worker processes."""
    distributed = _distributed()
    if scheduler:
        try:
            return distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise UserError(
                f"cannot reach the Dask scheduler at {scheduler} ({_reason(exc)}); start one "
                "with `dask scheduler` or check the address"
            ) from None
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # see allocator.keep_freed_memory
    dask.config.set({"distributed.nanny.pre-spawn-environ": environ})
    # The cluster's silence_logs ends when it closes, while its connections to workers a
    # SIGTERM killed still log their closing, with a traceback; the run says it in one line.
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    # Raised inside LocalCluster's start, a Ctrl-C or SIGTERM left a half-started cluster
    # whose close failed again at exit (AssertionError: Status.init), under a
    # KeyboardInterrupt traceback from each worker still importing.
    with interrupts_held(mask_child_processes=True) as interrupted:
        try:
            cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.CRITICAL,
                preload=["nodescope.runner.dask_worker_setup"],
            )
        except Exception as exc:  # e.g. a worker killed while it started
            if interrupted():
                raise KeyboardInterrupt from None
            raise UserError(
                f"the local Dask cluster did not start ({_reason(exc)}); run the same "
                "command again (groups already stored are kept)"
            ) from None
        if interrupted():
            cluster.close()
            raise KeyboardInterrupt
    return distributed.Client(cluster)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def dask_group_task(
    spec,
    group_index: int,
    run_dir: str,
    device: str,
    context: dict,
    threads: int | None,
    run_id: str,
) -> str:
    """run_group_task on a Dask worker: pinned to one GPU of the worker's host (by
    worker name on a local cluster), progress and messages sent to the client."""
    import torch
    from distributed import get_worker

    worker = get_worker()
    keep_freed_memory()  # also undoes the nanny's MALLOC_TRIM_THRESHOLD_
    if threads:
        torch.set_num_threads(threads)
    if device != "cpu" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        rank = worker.name if isinstance(worker.name, int) else 0
        device = f"cuda:{rank % torch.cuda.device_count()}"
    last = {"time": float("-inf"), "phase": ""}

    def progress(step: int, total: int, loss: float, phase: str = "training") -> None:
        now = time.monotonic()
        if now - last["time"] >= PROGRESS_EVERY or step == total or phase != last["phase"]:
            last.update(time=now, phase=phase)
            worker.log_event(PROGRESS_TOPIC, (group_index, step, total, loss, phase))

    def log(message: str) -> None:
        worker.log_event(LOG_TOPIC, (run_id, message))

    return run_group_task(spec, group_index, run_dir, device, progress, context, log)


def run_dask(
    rp: RunPlan,
    device: str,
    scheduler: str | None,
    workers: int | None = None,
    progress_for: ProgressFactory | None = None,
    log: Log | None = None,
) -> list[str]:
    """Submit one task per group; each worker trains its group and writes its own file.

    The results folder must be on storage every worker can reach.
    """
    distributed = _distributed()
    if not scheduler:
        workers = workers or os.cpu_count() or 1
    client = connect(scheduler, workers)
    # a local cluster shares this machine's cores; workers of other clusters keep theirs
    threads = None if scheduler else max(1, (os.cpu_count() or 1) // workers)
    sizes = {g.index: len(g.members) for g in rp.todo}
    bars: dict[int, Callable] = {}

    def on_progress(event) -> None:
        index, step, total, loss, phase = event[1]
        if progress_for is None or index not in sizes:
            return
        if index not in bars:
            bars[index] = progress_for(index, sizes[index])
        bars[index](step, total, loss, phase)

    run_id, seen = uuid.uuid4().hex, set()

    def on_log(event) -> None:
        stamp, (sender, message) = event
        if log and sender == run_id and (stamp, message) not in seen:
            seen.add((stamp, message))
            log(message)

    try:
        with client:
            client.subscribe_topic(PROGRESS_TOPIC, on_progress)
            client.subscribe_topic(LOG_TOPIC, on_log)
            try:
                return _gather(distributed, client, rp, device, threads, run_id)
            finally:  # messages still in flight when the last group finished
                with contextlib.suppress(Exception):
                    for event in client.get_events(LOG_TOPIC):
                        on_log(event)
    finally:
        if not scheduler:
            _close_local(client.cluster)


def _close_local(cluster) -> None:
    """Close the local cluster now, a Ctrl-C meanwhile held until it is closed: left to
    distributed's exit handler, a Ctrl-C there printed its traceback after the run."""
    with uninterrupted(mask_child_processes=True):
        cluster.close()


def _gather(distributed, client, rp: RunPlan, device: str, threads, run_id: str) -> list[str]:
    futures = [
        client.submit(
            dask_group_task,
            rp.spec,
            g.index,
            str(rp.run_dir.resolve()),
            device,
            rp.context,
            threads,
            run_id,
            key=f"nodescope-group-{g.index:03d}-{g.hash}",
            pure=False,
        )
        for g in rp.todo
    ]
    try:
        return [f.result() for f in distributed.as_completed(futures)]
    except distributed.KilledWorker as exc:
        raise UserError(
            f"a group's worker died repeatedly ({_reason(exc)}); finished groups are "
            f"stored in {rp.run_dir}; check the workers' memory, then run again to resume"
        ) from None
    except (OSError, distributed.client.FutureCancelledError) as exc:
        raise UserError(
            f"the Dask cluster went away ({_reason(exc)}); finished groups are stored in "
            f"{rp.run_dir} and started ones saved their training state: run again to "
            "resume"
        ) from None
