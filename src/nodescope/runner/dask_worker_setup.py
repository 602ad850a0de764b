"""Preloaded into the worker processes of a local Dask cluster (`connect`).

Ctrl-C in a terminal reaches the whole process group. The client's process ends the run
(finished groups stay stored) and closes the cluster, so its workers ignore SIGINT
rather than each printing a KeyboardInterrupt traceback under the one-line message.
"""

from __future__ import annotations

import signal
import threading


def dask_setup(worker) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
