"""Opening the job store and applying its migrations.

Durability rules (docs/guarantees.md):

* The database runs in WAL mode with ``synchronous=NORMAL``: a commit survives
  the death of the *process* (kill -9) because it is in the WAL file, but the
  last commits may be lost on *power loss*. That is fine for ordinary steps:
  redoing them is idempotent.
* Commits that record a placement, and those that precede an irreversible
  step (deleting a source, ``completed``), go through :func:`durable`, which
  fsyncs the WAL after the commit (outside the write lock) before it
  returns: the guarantee of ``synchronous=FULL``.
* ``lock_type='IMMEDIATE'``: every transaction takes the write lock at BEGIN,
  so a read-then-write transaction never fails half-way with "database is
  locked" when the watcher, the workers and the CLI write at once; they queue
  on the busy timeout instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.resources
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from peewee import OperationalError, SqliteDatabase
from playhouse.migrations import Runner

from ketter.runtime.flush import FlushGroup
from ketter.store.guard import StoreGuard, ensure_may_create, write_marker
from ketter.store.models import MODELS, database
from ketter.store.sql.turn import READ, WriteBeforeTurn
from ketter.store.writers import WriterTurns

#: Seconds a writer waits for the SQLite write lock before giving up.
BUSY_TIMEOUT = 60.0

#: The WAL file is cut back to this size when a checkpoint has copied all of
#: it into the database (SQLite reuses it from the start, but never shrinks it
#: otherwise: one burst, a clone or a long reader, and it stays big).
WAL_SIZE_LIMIT = 64 << 20

PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": 1,  # NORMAL; see module docstring and durable()
    "foreign_keys": 1,
    "journal_size_limit": WAL_SIZE_LIMIT,
}


class StoreDatabase(SqliteDatabase):
    """``SqliteDatabase`` whose transactions in one process queue on a mutex.

    SQLite's busy handler does not wake a waiting writer when the lock is
    released: it sleeps and retries (1, 2, 5, 10, 15, 20, 25… ms). With two
    or more worker threads committing several times per transfer, those
    sleeps were most of the time a small file took. Threads of one process
    now wait for each other on a ``threading.Lock`` taken at ``BEGIN`` and
    released at ``COMMIT``/``ROLLBACK``, and wake up at once; only writers in
    other processes (the watcher, the CLI) still meet the busy handler.
    Statements outside a transaction (autocommit) are not affected.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writer = threading.Lock()
        self._holds = threading.local()
        #: Group commit of the WAL flushes (see :func:`sync_wal`).
        self.wal_flush = FlushGroup()
        #: Fair turns at the write lock with other processes.
        self.turns = WriterTurns(self.database)
        #: Identity and writability of the store file (set by open_store).
        self.guard: StoreGuard | None = None
        #: Bumped by :meth:`reopen_connections`; each thread compares at BEGIN.
        self._generation = 0

    def reopen_connections(self) -> None:
        """Have every thread open a new connection at its next transaction.

        SQLite opens a store it may not write (``chattr +i``, a read-only
        mount) read-only and keeps it so: once the store is writable again,
        only a new connection can write (issue #14 finding 8)."""
        self._generation += 1

    def _connect(self) -> sqlite3.Connection:
        if self.guard is not None and not os.path.exists(self.database):
            # SQLite would create an empty store at the path of a deleted one
            # (a new thread's first connection), hiding the loss from the next
            # start's check (issue #14 finding 9).
            raise OperationalError(f"job store {self.database} is missing")
        return super()._connect()  # type: ignore[misc]  # peewee is untyped here

    def close(self) -> bool:
        # Not while another thread is inside a transaction (it uses the file).
        if self._writer.acquire(blocking=False):
            try:
                self.turns.close()
            finally:
                self._writer.release()
        return bool(super().close())

    def begin(self, lock_type: str | None = None) -> None:
        self._writer.acquire()
        self._holds.lock = True
        try:
            if getattr(self._holds, "generation", 0) != self._generation:
                self._holds.generation = self._generation
                if not self.is_closed():
                    SqliteDatabase.close(self)  # this thread's; reconnects below
            self._begin_in_turn(lock_type)
        except BaseException:
            self._release()
            raise

    def _begin_in_turn(self, lock_type: str | None) -> None:
        """``BEGIN``, taking turns with the other processes' writers
        (:mod:`ketter.store.writers`): step back while one waits, then take
        the write lock file (waiting for it announced as a waiter) or,
        where there is none, try the lock and wait for it announced."""
        self.turns.step_back()
        if self.turns.take(BUSY_TIMEOUT):
            super().begin(lock_type)  # free but for others than Ketter's writers
            return
        conn = self.connection()
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            super().begin(lock_type)
            return
        except OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        with self.turns.waiting():
            super().begin(lock_type)

    def commit(self) -> None:
        # Released even when COMMIT fails (peewee then rolls back): the mutex
        # only spares the busy handler's sleeps, SQLite's lock stays the truth.
        try:
            super().commit()
            # Numbered after the frames are in the WAL file: a flush that
            # starts later covers this commit.
            self._holds.ticket = self.wal_flush.ticket()
        finally:
            self._release()
        # Committed: the transaction's audit events go to their subscribers
        # (ketter.events), outside the writer mutex.
        pending, self._holds.events = getattr(self._holds, "events", None), None
        if pending:
            from ketter.events import publish_committed

            publish_committed(pending)

    def refuse_writes(self, refuse: bool) -> bool:
        """While set, this thread's statements may only read (a lazy shared
        commit's work before its transaction:
        :meth:`ketter.store.sql.core.SqlCore._whole`); another one raises
        :class:`~ketter.store.sql.turn.WriteBeforeTurn`. Returns whether one
        was refused since it was set (even if its caller caught the error:
        that commit must not go on as if the write were in it)."""
        refused = bool(getattr(self._holds, "refused", False))
        self._holds.refuse_writes, self._holds.refused = refuse, False
        return refused

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        if not getattr(self._holds, "refuse_writes", False):
            return super().execute_sql(sql, params)
        if not READ.match(sql):
            self._holds.refused = True
            raise WriteBeforeTurn(f"a write before the write turn was taken: {sql[:60]}")
        self._holds.reading = True
        try:
            return super().execute_sql(sql, params)
        finally:
            self._holds.reading = False

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        if getattr(self._holds, "refuse_writes", False) and not getattr(
            self._holds, "reading", False
        ):
            # A raw cursor (executemany) could write: refused like a write
            # statement (execute_sql lets its reads through).
            self._holds.refused = True
            raise WriteBeforeTurn("a raw cursor before the write turn was taken")
        return super().cursor(*args, **kwargs)

    def defer_event(self, bus: Any, event: Any) -> None:
        """Publish ``event`` on ``bus`` when this thread's transaction commits
        (:mod:`ketter.events`); dropped if it rolls back."""
        pending = getattr(self._holds, "events", None)
        if pending is None:
            pending = self._holds.events = []
        pending.append((bus, event))

    def deferred_count(self) -> int:
        """How many events this thread's transaction will publish so far."""
        return len(getattr(self._holds, "events", None) or ())

    def drop_deferred(self, keep: int) -> None:
        """Forget the events deferred after the first ``keep`` (a savepoint
        that rolled back: never published)."""
        events = getattr(self._holds, "events", None)
        if events:
            del events[keep:]

    def last_commit_ticket(self) -> int | None:
        """The flush ticket of this thread's last commit."""
        return getattr(self._holds, "ticket", None)

    def rollback(self) -> None:
        self._holds.events = None  # an event rolled back is never published
        try:
            conn = self.connection()
            if isinstance(conn, sqlite3.Connection) and not conn.in_transaction:
                # SQLite rolled back by itself (SQLITE_FULL or an I/O error in
                # COMMIT): a ROLLBACK now would only hide that error behind
                # "cannot rollback - no transaction is active".
                return
            super().rollback()
        finally:
            self._release()

    def _release(self) -> None:
        if getattr(self._holds, "lock", False):
            self._holds.lock = False
            self.turns.give_back()
            self._writer.release()


