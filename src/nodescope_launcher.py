"""The `nodescope` command's entry point. It lives outside the package because importing
the package takes half a second (xarray, pandas) before `nodescope.cli.main` can catch
anything: a Ctrl-C then printed Python's traceback instead of the one line every later
Ctrl-C gets."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from nodescope.cli import main as run_command
    except KeyboardInterrupt:
        sys.stderr.write("interrupted before the command started: nothing was changed\n")
        return 130
    return run_command()


if __name__ == "__main__":
    sys.exit(main())
