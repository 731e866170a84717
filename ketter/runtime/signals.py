"""Graceful stop on SIGTERM *and* SIGINT; a second signal stops at once.

Huey 3.5 makes only one of SIGINT/SIGTERM graceful and never interrupts
thread workers, so Ketter installs its own handlers.

The handlers must never block. Python runs a signal handler in the main
thread *between two bytecodes of whatever it was doing*, and that may be
inside ``threading.Event.wait()`` or ``.set()`` holding the event's internal
lock: a handler that called ``Event.set()`` then waited for a lock its own
thread holds, for ever. That is the one graceful stop in about fifty under
systemd that hung until SIGKILL (issue #15). So the stop and reload flags
here are :class:`SignalSafeEvent`: a plain boolean plus a self-pipe, no lock
anywhere. The handler sets the boolean and writes one byte to a non-blocking
pipe (which never blocks: a full pipe is already readable); a waiter
``select()``s on the pipe, so every thread waiting on the event wakes at
once. On top, ``signal.set_wakeup_fd`` makes the C-level handler wake the
main thread's wait even when the kernel delivered the signal to another
thread (one not started under :meth:`Shutdown.spawn_threads_without_signals`).

The copy loops poll the flag (via their progress callback) and checkpoint
within a second; the main thread waits on it.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import threading
import time
import weakref
from types import FrameType

#: Exit status after a second signal: the process did not finish cleanly, and
#: the recovery sweep of the next start picks its jobs up.
EXIT_IMMEDIATE = 1


def _pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    return r, w


def _close(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, 4096):
            pass


_WAKE: tuple[int, int] | None = None


def _wakeup_pipe() -> int:
    """The read end of the process's ``signal.set_wakeup_fd`` pipe (main
    thread only). One per process, never closed: the C handler writes to the
    fd number it was given, and a closed, reused number would be some file."""
    global _WAKE
    if _WAKE is None:
        _WAKE = _pipe()
    signal.set_wakeup_fd(_WAKE[1], warn_on_full_buffer=False)
    return _WAKE[0]


class SignalSafeEvent(threading.Event):
    """A ``threading.Event`` that a signal handler may set: no lock is taken
    by :meth:`set`, :meth:`is_set`, :meth:`wait` or :meth:`clear`.

    A subclass so that code typed for ``threading.Event`` (the watcher's
    ``run(stop)``) takes it unchanged. The flag is a plain attribute (one
    store, atomic under the interpreter lock); the pipe stays readable from
    the first :meth:`set` until :meth:`clear`, so waiters are level-triggered.
    """

    def __init__(self) -> None:
        # The base class's condition is never used: every method is below.
        super().__init__()
        self._is_set = False
        self._r, self._w = _pipe()
        self._wake_r: int | None = None  # the process's wakeup fd (main thread only)
        self._finalizer = weakref.finalize(self, _close, self._r, self._w)

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        """Set the flag and wake every waiter; safe in a signal handler."""
        self._is_set = True
        # Non-blocking: EAGAIN means the pipe is full, i.e. already readable.
        with contextlib.suppress(OSError):
            os.write(self._w, b"\0")

    def clear(self) -> None:
        # Flag first, then drain: a set() in between leaves the flag True,
        # and wait() looks at the flag before it sleeps.
        self._is_set = False
        _drain(self._r)

    def wait(self, timeout: float | None = None) -> bool:
        if self._is_set:
            return True
        fds = [self._r]
        wake = self._wake_r
        if wake is not None and threading.current_thread() is threading.main_thread():
            fds.append(wake)
        # poll, not select: no FD_SETSIZE limit in a process with many files open.
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while not self._is_set:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            # Rounded up: a 0.3 ms wait must not become a busy loop of 0 ms polls.
            ready = [fd for fd, _ in poller.poll(None if left is None else math.ceil(left * 1000))]
            if not ready:
                break
            if wake is not None and wake in ready:
                # A signal arrived (maybe at another thread): its Python
                # handler runs in this thread before the next loop test.
                _drain(wake)
            if self._r in ready and not self._is_set:
                # A byte from a set() that a clear() overtook: not a wake-up.
                _drain(self._r)
        return self._is_set

    def _at_fork_reinit(self) -> None:
        pass  # no lock to re-initialise


class Shutdown:
    """The stop flag of one process, set by SIGTERM/SIGINT or by code."""

    def __init__(self) -> None:
        #: Set for a graceful stop (a :class:`SignalSafeEvent`).
        self.event: threading.Event = SignalSafeEvent()
        #: Set by SIGHUP (re-read the config); the main loop clears it.
        self.reload: threading.Event = SignalSafeEvent()
        self.signals = 0

    def install(self) -> Shutdown:
        """Install the handlers (main thread only). A process started with
        the signals blocked (Ketter's children are, so that a SIGTERM or a
        SIGHUP sent before this point is not lost to its default action,
        which kills) gets them now, and one that came meanwhile is acted on."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGHUP, self._handle_hup)
        wake_r = _wakeup_pipe()
        for event in (self.event, self.reload):
            assert isinstance(event, SignalSafeEvent)
            event._wake_r = wake_r
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
        return self

    # The two handlers below run in the main thread between bytecodes of
    # whatever it was doing (maybe inside a lock): they set plain attributes
    # and write to a non-blocking pipe, nothing else. No logging (its handler
    # lock), no threading.Event, no allocation-heavy work.
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