def connect(path: str | os.PathLike[str]) -> SqliteDatabase:
    """A peewee database for the job store at ``path`` (not yet migrated)."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return StoreDatabase(path, pragmas=PRAGMAS, timeout=BUSY_TIMEOUT, lock_type="IMMEDIATE")


def open_store(
    path: str | os.PathLike[str],
    *,
    migrate: bool = True,
    new_store: bool = False,
    evidence: Iterable[str] = (),
) -> SqliteDatabase:
    """Open the job store, apply pending migrations, and bind the models to it.

    Refuses (:class:`ketter.errors.StoreMissing`) to create a store where the
    node has run before (the marker next to every store, or ``evidence`` such
    as the audit log) unless ``new_store``; see :mod:`ketter.store.guard`.
    """
    path = os.fspath(path)
    ensure_may_create(path, evidence=evidence, new_store=new_store)
    db = connect(path)
    if migrate:
        upgrade(db)
    else:
        db.connect(reuse_if_open=True)  # the file exists from here on
    write_marker(path)
    assert isinstance(db, StoreDatabase)
    db.guard = StoreGuard(path, reopen=db.reopen_connections)
    database.initialize(db)
    return db


def open_readonly(path: str | os.PathLike[str]) -> SqliteDatabase:
    """Open the job store for reading only (status, history, health).

    No migration and no write: usable by an operator account that may read
    the files but not write the state directory.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no job store at {path}; run `ketter db upgrade` first")
    uri = f"file:{path}?mode=ro"
    if not os.path.exists(path + "-wal") and not os.access(os.path.dirname(path) or ".", os.W_OK):
        # Cleanly stopped (no WAL) and we may not create the -shm file: SQLite
        # cannot open a WAL database read-only then, unless told that nothing
        # writes it. A writer that starts meanwhile is not seen by this read.
        uri += "&immutable=1"
    db = ReadOnlyDatabase(uri, uri=True, timeout=BUSY_TIMEOUT)
    database.initialize(db)
    return db


