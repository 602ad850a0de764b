"""The `nodescope` command's entry point. It lives outside the package because importing
the package takes half a second (xarray, pandas) before `nodescope.cli.main` can catch
anything: a Ctrl-C or SIGTERM then printed Python's traceback or ended the process
silently, instead of the one line every later one gets."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from typing import NoReturn


def main() -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as cli.main: a Ctrl-C
    try:
        from nodescope.cli import main as run_command
    except KeyboardInterrupt:
        sys.stderr.write("interrupted before the command started: nothing was changed\n")
        return 130
    _end_process(run_command())


def _end_process(code: int) -> NoReturn:
    """End the process as soon as the command has returned. Python's own teardown
    (garbage-collecting the modules of torch, pandas and xarray) took 0.6 s of every
    `nodescope run` on a 2-core machine, and a Ctrl-C inside it ended the process with
    no word. By now the command has closed every file it wrote, its Dask cluster and
    client and its folder lock; what it printed is flushed here, where a Ctrl-C or
    SIGTERM just ends the process."""
    for ending in (signal.SIGINT, signal.SIGTERM):
        signal.signal(ending, signal.SIG_DFL)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # e.g. a closed pipe (`| head`)
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
