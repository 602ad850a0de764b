"""The `nodescope` command's entry point (nodescope_launcher): what happens before the
command starts and after it returns."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).parents[1] / "specs" / "quickstart.toml"


def _require_installed() -> None:
    if not importlib.metadata.entry_points(group="console_scripts", name="nodescope"):
        pytest.skip("nodescope is on the path but not installed: no `nodescope` command")


# Runs the installed `nodescope` command's entry point with a Ctrl-C or SIGTERM that arrives while
# the package imports xarray (half a second on a 2-core machine): the signal is sent the
# moment the import starts, so the test does not depend on timing.
_SIGNAL_DURING_IMPORT = """
import importlib.abc, importlib.metadata, os, signal, sys

spec, sent = sys.argv[1], getattr(signal, sys.argv[2])

class SignalAtXarray(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "xarray":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), sent)
        return None

sys.meta_path.insert(0, SignalAtXarray())
sys.argv = ["nodescope", "validate", spec]
entry = importlib.metadata.entry_points(group="console_scripts")["nodescope"]
sys.exit(entry.load()())
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_while_the_command_imports_is_one_line(signal_name):
    _require_installed()
    cmd = [sys.executable, "-c", _SIGNAL_DURING_IMPORT, str(QUICKSTART), signal_name]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "interrupted" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


# The entry point with an exit handler registered first, standing in for Python's own
# teardown, and its output going to a pipe, where it is block-buffered.
_WITH_AN_EXIT_HANDLER = """
import atexit, importlib.metadata, sys

atexit.register(print, "teardown ran")
sys.argv = ["nodescope", "validate", sys.argv[1]]
entry = importlib.metadata.entry_points(group="console_scripts")["nodescope"]
sys.exit(entry.load()())
"""


def test_the_command_ends_when_it_returns_and_its_output_is_all_there():
    _require_installed()
    cmd = [sys.executable, "-c", _WITH_AN_EXIT_HANDLER, str(QUICKSTART)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "teardown ran" not in done.stdout
    assert "estimated result size" in done.stdout.splitlines()[-1]
