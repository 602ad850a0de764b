"""The `nodescope` command's entry point. It lives outside the package because importing
the package takes half a second (xarray, pandas) before `nodescope.cli.main` can catch
anything: a Ctrl-C or SIGTERM then printed Python's traceback or ended the process
silently, instead of the one line every later one gets."""

from __future__ import annotations

import signal
import sys


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        from nodescope.cli import main as run_command
    except KeyboardInterrupt:
        sys.stderr.write("interrupted before the command started: nothing was changed\n")
        return 130
    return run_command()


if __name__ == "__main__":
    sys.exit(main())
