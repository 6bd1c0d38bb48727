"""Safe interrupts: a first signal is recorded and raised at the next `check()`, the same signal
again raises at once, an idle process exits, `sigterm_raises` turns SIGTERM into Ctrl-C.

Signals go to this process (`os.kill(os.getpid(), ...)`) from the main thread: Python runs the
handler before `os.kill` returns, so its effect is visible on the next line.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from pipeline.tracking import interrupts


def _send(signum) -> None:
    os.kill(os.getpid(), signum)


@pytest.fixture
def handlers():
    """Put back SIGINT, SIGTERM and SIGUSR1 as they were, whatever a test left behind."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    yield before
    for signum, handler in before.items():
        signal.signal(signum, handler)


def test_nothing_is_requested_before_a_signal(handlers):
    restore = interrupts.install()
    try:
        assert not interrupts.requested()
        interrupts.check()  # returns: nothing to raise
        assert signal.getsignal(signal.SIGINT) is not handlers[signal.SIGINT]
        assert signal.getsignal(signal.SIGTERM) is not handlers[signal.SIGTERM]
    finally:
        restore()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_first_signal_is_raised_at_every_later_check(handlers, signum):
    restore = interrupts.install()
    try:
        _send(signum)  # recorded, nothing raised here
        assert interrupts.requested()
        for _ in range(2):  # the request stays until restore()
            with pytest.raises(KeyboardInterrupt):
                interrupts.check()
    finally:
        restore()


@pytest.mark.parametrize(
    "first, second, raises_at_once",
    [
        (signal.SIGINT, signal.SIGINT, True),
        (signal.SIGTERM, signal.SIGTERM, True),
        (signal.SIGINT, signal.SIGTERM, False),  # Ctrl-C, then the parent's SIGTERM: one stop
        (signal.SIGTERM, signal.SIGINT, False),
    ],
)
def test_the_same_signal_twice_raises_at_once(handlers, first, second, raises_at_once):
    restore = interrupts.install()
    try:
        _send(first)
        if raises_at_once:
            with pytest.raises(KeyboardInterrupt):
                _send(second)
        else:
            _send(second)
            assert interrupts.requested()
            with pytest.raises(KeyboardInterrupt):  # a different signal: still a request
                _send(first)
    finally:
        restore()


def test_restore_puts_back_the_handlers_and_clears_the_request(handlers):
    restore = interrupts.install()
    _send(signal.SIGTERM)
    restore()
    assert not interrupts.requested()
    interrupts.check()  # nothing to raise any more
    assert signal.getsignal(signal.SIGINT) is handlers[signal.SIGINT]
    assert signal.getsignal(signal.SIGTERM) is handlers[signal.SIGTERM]


def test_a_new_install_starts_with_no_request(handlers):
    first = interrupts.install()
    _send(signal.SIGINT)
    second = interrupts.install()
    try:
        assert not interrupts.requested()
        _send(signal.SIGINT)  # first of this install: recorded, not raised
        assert interrupts.requested()
    finally:
        second()
        first()
    assert signal.getsignal(signal.SIGINT) is handlers[signal.SIGINT]


def test_only_the_given_signals_are_handled(handlers):
    restore = interrupts.install((signal.SIGUSR1,))
    try:
        assert signal.getsignal(signal.SIGTERM) is handlers[signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is handlers[signal.SIGINT]
        _send(signal.SIGUSR1)
        assert interrupts.requested()
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    finally:
        restore()
    assert signal.getsignal(signal.SIGUSR1) is handlers[signal.SIGUSR1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_an_idle_process_exits_at_once_with_128_plus_the_signal(handlers, signum):
    busy = {"now": False}
    restore = interrupts.install((signum,), idle=lambda: not busy["now"])
    try:
        with pytest.raises(SystemExit) as exit_info:
            _send(signum)
        assert exit_info.value.code == 128 + signum
        assert not interrupts.requested()
        busy["now"] = True  # working: the signal waits for the next check()
        _send(signum)
        assert interrupts.requested()
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    finally:
        restore()


def test_install_off_the_main_thread_changes_nothing(handlers):
    seen = {}

    def install_in_thread():
        restore = interrupts.install()
        seen["handlers"] = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
        restore()  # a no-op
        seen["requested"] = interrupts.requested()

    thread = threading.Thread(target=install_in_thread)
    thread.start()
    thread.join()
    assert seen["handlers"] == (handlers[signal.SIGINT], handlers[signal.SIGTERM])
    assert seen["requested"] is False
    assert signal.getsignal(signal.SIGTERM) is handlers[signal.SIGTERM]


# -- sigterm_raises ----------------------------------------------------------------------------
def test_sigterm_raises_keyboard_interrupt_inside_and_restores_the_handler(handlers):
    received = []

    def record(signum, frame):
        received.append(signum)

    signal.signal(signal.SIGTERM, record)
    with pytest.raises(KeyboardInterrupt):
        with interrupts.sigterm_raises():
            _send(signal.SIGTERM)
            pytest.fail("SIGTERM did not raise")  # never reached
    assert received == []
    assert signal.getsignal(signal.SIGTERM) is record
    _send(signal.SIGTERM)  # the handler from before the block is back
    assert received == [signal.SIGTERM]


def test_sigterm_raises_restores_the_handler_after_a_quiet_block_and_any_error(handlers):
    with interrupts.sigterm_raises():
        assert signal.getsignal(signal.SIGTERM) is not handlers[signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is handlers[signal.SIGTERM]
    with pytest.raises(ValueError):
        with interrupts.sigterm_raises():
            raise ValueError("boom")
    assert signal.getsignal(signal.SIGTERM) is handlers[signal.SIGTERM]


def test_sigterm_raises_leaves_sigint_and_the_stop_request_alone(handlers):
    with interrupts.sigterm_raises():
        assert signal.getsignal(signal.SIGINT) is handlers[signal.SIGINT]
        assert not interrupts.requested()


def test_sigterm_raises_off_the_main_thread_changes_nothing(handlers):
    seen = {}

    def block_in_thread():
        with interrupts.sigterm_raises():
            seen["inside"] = signal.getsignal(signal.SIGTERM)
        seen["after"] = signal.getsignal(signal.SIGTERM)

    thread = threading.Thread(target=block_in_thread)
    thread.start()
    thread.join()
    assert seen == {"inside": handlers[signal.SIGTERM], "after": handlers[signal.SIGTERM]}
