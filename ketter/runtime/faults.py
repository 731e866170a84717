"""Fault injection for crash tests: ``KETTER_FAULT=<point>`` makes the process
SIGKILL itself when it reaches that point (no cleanup, no atexit: exactly
what kill -9 or a power cut does to the process)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ketter.store.port import JobStore

#: Points outside the engine (the engine's are in ketter.engine.context).
POINTS = frozenset({"after-commit-before-enqueue", "after-dequeue", "after-claim", "batch-fenced"})

#: Points of a job's steps (:mod:`ketter.jobs.steps`, reached through the
#: job's context): ``same_fs_move: rename`` between its steps — during the
#: hash (``mid-hash``, the engine's read), after the hash before its record,
#: after the durable record before the rename — and a move's placement
#: recorded before the source is deleted. (The rename itself passes the
#: engine's ``before-rename`` and ``after-place``.)
STEP_POINTS = frozenset(
    {
        "mid-hash",
        "after-hash-before-record",
        "after-record-before-rename",
        "after-place-before-delete",
        "mid-rollback",
    }
)


_stopped: set[str] = set()


def fault(point: str, *, store: JobStore | None = None) -> None:
    """SIGKILL at ``$KETTER_FAULT``; SIGSTOP (once per process) at
    ``$KETTER_FAULT_STOP``, to play a worker that hangs past its lease.

    A process frozen while one of its threads holds SQLite's write lock
    blocks every other writer of the job store (a limit of SQLite, see
    docs/guarantees.md); the crash tests want a worker frozen mid-copy, not
    that. So with the process's ``store`` it stops only between two writes
    of its other threads (:meth:`ketter.store.port.JobStore.hold_writes`,
    given back once the process runs again)."""
    if os.environ.get("KETTER_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("KETTER_FAULT_STOP") == point and point not in _stopped:
        _stopped.add(point)
        if store is None:
            _stop_here()
            return
        with store.hold_writes():
            _stop_here()


def _stop_here() -> None:
    """SIGSTOP the process, the calling thread first. Sent to the process
    (``os.kill``), the kernel hands the stop to the main thread, and a job
    thread calling this ran on until the main thread got a CPU (its next
    step happened in 15 of 20 runs). Sent to this thread, it is pending here
    when the call returns: this thread stops before its next instruction,
    and the group stop it starts stops the others."""
    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


def delay(point: str) -> None:
    """Sleep at ``point`` when ``$KETTER_FAULT_DELAY`` is ``point=SECONDS``: a
    crash campaign widens the window in which a kill lands mid-copy."""
    spec = os.environ.get("KETTER_FAULT_DELAY")
    if spec and spec.partition("=")[0] == point:
        time.sleep(float(spec.partition("=")[2] or 0))