class ReadOnlyDatabase(SqliteDatabase):
    """The job store opened by :func:`open_readonly`: SQLite refuses its
    writes, and a store's shared commit on it says so
    (:class:`ketter.store.sql.core.ReadOnlyStore`)."""

    read_only = True


def schema_behind(db: SqliteDatabase) -> list[str]:
    """``table.column`` names the models have and the store lacks: a store
    older than this Ketter (``ketter db upgrade`` not run yet). Read-only,
    so a reader (``ketter audit verify``) can say so instead of failing on
    the first query with ``no such column``."""
    missing: list[str] = []
    for model in MODELS:
        table = model._meta.table_name
        have = {c.name for c in db.get_columns(table)}
        missing += [
            f"{table}.{f.column_name}"
            for f in model._meta.sorted_fields
            if f.column_name not in have
        ]
    return missing


@contextlib.contextmanager
def migration_lock(db_path: str) -> Iterator[None]:
    """An exclusive lock next to the database so that two processes starting
    together do not both apply the same migration."""
    lock_path = db_path + ".migrate.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


#: The package of the numbered migrations (shipped in the wheel).
MIGRATIONS = "ketter.store.migrations"


def upgrade(db: SqliteDatabase) -> list[str]:
    """Apply every pending migration under :func:`migration_lock`; returns the
    names applied (empty when the schema is current)."""
    with (
        migration_lock(db.database),
        importlib.resources.as_file(importlib.resources.files(MIGRATIONS)) as directory,
    ):
        runner = Runner(db, directory=str(directory))
        return list(runner.up())


def pending_migrations(db: SqliteDatabase) -> list[str]:
    """Names of the migrations not applied yet."""
    with importlib.resources.as_file(importlib.resources.files(MIGRATIONS)) as directory:
        runner = Runner(db, directory=str(directory))
        return [m.name for m in runner.status() if m.path is not None and not m.applied]


def all_migrations() -> list[str]:
    """Names of every migration Ketter ships (what a new store gets)."""
    return pending_migrations(SqliteDatabase(":memory:"))


@contextlib.contextmanager
def durable(db: SqliteDatabase) -> Iterator[None]:
    """A transaction that is on the disk when the ``with`` block is left.

    Use it for the commit that records a placement and for any commit that
    precedes an irreversible step (deleting a source, ``completed``): power
    loss right after it must not forget that the file is in place.

    The commit itself runs with ``synchronous=NORMAL`` (appended to the WAL,
    not flushed), then the WAL file is fsynced *after* the write lock is
    released: the guarantee of ``synchronous=FULL`` (which fsyncs the WAL
    inside COMMIT, holding the lock), without holding up other writers for
    the flush. Concurrent durable commits share one flush (group commit,
    :class:`FlushGroup`): a thread whose commit an fsync that started after
    it already covers does not fsync again. If a
    checkpoint copied our frames into the database file before our fsync,
    SQLite synced the WAL before and the database file after that
    checkpoint (it does so in WAL mode at NORMAL), so the commit is on the
    disk either way.
    """
    if db.in_transaction():
        raise RuntimeError("durable() must open its own transaction, not nest in one")
    with db.atomic():
        yield
    sync_wal(db)


def sync_wal(db: SqliteDatabase) -> None:
    """fsync the job store's WAL (see :func:`durable`); a full checkpoint
    when there is none (not in WAL mode). On a :class:`StoreDatabase`, the
    flush is shared with the other threads' (:class:`FlushGroup`)."""
    if not isinstance(db, StoreDatabase) or (ticket := db.last_commit_ticket()) is None:
        _fsync_wal(db)
    else:
        db.wal_flush.flush(ticket, lambda: _fsync_wal(db))


def _fsync_wal(db: SqliteDatabase) -> None:
    try:
        fd = os.open(db.database + "-wal", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        db.execute_sql("PRAGMA wal_checkpoint(FULL)")
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
