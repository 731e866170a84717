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
import weakref
from collections.abc import Iterator

from peewee import OperationalError

from ketter.runtime.signals import Shutdown

log = logging.getLogger(__name__)

#: Longest a writer steps back for another process's waiting writer.
MAX_YIELD = 0.25
#: Pause between two looks while stepping back.
YIELD_STEP = 0.0005
#: Tries to announce a waiting writer while another one looks.
ANNOUNCE_TRIES = 20


#: Every open :class:`WriterTurns`, for :func:`_forget_in_child`.
_OPEN: weakref.WeakSet[WriterTurns] = weakref.WeakSet()


def _forget_in_child() -> None:
    """In a forked child: the parent's files (their locks are the parent's)
    and waiting thread (not copied) are not this process's."""
    for turns in list(_OPEN):
        for fd in (turns._fd, turns._lock_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)  # this copy only: the parent keeps its locks
        turns._fd = turns._lock_fd = turns._waiter = None
        turns._held = False


os.register_at_fork(after_in_child=_forget_in_child)


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
        _OPEN.add(self)

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
        """Announce this process's writer as waiting for the lock. Never
        waits itself: a process frozen while it looks (step_back's brief
        exclusive lock) costs this writer its announcement, not its turn."""
        fd = self._file()
        if fd is None:
            yield
            return
        announced = False
        for _ in range(ANNOUNCE_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                announced = True
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                # Another writer looks (step_back's brief exclusive lock).
                time.sleep(YIELD_STEP)
        try:
            yield
        finally:
            if announced:
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
        waiter = self._waiter
        if waiter is None or not waiter.busy():
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._held = True
                return True
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
        if waiter is None:
            waiter = self._waiter = _Waiter(fd)
        with self.waiting():
            got = waiter.wait(timeout)
        if not got:
            raise OperationalError(f"database is locked: {self.lock_path} held for {timeout:.0f} s")
        self._held = True
        return True

    def give_back(self) -> None:
        """Let the write lock file go (after ``COMMIT`` or ``ROLLBACK``)."""
        if self._held and self._lock_fd is not None:
            self._held = False
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._waiter is not None and self._waiter.busy():
            return  # a wait given up is still in the kernel on the file: keep it
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
            self._waiter = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Wait:
    """One wait for the lock file, done by a :class:`_Waiter`'s thread."""

    __slots__ = ("done", "error", "given_up", "state")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.state = threading.Lock()
        self.given_up = False
        self.error: OSError | None = None

    def run(self, fd: int) -> None:
        """Block until the lock is taken; if the writer gave up meanwhile,
        let it go at once."""
        error: OSError | None = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            error = exc
        with self.state:
            self.error = error
            if self.given_up and error is None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self.done.set()

    def settle(self) -> bool:
        """After the writer's wait: True if it now holds the lock; False if
        not, and then, if the thread is still waiting, it lets the lock go
        as soon as it gets it."""
        with self.state:
            if not self.done.is_set():
                self.given_up = True
                return False
            return not self.given_up and self.error is None

    def reclaim(self) -> bool:
        """A new writer takes over this wait given up (still in the kernel):
        True if it did, False if the wait is over."""
        with self.state:
            if self.done.is_set():
                return False
            self.given_up = False
            return True


class _Waiter:
    """A thread that blocks on the lock file for the writer waiting for it:
    the kernel's wait cannot time out, the writer's wait for this thread
    can. One per store and process (one thread, one file), started at the
    first wait, without the stop signals (they go to the main thread). A
    wait given up stays in the kernel; the next writer takes it over rather
    than start another, so a holder frozen for days costs nothing more."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._todo: queue.SimpleQueue[_Wait] = queue.SimpleQueue()
        self._pending: _Wait | None = None
        with Shutdown.spawn_threads_without_signals():
            threading.Thread(target=self._run, name="ketter-write-lock", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._todo.get().run(self.fd)

    def busy(self) -> bool:
        """A wait given up is still in the kernel on the file: the file
        must not be locked, unlocked or closed by anyone else."""
        return self._pending is not None and not self._pending.done.is_set()

    def wait(self, timeout: float) -> bool:
        """Take the exclusive ``flock`` of the file within ``timeout``
        seconds; False if not (the wait goes on, given up: see
        :meth:`_Wait.settle`). An exception meanwhile (a signal handler's)
        gives the wait up too, or lets the lock go if it came just then."""
        job = self._pending
        if job is None or not job.reclaim():
            job = self._pending = _Wait()
            self._todo.put(job)
        try:
            job.done.wait(timeout)
        except BaseException:
            if job.settle():
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            raise
        if job.settle():
            return True
        if job.error is not None:
            raise job.error
        return False
