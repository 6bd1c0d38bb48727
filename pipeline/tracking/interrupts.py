"""Ctrl-C and SIGTERM that stop the sweep at safe points, not inside a database write.

A `KeyboardInterrupt` raised by a signal handler lands wherever the process happens to be,
e.g. inside SQLAlchemy between MLflow's write and its commit or inside Optuna's journal lock,
and can leave the SQLite store locked for the other processes (seen with two workers: both
hung on "database is locked"). So the first SIGINT/SIGTERM only records the request, and the
sweep calls `check()` where nothing is half-done (between fit runs, between engine chunks,
between trials), which raises `KeyboardInterrupt` there. The same signal a second time raises
at once, for a process that is stuck.

The flag is per process and exists only after `install()` (stages call it from `main`).
Stages that have no safe points to poll (generate, aggregate, fit_counts, the launchers) use
`sigterm_raises()` instead: SIGTERM then raises `KeyboardInterrupt` at once, like Ctrl-C.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable

_STATE: dict = {"seen": set()}  # signals received since `install()`


def install(
    signals=(signal.SIGINT, signal.SIGTERM), idle: Callable[[], bool] | None = None
) -> Callable[[], None]:
    """Make `signals` request a stop (main thread only; elsewhere a no-op).

    The same signal twice raises `KeyboardInterrupt` at once. Ctrl-C followed by the SIGTERM
    a parent sends its workers counts as one request.

    Args:
        signals: the signals to handle.
        idle: returns True while the process does nothing that `check()` would see (e.g. a
            logger process waiting for work); a signal then exits at once (SystemExit).

    Returns:
        A function that restores the previous handlers and clears the request.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        if idle is not None and idle():
            raise SystemExit(128 + signum)
        if signum in _STATE["seen"]:
            raise KeyboardInterrupt
        _STATE["seen"].add(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    _STATE["seen"] = set()

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _STATE["seen"] = set()

    return restore


def requested() -> bool:
    """Whether a stop has been requested in this process."""
    return bool(_STATE["seen"])


def check() -> None:
    """Raise `KeyboardInterrupt` if a stop has been requested (call at safe points)."""
    if _STATE["seen"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_raises():
    """Within the block, SIGTERM raises `KeyboardInterrupt` like Ctrl-C (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
