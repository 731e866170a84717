"""Fair turns at the job store's write lock between processes.

Within one process, writers queue on a mutex and hand the lock on at once
(:class:`ketter.store.db.StoreDatabase`). Another process meets SQLite's
busy handler instead, which sleeps and retries (1, 2, 5 … 100 ms) and is
never woken: with several worker threads handing the lock from one to the
next, a retry almost never lands in a gap, and the watcher waited seconds
to insert the jobs it had found (detection latency p99 up to 6.8 s in the
end-to-end benchmark once the workers committed batches of jobs at once).

So a writer that finds the lock taken says so: it holds a shared ``flock``
on ``<database>-writers`` while it waits in the busy handler. Before its
``BEGIN``, every writer looks (an exclusive, non-blocking ``flock`` on the
same file): while another process is waiting, it steps back for up to
:data:`MAX_YIELD` seconds, so the lock falls free at the end of the current
transaction and the waiting process gets it on its next retry. Without
contention this costs two ``flock`` calls per transaction; the file holds
no data. Locks are released by the kernel when a process dies, so a crash
leaves nothing behind; a process frozen while waiting (SIGSTOP) slows the
others by at most ``MAX_YIELD`` per transaction, it does not stop them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

#: Longest a writer steps back for another process's waiting writer.
MAX_YIELD = 0.25
#: Pause between two looks while stepping back.
YIELD_STEP = 0.0005


class WriterTurns:
    """The ``<database>-writers`` file of one process (one per database
    object; only the thread holding the process's writer mutex uses it)."""

    def __init__(self, db_path: str) -> None:
        self.path = db_path + "-writers"
        self._fd: int | None = None
        self._disabled = False

    def _file(self) -> int | None:
        if self._fd is None and not self._disabled:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
            except OSError as exc:
                # A read-only state directory, say: plain busy-handler turns.
                self._disabled = True
                log.debug("no writer turns (%s): %s", self.path, exc)
        return self._fd

    def step_back(self) -> bool:
        """Wait (at most ``MAX_YIELD``) while a writer of another process
        is waiting; True if one was."""
        fd = self._file()
        if fd is None:
            return False
        deadline = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                now = time.monotonic()
                deadline = deadline or now + MAX_YIELD
                if now >= deadline:
                    return True
                time.sleep(YIELD_STEP)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return deadline > 0

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Announce this process's writer as waiting for the lock."""
        fd = self._file()
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
