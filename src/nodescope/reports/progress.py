"""Training progress: live Rich bars in a terminal, a plain line now and then in logs."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RunProgress:
    """One progress line per stacked group: members, steps, epoch, mean loss, ETA.

    When the console is not a terminal (nohup, batch jobs) a plain line is printed at
    most every `log_every` seconds per group instead.
    """

    def __init__(self, console: Console, steps_per_epoch: dict[int, int], log_every: float = 30):
        self.console = console
        self.steps_per_epoch = steps_per_epoch
        self.log_every = log_every
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps  epoch {task.fields[epoch]}  loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )

    def __enter__(self) -> RunProgress:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.progress.stop()

    def log(self, message: str) -> None:
        """A message printed above the live bars."""
        self.console.print(message, highlight=False)

    def for_group(self, index: int, members: int) -> Callable[[int, int, float], None]:
        name = f"group {index} ({members} members)"
        spe = self.steps_per_epoch[index]
        if self.live:
            task = self.progress.add_task(name, total=None, epoch="0", loss="–")

            def update(step: int, total: int, loss: float) -> None:
                self.progress.update(
                    task, completed=step, total=total, epoch=f"{step / spe:.2f}", loss=f"{loss:.4f}"
                )

            return update
        started, last = time.perf_counter(), {"time": float("-inf"), "step": -1}

        def log(step: int, total: int, loss: float) -> None:
            now = time.perf_counter()
            due = now - last["time"] >= self.log_every or step == total
            if not due or step == last["step"]:
                return
            last.update(time=now, step=step)
            elapsed = now - started
            eta = elapsed / step * (total - step) if step else float("nan")
            self.console.print(
                f"{name}: step {step}/{total}, epoch {step / spe:.2f}, loss {loss:.4f}, "
                f"{elapsed:.0f} s elapsed, ETA {eta:.0f} s",
                highlight=False,
            )

        return log
