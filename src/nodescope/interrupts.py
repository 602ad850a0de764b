"""Stretches that a Ctrl-C or SIGTERM must not cut in two. A run ends on either by raising
KeyboardInterrupt (cli.main), and Python raises it between any two bytecodes: inside a
netCDF write it left the HDF5 library's lock held, and the write's own cleanup then
waited for that lock forever. Here the signal waits until the stretch is over."""

from __future__ import annotations

import contextlib
import signal
import threading

ENDING = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts_held(*, mask_child_processes: bool = False):
    """Ctrl-C and SIGTERM wait until the block ends; yields a function that says whether
    one came meanwhile. Outside the main thread, where no signal handler runs, it does
    nothing.

    `mask_child_processes` also blocks SIGINT, as the standard library's resource tracker
    does for its own process (bpo-33613): threads and processes started in the block
    inherit the mask and never see a Ctrl-C, not even in their first milliseconds.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    came = []
    before = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in ENDING}
    can_block = mask_child_processes and hasattr(signal, "pthread_sigmask")  # not on Windows
    if can_block:
        from multiprocessing import resource_tracker

        # Started later from a thread of the block, the tracker's own start would unblock
        # SIGINT there, and so in every thread and process that thread starts.
        resource_tracker.ensure_running()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    def interrupted() -> bool:
        if can_block and signal.SIGINT in signal.sigpending():
            signal.sigwait({signal.SIGINT})  # taken, so that unblocking it raises nothing
            came.append(signal.SIGINT)
        return bool(came)

    try:
        yield interrupted
    finally:
        if can_block:
            interrupted()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for s, handler in before.items():  # None: a handler not set from Python
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


@contextlib.contextmanager
def uninterrupted(*, mask_child_processes: bool = False):
    """The block runs to its end; a Ctrl-C or SIGTERM that came meanwhile is raised after
    it, as KeyboardInterrupt, unless the block failed on its own."""
    with interrupts_held(mask_child_processes=mask_child_processes) as interrupted:
        yield
    if interrupted():
        raise KeyboardInterrupt
