"""Training progress: live Rich bars in a terminal, a plain line now and then in logs.

Every group reports (step, total steps, mean loss, phase); the phases are PHASES. A
line for the whole sweep sums the steps of the groups still to train.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PHASES = ("loading data", "first checkpoint", "training", "final evaluation", "writing")
WIDE = 110  # columns from which each line has a bar and its group's member count
ETA_WINDOW = 300  # seconds of progress the ETA averages over: checkpoints come in bursts

GroupProgress = Callable[..., None]  # (step, total, loss, phase="training")


class RunProgress:
    """One progress line per stacked group and one for the sweep: phase, steps, epoch,
    mean loss, elapsed time and ETA.

    When the console is not a terminal (nohup, batch jobs) a plain line is printed at
    most every `log_every` seconds per group instead.
    """

    def __init__(
        self,
        console: Console,
        steps_per_epoch: dict[int, int],
        log_every: float = 30,
        total_steps: int | None = None,
    ):
        self.console = console
        self.steps_per_epoch = steps_per_epoch
        self.log_every = log_every
        self.live = console.is_terminal
        self.wide = console.width >= WIDE  # room for a bar and the members of each group
        bar = [BarColumn(bar_width=16)] if self.wide else []
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            *bar,
            TextColumn("{task.completed}/{task.fields[steps]}" + (" steps" if self.wide else "")),
            TextColumn("{task.fields[detail]}"),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            speed_estimate_period=ETA_WINDOW,
        )
        self.done: dict[int, int] = {}
        self.sweep = None
        if self.live and total_steps:
            self.sweep = self.progress.add_task(
                "sweep", total=total_steps, steps=total_steps, detail=""
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

    def _sweep_step(self, index: int, step: int) -> None:
        if self.sweep is None:
            return
        self.done[index] = step
        self.progress.update(self.sweep, completed=sum(self.done.values()))

    def for_group(self, index: int, members: int) -> GroupProgress:
        name = f"group {index} ({members} member{'s' * (members != 1)})"
        spe = self.steps_per_epoch[index]
        if self.live:
            shown = name if self.wide else f"group {index}"
            task = self.progress.add_task(shown, total=None, steps="?", detail="loading data")

            def update(step: int, total: int, loss: float, phase: str = "training") -> None:
                detail = phase
                if phase == "training":
                    detail = f"epoch {step / spe:.2f} loss {loss:.4f}"
                self.progress.update(task, completed=step, total=total, steps=total, detail=detail)
                self._sweep_step(index, step)

            return update
        started, last = time.perf_counter(), {"time": float("-inf"), "step": -1, "phase": ""}

        def log(step: int, total: int, loss: float, phase: str = "training") -> None:
            now = time.perf_counter()
            due = now - last["time"] >= self.log_every or step == total
            if phase != last["phase"]:
                due = True
            elif not due or step == last["step"]:
                return
            last.update(time=now, step=step, phase=phase)
            elapsed = now - started
            eta = f"{elapsed / step * (total - step):.0f} s" if step else "–"
            where = f"epoch {step / spe:.2f}, loss {loss:.4f}" if phase == "training" else phase
            self.console.print(
                f"{name}: step {step}/{total}, {where}, {elapsed:.0f} s elapsed, ETA {eta}",
                highlight=False,
            )

        return log
