"""interrupts.uninterrupted: a Ctrl-C or SIGTERM inside the block waits until it ends."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from nodescope.interrupts import uninterrupted


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_the_block_is_raised_after_the_block_ends(sent):
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    steps = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with uninterrupted():
                os.kill(os.getpid(), sent)
                steps.append("after the signal")
        assert steps == ["after the signal"]
        assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_blocks_own_failure_wins_over_a_held_signal():
    with pytest.raises(ZeroDivisionError):
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGINT)
            1 / 0  # noqa: B018


def test_without_a_signal_the_block_just_runs():
    with uninterrupted():
        value = 1
    assert value == 1


def test_outside_the_main_thread_it_changes_no_handler():
    seen = []

    def worker():
        with uninterrupted():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]
