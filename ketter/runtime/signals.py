"""Graceful stop on SIGTERM *and* SIGINT; a second signal stops at once.

Huey 3.5 makes only one of SIGINT/SIGTERM graceful and never interrupts
thread workers, so Ketter installs its own handlers. The handler only sets a
``threading.Event`` and counts: neither logging nor taking locks is safe in a
signal handler. The copy loops poll the event (via their progress callback)
and checkpoint within a second; the main thread waits on it.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

#: Exit status after a second signal: the process did not finish cleanly, and
#: the recovery sweep of the next start picks its jobs up.
EXIT_IMMEDIATE = 1


class Shutdown:
    """The stop flag of one process, set by SIGTERM/SIGINT or by code."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reload = threading.Event()
        self.signals = 0

    def install(self) -> Shutdown:
        """Install the handlers (main thread only)."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGHUP, self._handle_hup)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals > 1:
            # Second signal: stop now. Leases expire and the sweep recovers.
            os._exit(EXIT_IMMEDIATE)
        self.event.set()

    def _handle_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload.set()

    @staticmethod
    def spawn_threads_without_signals() -> _SignalMask:
        """Threads started inside this block never receive SIGTERM/SIGINT/SIGHUP.

        The kernel delivers a process signal to any thread that does not
        block it. If a copy thread takes it, the main thread — the only one
        that runs Python signal handlers — keeps sleeping in its wait and the
        stop flag is set late. Threads inherit the mask of their creator, so
        blocking the signals while the worker threads are created sends every
        signal to the main thread, which wakes at once.
        """
        return _SignalMask()

    def request(self) -> None:
        """Ask for a graceful stop from code (tests, `ketter run` children)."""
        self.event.set()

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.event.wait(timeout)


_HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


class _SignalMask:
    def __enter__(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)

    def __exit__(self, *exc: object) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
