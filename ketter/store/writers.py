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

The hand-over itself no longer waits for the busy handler's next retry:
every writer of Ketter's takes an exclusive ``flock`` on
``<database>-write-lock`` before its ``BEGIN`` and gives it back after its
``COMMIT`` or ``ROLLBACK`` (:meth:`WriterTurns.take`), so it holds the file
for as long as it holds SQLite's write lock. A writer that finds the file
taken waits in the kernel, announced as above, and is woken the moment the
holder lets go; SQLite's lock is then free (only a program other than
Ketter, or a statement outside any transaction, can hold it, and the busy
handler still waits for those). The wait is bounded like the busy
handler's: after ``timeout`` seconds it fails as SQLite does (``database is
locked``). In the end-to-end benchmark with two workers processes the
hand-overs took a tenth of the time the busy handler's sleeps did
(docs/performance-watcher.md, session 14).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator

from peewee import OperationalError

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
        self.lock_path = db_path + "-write-lock"
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._waiter: _Waiter | None = None
        self._held = False
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

    def take(self, timeout: float) -> bool:
        """Take the write lock file, waiting (announced) while another
        process holds it; False if there is no such file here (a read-only
        state directory: plain busy-handler turns). Raises peewee's
        ``OperationalError`` after ``timeout`` seconds."""
        if self._lock_fd is None and not self._disabled:
            try:
                self._lock_fd = os.open(
                    self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640
                )
            except OSError as exc:
                self._disabled = True
                log.debug("no write lock file (%s): %s", self.lock_path, exc)
        fd = self._lock_fd
        if fd is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            waiter = self._waiter = self._waiter or _Waiter()
            with self.waiting():
                if not waiter.wait(fd, timeout):
                    self._lock_fd = self._waiter = None  # left to its thread, which closes it
                    raise OperationalError(
                        f"database is locked: {self.lock_path} held for {timeout:.0f} s"
                    ) from None
        self._held = True
        return True

    def give_back(self) -> None:
        """Let the write lock file go (after ``COMMIT`` or ``ROLLBACK``)."""
        if self._held and self._lock_fd is not None:
            self._held = False
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Wait:
    """One wait for the lock file, done by a :class:`_Waiter`."""

    __slots__ = ("error", "fd", "given_up", "got", "state")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.got = threading.Event()
        self.state = threading.Lock()
        self.given_up = False
        self.error: OSError | None = None

    def run(self) -> bool:
        """Block until the lock is taken; False if the waiting thread gave
        up meanwhile (the lock let go and the file closed at once)."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as exc:
            self.error = exc
            self.got.set()
            return True
        with self.state:
            if not self.given_up:
                self.got.set()
                return True
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        return False


class _Waiter:
    """A thread that blocks on the lock file for the writer waiting for it:
    the kernel's wait cannot time out, the writer's wait for this thread
    can. One per process's store, started at the first wait; a wait given
    up leaves the thread to it, and the next wait gets a new one."""

    def __init__(self) -> None:
        self._todo: queue.SimpleQueue[_Wait] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="ketter-write-lock", daemon=True).start()

    def _run(self) -> None:
        while self._todo.get().run():
            pass

    def wait(self, fd: int, timeout: float) -> bool:
        """Take the exclusive ``flock`` of ``fd`` within ``timeout`` seconds;
        False if it did not (``fd`` then belongs to this waiter's thread,
        which closes it, and this waiter must not be used again)."""
        job = _Wait(fd)
        self._todo.put(job)
        if not job.got.wait(timeout):
            with job.state:
                job.given_up = not job.got.is_set()
            if job.given_up:
                return False
        if job.error is not None:
            raise job.error
        return True
