"""Fault injection for crash tests: ``KETTER_FAULT=<point>`` makes the process
SIGKILL itself when it reaches that point (no cleanup, no atexit: exactly
what kill -9 or a power cut does to the process)."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

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
        _wait_until_store_idle()
        os.kill(os.getpid(), signal.SIGSTOP)


def _wait_until_store_idle() -> None:
    """Stop only between two writes of this process's other threads.

    A process frozen while one of its threads holds SQLite's write lock
    blocks every other writer of the job store (a limit of SQLite, see
    docs/guarantees.md). The crash tests want a worker frozen mid-copy, not
    that: take and release the write lock once, then stop at once.
    """
    from ketter.store.models import database  # only in a process with a store

    path = getattr(database.obj, "database", None)
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
