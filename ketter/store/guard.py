"""Is the job store still the file we opened, and can we write it?

Two failures of the state disk used to go unnoticed or kill the node (issue
#14, findings 8 and 9):

* **The store deleted or replaced while running.** SQLite keeps writing
  into the open, unlinked file without an error, so the workers went on
  placing files and deleting sources while every record of it went into a
  file nobody will ever read again. :class:`StoreGuard` remembers the
  store's ``(st_dev, st_ino)`` when it is opened; :meth:`StoreGuard.ensure_intact`
  compares it with what is at the path right before every irreversible step
  (each placement, each source deletion: :func:`ketter.jobs.claim.ensure_claim`,
  a batch's :meth:`ketter.jobs.fence.ClaimFence.ensure` and the job
  context's ``before_irreversible``) and the service loops check
  it periodically. Once lost, it stays lost: nothing irreversible runs again
  in this process.
* **The store not writable** (state disk full, read-only, ``chattr +i``):
  the services used to exit with a raw traceback until systemd gave up.
  They now stay up, paused, and probe with a backoff until a write works
  again (:meth:`StoreGuard.write_failed`, :meth:`StoreGuard.write_ok`).

Since the store itself cannot record either problem, each service process
publishes its view in a small status file, ``<state_dir>/run/store-<pid>.json``,
that ``ketter health`` reads. The file is written once at full size when the
process starts and then only rewritten in place (``pwrite`` of as many bytes),
so updating it needs no new block on a full disk.

At start, :func:`ensure_may_create` refuses to create an empty store where
the node has run before (the marker file :data:`MARKER` written next to
every store, or an audit log), unless ``ketter db upgrade --new-store`` says
so on purpose.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from peewee import DatabaseError

from ketter.errors import KetterError, StoreLost, StoreMissing

log = logging.getLogger("ketter.store")

#: Marker left next to the job store once one has been created (not named
#: ".ketter-…": that prefix is reserved for temporaries): its
#: presence without a store means the store was lost, not never made.
MARKER = "ketter.node"
#: Folder (under the state dir) of the per-process status files.
STATUS_DIR = "run"
#: Size of a status file; always rewritten whole, in place.
STATUS_SIZE = 4096
#: Backoff of the write probes while the store is not writable: a probe
#: is one small transaction, so the cap is short, and a node resumes within
#: about ten seconds of the store's return (a database restarted, a disk
#: freed), not a minute later.
PROBE_FIRST, PROBE_MAX = 1.0, 10.0
#: Free space the state dir needs before a node paused for a full disk
#: resumes: a write that lands in the WAL's reused pages is no proof of room,
#: and resuming on it made the node flap (and the queue's WAL fill the disk
#: again at once).
RESUME_MIN_FREE = 1024 * 1024

#: SQLite's words for "this write cannot land" (as opposed to "busy").
_UNWRITABLE = (
    "database or disk is full",
    "readonly database",
    "disk i/o error",
    "unable to open database file",
)
_UNWRITABLE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EPERM, errno.EACCES, errno.EIO}


def marker_path(db_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(db_path)), MARKER)


def status_dir(db_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(db_path)), STATUS_DIR)


def is_unwritable_error(
    exc: BaseException, *, state_dir: str | None = None, store_only: bool = False
) -> bool:
    """True when ``exc`` says the job store cannot be written (disk full,
    read-only, immutable), not that it is merely busy. The cause may sit
    down the chain (a failed COMMIT, then a failed ROLLBACK).

    Only the state disk's own failures count: SQLite's and peewee's errors,
    and an :class:`OSError` on a file under ``state_dir``. A source's or a
    destination's error is the job's, never the node's: an EPERM from a
    ``chattr +i`` destination or an ENOSPC of a full share used to pause the
    whole node as "state store not writable" and treat the job as a crash
    (review of #14 findings 8 and 17). So the chain is not followed past a
    :class:`KetterError` (the engine raises ``classify_oserror(e) from e``),
    and an OSError without a file name counts only when ``store_only`` says
    the operation touched nothing but the state disk (the last audit drain).
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None or isinstance(seen, KetterError):
            return False
        if isinstance(seen, OSError):
            if seen.errno in _UNWRITABLE_ERRNOS and _on_state_disk(seen, state_dir, store_only):
                return True
        elif _pg_unavailable(seen):
            return True
        elif isinstance(seen, DatabaseError | sqlite3.DatabaseError):
            text = str(seen).lower()
            if any(word in text for word in _UNWRITABLE):
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def _pg_unavailable(exc: BaseException) -> bool:
    """A PostgreSQL job store's outage (:mod:`ketter.store.postgres.errors`);
    psycopg is only asked when this process loaded it (a PostgreSQL store)."""
    if "psycopg" not in sys.modules:
        return False
    from ketter.store.postgres.errors import is_unavailable

    return is_unavailable(exc)


def _on_state_disk(exc: OSError, state_dir: str | None, store_only: bool) -> bool:
    """Whether ``exc`` is about a file of the state disk (see above)."""
    names = [n for n in (exc.filename, exc.filename2) if n is not None]
    if not names:
        return store_only
    if state_dir is None:
        return store_only
    root = os.path.abspath(state_dir)
    for name in names:
        path = os.path.abspath(os.fsdecode(name) if isinstance(name, bytes) else str(name))
        with contextlib.suppress(ValueError):
            if os.path.commonpath([root, path]) == root:
                return True
    return False


def write_denied(path: str) -> OSError | None:
    """Why ``path`` cannot be written (EROFS, EPERM for ``chattr +i``,
    EACCES), or None. Never opens the file: closing any descriptor of the
    database in a process that has it open drops all of that process's
    POSIX locks on it, and another process may then checkpoint and truncate
    the WAL under it (SQLite's "how to corrupt" list). ``access(2)`` answers
    without a descriptor; it says EPERM for an immutable file even to root."""
    if not os.path.exists(path) or os.access(path, os.W_OK):
        return None
    with contextlib.suppress(OSError):
        if os.statvfs(os.path.dirname(os.path.abspath(path))).f_flag & os.ST_RDONLY:
            return OSError(errno.EROFS, os.strerror(errno.EROFS), path)
    code = errno.EPERM if os.geteuid() == 0 else errno.EACCES
    return OSError(code, os.strerror(code), path)


def diagnose(db_path: str, exc: BaseException | None = None) -> str:
    """``state store not writable: <errno>``: the operating system's reason
    where it can be found (SQLite's messages carry no errno)."""
    detail: str | None = None
    for path in (db_path, db_path + "-wal"):
        denied = write_denied(path)
        if denied is not None:
            detail = f"[Errno {denied.errno}] {denied.strerror}: {path}"
            break
    if detail is None:
        folder = os.path.dirname(os.path.abspath(db_path))
        with contextlib.suppress(OSError):
            vfs = os.statvfs(folder)
            if vfs.f_flag & os.ST_RDONLY:
                detail = f"[Errno {errno.EROFS}] {os.strerror(errno.EROFS)}: {folder}"
            elif vfs.f_bavail == 0 or vfs.f_favail == 0:
                detail = f"[Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}: {folder}"
    if detail is None:
        detail = str(exc) if exc is not None else "unknown reason"
    return f"state store not writable: {detail}"


# -- start: never silently a new store --------------------------------------


def evidence_of_past_runs(db_path: str, extra: Iterable[str] = ()) -> list[str]:
    """Files that show the node ran before with a store at ``db_path``."""
    found = []
    for path in (marker_path(db_path), *extra):
        with contextlib.suppress(OSError):
            if os.path.isfile(path) and (path == marker_path(db_path) or os.path.getsize(path)):
                found.append(path)
    return found


def ensure_may_create(
    db_path: str, *, evidence: Iterable[str] = (), new_store: bool = False
) -> None:
    """Raise :class:`StoreMissing` when there is no store at ``db_path`` but the
    node has run before (``evidence``: e.g. the audit log), unless ``new_store``."""
    if new_store or os.path.exists(db_path):
        return
    found = evidence_of_past_runs(db_path, evidence)
    if found:
        raise StoreMissing(
            f"no job store at {db_path}, but this node has run before "
            f"({', '.join(found)} exist): the store was deleted or its disk is "
            "not mounted. Restore it from a backup (jobs, events and the audit "
            "chain are in it) and start again; or, to start over with an empty "
            "store on purpose, run `ketter db upgrade --new-store`"
        )


def write_marker(db_path: str) -> None:
    """Leave :data:`MARKER` next to an existing store (idempotent)."""
    path = marker_path(db_path)
    if os.path.exists(path):
        return
    body = json.dumps({"store": os.path.abspath(db_path), "created_at": time.time()})
    try:
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(body + "\n")
    except FileExistsError:
        pass
    except OSError as exc:  # read-only state dir (an operator's CLI): not fatal
        log.debug("no store marker written at %s: %s", path, exc)


# -- running: the open store's identity and writability ----------------------


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class StoreGuard:
    """One process's watch over its job store (thread-safe)."""

    def __init__(
        self,
        db_path: str,
        *,
        clock: Any = time.monotonic,
        reopen: Callable[[], None] | None = None,
    ) -> None:
        self.path = os.path.abspath(db_path)
        #: Makes every thread reconnect (a store opened read-only stays so).
        self.reopen = reopen
        self.identity = _identity(self.path)
        self.clock = clock
        #: Why the store is lost (deleted/replaced); sticky for the process.
        self.lost: str | None = None
        #: Why the store cannot be written now; cleared by a working write.
        self.unwritable: str | None = None
        self.since: float | None = None
        self._delay = PROBE_FIRST
        self._next_probe = 0.0
        self._lock = threading.Lock()
        self._status_fd: int | None = None
        self._component = ""

    # -- identity ------------------------------------------------------------

    def check_identity(self) -> str | None:
        """The reason the store is lost, or None while the path still names
        the file this process opened. A stat: cheap enough for every step."""
        if self.lost is not None or self.identity is None:
            return self.lost
        now_at_path = _identity(self.path)
        if now_at_path == self.identity:
            return None
        what = "deleted" if now_at_path is None else "replaced by another file"
        with self._lock:
            if self.lost is None:
                self.lost = (
                    f"job store {self.path} was {what} while this process had it "
                    "open; every placement and source deletion is stopped. Restore "
                    "the store and restart the services (or start over on purpose "
                    "with `ketter db upgrade --new-store`)"
                )
                self.since = time.time()
                log.critical("%s", self.lost)
        self.publish()
        return self.lost

    def ensure_intact(self, what: str) -> None:
        """Raise :class:`StoreLost` (before ``what``, an irreversible step)
        unless the store is still the file this process opened."""
        reason = self.check_identity()
        if reason is not None:
            raise StoreLost(f"{what}: not done: {reason}")

    # -- writability -----------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """Why this process must not claim work now (lost or not writable)."""
        return self.lost or self.unwritable

    def is_unwritable(self, exc: BaseException) -> bool:
        """:func:`is_unwritable_error` for this store's state dir: a share's
        EACCES/EPERM/EIO out of a route's scan or the orphan sweep is that
        route's problem and must not pause every route."""
        return is_unwritable_error(exc, state_dir=os.path.dirname(self.path))

    def write_failed(self, exc: BaseException) -> bool:
        """Record a failed write; True when the store was fine until now (the
        caller alerts once per outage). Schedules the next probe."""
        reason = self.diagnose(exc)
        with self._lock:
            first = self.unwritable is None
            self.unwritable = reason
            if first:
                self.since = time.time()
                self._delay = PROBE_FIRST
            else:
                self._delay = min(self._delay * 2, PROBE_MAX)
            self._next_probe = self.clock() + self._delay
        if first:
            log.error("%s; routes paused, retrying with a backoff", reason, exc_info=exc)
        self.publish()
        return first

    def diagnose(self, exc: BaseException | None) -> str:
        """Why the store cannot be written, for the pause and the alert."""
        return diagnose(self.path, exc)

    def write_ok(self) -> bool:
        """Record a working write; True when it ends an outage."""
        with self._lock:
            if self.unwritable is None:
                return False
            self.unwritable = None
            self.since = None if self.lost is None else self.since
        log.warning("state store writable again; routes resumed")
        self.publish()
        return True

    def probe(self) -> bool:
        """May the store file be written (an immutable or read-only store)?
        SQLite would keep appending to the WAL and fail only at the next
        checkpoint or start; say it now. False (and recorded) when not."""
        if self.check_identity() is not None:
            return False  # deleted or replaced: a probe must not write a new file
        for path in (self.path, self.path + "-wal"):
            denied = write_denied(path)
            if denied is not None:
                self.write_failed(denied)
                return False
        if self.unwritable is not None:
            if self.reopen is not None:
                self.reopen()
            if not self._fresh_connection_writes():
                return False
        if self.unwritable is not None and f"[Errno {errno.ENOSPC}]" in self.unwritable:
            with contextlib.suppress(OSError):
                vfs = os.statvfs(os.path.dirname(self.path))
                if vfs.f_bavail * vfs.f_frsize < RESUME_MIN_FREE:
                    self.write_failed(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
                    return False
        return True

    def _fresh_connection_writes(self) -> bool:
        """While paused: can a *new* connection take the write lock? The
        heartbeat's old connection may still write into reused WAL pages
        while a new one (a worker thread's) fails to map its shared memory
        on a full disk; resuming on the old one alone made the node flap."""
        try:
            # mode=rw: a store deleted meanwhile must not come back as a new,
            # empty file (plain connect() creates one; #14 finding 9).
            conn = sqlite3.connect(
                f"file:{urllib.parse.quote(self.path)}?mode=rw",
                uri=True,
                timeout=5.0,
                isolation_level=None,
            )
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            if self.check_identity() is not None:
                return False  # gone under us (mode=rw: "unable to open")
            if not is_unwritable_error(exc):
                return True  # busy: another writer holds the lock, so it can be written
            self.write_failed(exc)
            return False
        return True

    def probe_due(self) -> bool:
        """While not writable: whether the backoff allows another try now."""
        return self.unwritable is None or self.clock() >= self._next_probe

    # -- the status file that `ketter health` reads --------------------------------

    def start_publishing(self, component: str) -> None:
        """Create this process's status file at full size (on a disk with
        room: the start) so that later updates never need a new block."""
        self._component = component
        if self._status_fd is not None:
            return
        folder = status_dir(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"store-{os.getpid()}.json")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            log.warning("no store status file for `ketter health`: %s", exc)
            return
        self._status_fd = fd
        self.publish()
        self._remove_stale_status(folder)

    @staticmethod
    def _remove_stale_status(folder: str) -> None:
        """Status files of processes that died without removing theirs
        (kill -9): ``health`` skips them; here they are cleaned up."""
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                if not (name.startswith("store-") and name.endswith(".json")):
                    continue
                try:
                    os.kill(int(name[6:-5]), 0)
                except (ValueError, PermissionError):
                    continue
                except ProcessLookupError:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(folder, name))

    @property
    def publishing(self) -> bool:
        return self._status_fd is not None

    def publish(self) -> None:
        fd = self._status_fd
        if fd is None:
            return
        body = json.dumps(
            {
                "pid": os.getpid(),
                "component": self._component,
                "store": self.path,
                "ino": self.identity[1] if self.identity else None,
                "dev": self.identity[0] if self.identity else None,
                "lost": self.lost,
                "unwritable": self.unwritable,
                "since": self.since,
                "updated_at": time.time(),
            },
            ensure_ascii=True,
        ).encode()
        data = body[:STATUS_SIZE].ljust(STATUS_SIZE, b" ")
        try:
            os.pwrite(fd, data, 0)
        except OSError as exc:
            log.debug("store status file not updated: %s", exc)

    def stop_publishing(self) -> None:
        fd, self._status_fd = self._status_fd, None
        if fd is None:
            return
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(status_dir(self.path), f"store-{os.getpid()}.json"))


def read_status(db_path: str) -> list[dict[str, Any]]:
    """The status files of the live service processes (for ``ketter health``);
    a file whose process is gone is left out."""
    folder = status_dir(db_path)
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    found = []
    for name in names:
        if not (name.startswith("store-") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(folder, name), "rb") as fh:
                status = json.loads(fh.read().strip() or b"{}")
            pid = int(status["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # torn or foreign: the next run of health reads it again
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        found.append(status)
    return found


def ensure_store_intact(db: Any, what: str) -> None:
    """:meth:`StoreGuard.ensure_intact` of ``db``'s guard; a no-op for a
    store opened without one (tests, the read-only CLI)."""
    guard = getattr(db, "guard", None)
    if guard is not None:
        guard.ensure_intact(what)


def guard_of(db: Any) -> StoreGuard | None:
    """The :class:`StoreGuard` of an open store (None for a store opened
    read-only or by a test without :func:`ketter.store.db.open_store`)."""
    guard = getattr(db, "guard", None)
    return guard if isinstance(guard, StoreGuard) else None
