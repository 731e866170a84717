"""Fault injection for crash tests: ``KETTER_FAULT=<point>`` makes the process
SIGKILL itself when it reaches that point (no cleanup, no atexit: exactly
what kill -9 or a power cut does to the process)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Iterator

#: Points outside the engine (the engine's are in ketter.engine.context).
POINTS = frozenset({"after-commit-before-enqueue", "after-dequeue", "after-claim"})


_stopped: set[str] = set()


def fault(point: str) -> None:
    """SIGKILL at ``$KETTER_FAULT``; SIGSTOP (once per process) at
    ``$KETTER_FAULT_STOP``, to play a worker that hangs past its lease."""
    if os.environ.get("KETTER_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("KETTER_FAULT_STOP") == point and point not in _stopped:
        _stopped.add(point)
        with _store_idle():
            os.kill(os.getpid(), signal.SIGSTOP)  # stops as the call returns


@contextlib.contextmanager
def _store_idle() -> Iterator[None]:
    """Stop only between two writes of this process's other threads.

    A process frozen while one of its threads holds SQLite's write lock
    blocks every other writer of the job store (a limit of SQLite, see
    docs/guarantees.md). The crash tests want a worker frozen mid-copy, not
    that. So hold the store's in-process writer mutex (every write
    transaction of this process takes it first: none can be open or start)
    and check that the lock is free (an autocommit write of another thread
    may just hold it); the mutex is given back once the process runs again.
    """
    from ketter.store.models import database  # only in a process with a store

    db = database.obj
    mutex = getattr(db, "_writer", None)
    held = mutex.acquire(timeout=10) if mutex is not None else False
    try:
        _wait_for_write_lock(getattr(db, "database", None))
        yield
    finally:
        if held and mutex is not None:
            mutex.release()


def _wait_for_write_lock(path: str | None) -> None:
    """Take and release the job store's write lock once (up to 10 s)."""
    if not path:
        return
    con = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        for _ in range(2000):
            try:
                con.execute("BEGIN IMMEDIATE")
                con.execute("ROLLBACK")
                return
            except sqlite3.OperationalError:
                time.sleep(0.005)
    finally:
        con.close()


def delay(point: str) -> None:
    """Sleep at ``point`` when ``$KETTER_FAULT_DELAY`` is ``point=SECONDS``: a
    crash campaign widens the window in which a kill lands mid-copy."""
    spec = os.environ.get("KETTER_FAULT_DELAY")
    if spec and spec.partition("=")[0] == point:
        time.sleep(float(spec.partition("=")[2] or 0))
