"""Opening the job store on PostgreSQL and applying its migrations (issue #18).

peewee's ``PostgresqlDatabase`` speaks psycopg 3 (peewee 4 picks it when
psycopg2 is absent; ``prefer_psycopg3`` makes sure), so the models, the
numbered migrations of :mod:`ketter.store.migrations` (each with its
PostgreSQL branch where SQLite's SQL differs) and the raw SQL of the
primitives run on one connection per thread, as on SQLite.

Durability and isolation:

* Durable where SQLite's are, ordinary elsewhere, as on SQLite: the
  connections commit with ``synchronous_commit=off`` (a ``COMMIT`` returns
  once the server has it, before its WAL flush: a killed node loses
  nothing, a crash of the server or its machine may lose the last ordinary
  commits, as power loss does on SQLite, and redoing them is safe);
  :meth:`PgStoreDatabase.flush` (the store's ``sync``) commits a
  transaction that waits for the flush of everything committed before it,
  and a durable transaction (:func:`ketter.store.db.durable`'s role)
  commits and then flushes so, in the same message to the server: as on
  SQLite, the WAL is flushed after the write turn is let go, so that no
  other writer waits for the disk. The WAL is one sequence: a flush covers
  every earlier commit, of every connection and node.
* ``READ COMMITTED`` (the default): every transition is a compare-and-set
  ``UPDATE … WHERE id AND state AND claim``, which PostgreSQL re-checks on
  the newest row version after waiting for a concurrent writer, so exactly
  one of two racing writers matches; the claims' candidate reads take row
  locks with ``FOR UPDATE SKIP LOCKED``; the audit chain's appends are
  serialised by a transaction-scoped advisory lock (:data:`CHAIN_LOCK`),
  also taken before a read whose write must not interleave with another
  node's (a route's status, a route's running count for ``max_parallel``):
  SQLite's write lock gives those for free.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import peewee
from peewee import PostgresqlDatabase
from playhouse.migrations import Runner

from ketter.store.models import database
from ketter.store.postgres.adapter import Psycopg3
from ketter.store.postgres.errors import FlushFailed
from ketter.store.sql.turn import READ, WriteBeforeTurn

#: Advisory-lock keys of the job store (one 64-bit namespace per database).
#: The audit chain's appends, and the read-then-write steps that must not
#: interleave with another node's (a route's pause, a max_parallel count):
#: one lock, so no two of them can wait for each other in opposite order.
CHAIN_LOCK = 0x6B657474_00000001  # "kett"
MIGRATION_LOCK = 0x6B657474_00000002  # "kett" · ``ketter db upgrade``

#: Every write transaction's start: the store's write turn taken first,
#: before any row lock (:mod:`ketter.store.postgres.core`).
#: The transaction's clock (``now()``, its start) comes back with it.
#: The chain's head comes back too, read by a statement of its own once the
#: turn is taken (READ COMMITTED: its snapshot is taken after the lock's
#: wait, so it sees the last holder's appends), for the transaction's first
#: append (:meth:`ketter.store.sql.core.SqlCore._chain_head`).
_HEAD = "SELECT id, hash FROM events WHERE id = (SELECT MAX(id) FROM events)"
_BEGIN_WRITE = f"BEGIN; SELECT pg_advisory_xact_lock({CHAIN_LOCK}), {{now}}{{head}}"
#: A transaction that writes one WAL record (a logical message nobody
#: decodes; an empty transaction commits without waiting), committed with
#: ``synchronous_commit=on``: it returns once the WAL is flushed up to it.
#: Any role may run it.
_FLUSH = (
    "BEGIN; SET LOCAL synchronous_commit = on; "
    "SELECT pg_logical_emit_message(true, 'ketter', 'flush'); COMMIT"
)
#: A durable transaction's end: its ``COMMIT`` (which lets the write turn
#: go at once) and the flush, in one round trip.
_COMMIT_THEN_FLUSH = f"COMMIT; {_FLUSH}"

#: How an ordinary commit (neither durable nor followed by a flush) waits:
#: not for the WAL flush (see the module's docstring).
ORDINARY_COMMIT = "off"

#: libpq's parameters on every connection Ketter opens to the database
#: (the job store's, the queue's): a server whose host vanished (power
#: lost, network cut: no FIN, no RST) is noticed, not waited for. Without
#: them a statement sent to it waited for TCP's retransmissions (~15 min)
#: and one waiting for its answer for the kernel's keepalive (2 h): every
#: worker thread and the watcher hung, the routes never paused. A statement
#: whose data the server's host has not acknowledged for
#: ``tcp_user_timeout`` ms fails; an idle connection, or one waiting for a
#: long statement's answer, fails once TCP's probes (from ``keepalives_idle``
#: s on, every ``keepalives_interval`` s) have gone unanswered for as long
#: (Linux ends it at ``tcp_user_timeout`` when it is set; a live server's
#: kernel answers the probes however long the statement runs). Both are
#: about 30 s. Either way the store's guard pauses the routes, as for a
#: database that is down.
LIVENESS: dict[str, int] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 4,
    "tcp_user_timeout": 30_000,
}


def liveness(dsn: str) -> dict[str, Any]:
    """:data:`LIVENESS` but for what ``dsn`` sets itself (an operator's
    longer ``connect_timeout`` for a slow link wins: psycopg lets keyword
    arguments override the DSN's)."""
    import psycopg

    try:
        given = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        given = {}  # a malformed DSN fails where it is used, with its own message
    return {name: value for name, value in LIVENESS.items() if name not in given}


#: The database's clock as Unix seconds, the clock of every lease on
#: PostgreSQL (several nodes, no node's clock trusted): ``now()``, the start
#: of the transaction, so every comparison in one claim sees one instant.
#: :meth:`PgStoreDatabase.transaction_head` when no head was read.
UNREAD = object()

DB_NOW = "EXTRACT(EPOCH FROM now())::double precision"

#: The package of the numbered migrations (shared with SQLite).
MIGRATIONS = "ketter.store.migrations"


class WriteGate:
    """The process's open transactions, and a hold that waits for them to
    end and keeps new ones from starting (:meth:`hold`): a process frozen
    inside a transaction would keep its row locks and the chain's lock from
    every node (the crash tests freeze a worker between two writes)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = 0
        self._held = False
        self._mine = threading.local()

    def enter(self) -> None:
        with self._cond:
            while self._held:
                self._cond.wait()
            self._open += 1
        self._mine.open = True

    def leave(self) -> None:
        if not getattr(self._mine, "open", False):
            return
        self._mine.open = False
        with self._cond:
            self._open -= 1
            self._cond.notify_all()

    @contextlib.contextmanager
    def hold(self, timeout: float = 10.0) -> Iterator[None]:
        """No transaction of another thread open inside the block (waits up
        to ``timeout`` for the open ones to end)."""
        mine = 1 if getattr(self._mine, "open", False) else 0
        with self._cond:
            while self._held:
                self._cond.wait()
            self._held = True
            self._cond.wait_for(lambda: self._open <= mine, timeout)
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()


class PgStoreDatabase(PostgresqlDatabase):
    """``PostgresqlDatabase`` that publishes a transaction's audit events
    once it commits (as :class:`ketter.store.db.StoreDatabase` does), its
    transactions counted by a :class:`WriteGate`. Its adapter imports
    psycopg itself (:mod:`ketter.store.driver`): peewee picks the psycopg 2
    one when its own import found no psycopg 3."""

    psycopg2_adapter = Psycopg3
    psycopg3_adapter = Psycopg3

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending = threading.local()
        self._next = threading.local()
        self.gate = WriteGate()
        #: The process's watch over the store (:class:`.guard.PgStoreGuard`),
        #: set by :func:`open_store` for a process that writes.
        self.guard: Any = None
        #: Every transaction read-only (:func:`connect`'s ``read_only``).
        self.read_only = False

    def _forget_broken(self) -> None:
        """Forget this thread's connection if the server dropped it (a
        restart, an outage, an administrator's ``pg_terminate_backend``),
        outside a transaction, so that the next statement connects again
        instead of failing for the rest of the process's life. Inside a
        transaction the broken one stays: the statement fails, the
        transaction rolls back (nothing of it was committed) and the next
        one reconnects."""
        state = self._state  # type: ignore[attr-defined]  # peewee's, untyped
        conn = None if state.closed else state.conn
        broken = conn is not None and (conn.closed or getattr(conn, "broken", False))
        if broken and not state.transactions:
            state.reset()

    def connection(self) -> Any:
        self._forget_broken()
        return super().connection()

    def cursor(self, named_cursor: Any = None) -> Any:
        if getattr(self._next, "refuse_writes", False) and not getattr(
            self._next, "reading", False
        ):
            # A raw cursor (executemany, a pipeline) could write: refused
            # like a write statement (execute_sql lets its reads through).
            self._next.refused = True
            raise WriteBeforeTurn("a raw cursor before the write turn was taken")
        self._forget_broken()
        return super().cursor(named_cursor)

    def probe(self, *, timeout: int) -> None:
        """Open a new connection and run a write transaction on it (a server
        that is down, starting, or a read-only standby raises psycopg's
        error). Each thread's own broken connection is forgotten by its
        next :meth:`connection`."""
        import psycopg

        params = {**self.connect_params, "connect_timeout": timeout}
        if "://" in self.database:
            params["conninfo"] = self.database
        else:
            params["dbname"] = self.database
        with psycopg.connect(**params) as conn, conn.transaction(force_rollback=True):
            conn.execute("SELECT pg_current_xact_id()")

    def begin(self, *args: Any, **kwargs: Any) -> None:
        self.gate.enter()
        self._next.clock = None
        self._next.head = UNREAD
        head, self._next.want_head = getattr(self._next, "want_head", False), False
        self._next.flush_at_commit = False
        try:
            durable, self._next.durable = getattr(self._next, "durable", False), False
            if self.read_only or args or kwargs:
                super().begin(*args, **kwargs)
            else:
                # The write turn with the BEGIN, in one round trip (no
                # parameters: psycopg sends the statements in one message).
                with peewee.__exception_wrapper__:  # type: ignore[attr-defined]
                    cursor = self.cursor()
                    # This node's clock as the BEGIN leaves: now() is the
                    # transaction's start, before any wait for the turn.
                    self._next.wall = time.time()
                    cursor.execute(
                        _BEGIN_WRITE.format(now=DB_NOW, head=f"; {_HEAD}" if head else "")
                    )
                    self._next.flush_at_commit = durable
                    while cursor.description is None and cursor.nextset():
                        pass  # to the write turn's SELECT
                    self._next.clock = float(cursor.fetchone()[1])
                    if head:
                        cursor.nextset()  # the head's
                        last = cursor.fetchone()
                        self._next.head = (int(last[0]), str(last[1])) if last else None
        except BaseException:
            self._end_half_begun()
            self.gate.leave()
            raise

    def _end_half_begun(self) -> None:
        """After a failed one-message ``BEGIN …`` (a lock or statement
        timeout, a cancel): the server may hold an open or aborted
        transaction that peewee never saw begin; roll it back, or every
        later statement of this thread's connection fails ("current
        transaction is aborted")."""
        import psycopg

        state = self._state  # type: ignore[attr-defined]  # peewee's, untyped
        conn = None if state.closed else state.conn
        if conn is None or conn.closed or getattr(conn, "broken", False):
            return
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")

    def transaction_clock(self) -> float | None:
        """``now()`` of this thread's open write transaction (read with its
        ``BEGIN``), or ``None``."""
        if not self.in_transaction():
            return None
        clock: float | None = getattr(self._next, "clock", None)
        return clock

    def transaction_clock_offset(self) -> float | None:
        """The database's clock less this node's, as this thread's open write
        transaction began (its ``now()`` and this node's clock as the
        ``BEGIN`` was sent), or ``None``."""
        clock = self.transaction_clock()
        wall: float | None = getattr(self._next, "wall", None)
        return None if clock is None or wall is None else clock - wall

    def transaction_head(self) -> object:
        """``(seq, hash)`` of the chain's last event as this thread's open
        write transaction found it once it held the write turn (``None``:
        the chain is empty), or :data:`UNREAD`."""
        if not self.in_transaction():
            return UNREAD
        return getattr(self._next, "head", UNREAD)

    def refuse_writes(self, refuse: bool) -> bool:
        """While set, this thread's statements may only read (a lazy shared
        commit's work before its transaction: :meth:`ketter.store.postgres.core.PgCore._whole`);
        another one raises :class:`WriteBeforeTurn`. Returns whether one
        was refused since it was set (even if its caller caught the error)."""
        refused = bool(getattr(self._next, "refused", False))
        self._next.refuse_writes, self._next.refused = refuse, False
        return refused

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        if not getattr(self._next, "refuse_writes", False):
            return super().execute_sql(sql, params)
        if not READ.match(sql):
            self._next.refused = True
            raise WriteBeforeTurn(f"a write before the write turn was taken: {sql[:60]}")
        self._next.reading = True
        try:
            return super().execute_sql(sql, params)
        finally:
            self._next.reading = False

    def begin_with_head(self) -> None:
        """This thread's next write transaction reads the chain's head with
        its ``BEGIN`` (:meth:`transaction_head`): a store's, on a migrated
        database."""
        self._next.want_head = True

    def begin_durable(self) -> None:
        """This thread's next transaction is durable: its commit returns
        once the WAL is flushed up to it (flushed after the ``COMMIT``, in
        the same round trip: :data:`_COMMIT_THEN_FLUSH`)."""
        self._next.durable = True

    def flush(self) -> None:
        """Every commit so far is on the server's disk when this returns (one
        round trip; concurrent flushes share the server's WAL flush)."""
        if self.in_transaction():
            raise RuntimeError("flush() must run between transactions, not in one")
        try:
            with peewee.__exception_wrapper__:  # type: ignore[attr-defined]
                self.cursor().execute(_FLUSH)
        except BaseException:
            self._end_half_begun()
            raise

    def defer_event(self, bus: Any, event: Any) -> None:
        """Publish ``event`` on ``bus`` when this thread's transaction commits
        (:mod:`ketter.events`); dropped if it rolls back."""
        pending = getattr(self._pending, "events", None)
        if pending is None:
            pending = self._pending.events = []
        pending.append((bus, event))

    def deferred_count(self) -> int:
        """How many events this thread's transaction will publish so far."""
        return len(getattr(self._pending, "events", None) or ())

    def drop_deferred(self, keep: int) -> None:
        """Forget the events deferred after the first ``keep`` (a savepoint
        that rolled back: never published)."""
        events = getattr(self._pending, "events", None)
        if events:
            del events[keep:]

    def commit(self) -> None:
        flush, self._next.flush_at_commit = getattr(self._next, "flush_at_commit", False), False
        try:
            # peewee has forgotten the transaction by now: a connection that
            # broke inside it would be replaced by a new one, and a COMMIT
            # there "succeeds" with nothing of the transaction in it (the
            # server rolled it back when the connection broke).
            self._ensure_unbroken()
            if flush:
                self._commit_then_flush()
            else:
                super().commit()
        except FlushFailed:
            self._publish_pending()  # committed: its events happened
            raise
        except BaseException:
            self._pending.events = None
            raise
        finally:
            self.gate.leave()
        self._publish_pending()

    def _publish_pending(self) -> None:
        pending, self._pending.events = getattr(self._pending, "events", None), None
        if pending:
            from ketter.events import publish_committed

            publish_committed(pending)

    def _ensure_unbroken(self) -> None:
        """Refuse to commit a transaction the server has rolled back (a
        connection that broke inside it) or aborted (a failed statement
        whose error was caught): its ``COMMIT`` would report success with
        nothing of it committed."""
        import psycopg

        state = self._state  # type: ignore[attr-defined]  # peewee's, untyped
        conn = None if state.closed else state.conn
        if conn is None or conn.closed or getattr(conn, "broken", False):
            raise psycopg.OperationalError(
                "the connection to the job store was lost inside a transaction: "
                "nothing of it was committed"
            )
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            raise psycopg.errors.InFailedSqlTransaction(
                "the transaction was aborted by a failed statement: nothing of it was committed"
            )

    def _commit_then_flush(self) -> None:
        """A durable transaction's end (:data:`_COMMIT_THEN_FLUSH`)."""
        import psycopg

        try:
            with peewee.__exception_wrapper__:  # type: ignore[attr-defined]
                self.cursor().execute(_COMMIT_THEN_FLUSH)
        except BaseException as failed:
            conn = self._state.conn  # type: ignore[attr-defined]
            status = None if conn is None or conn.closed else conn.info.transaction_status
            # Inside the flush's transaction: the COMMIT before it held.
            held = status in (
                psycopg.pq.TransactionStatus.INTRANS,
                psycopg.pq.TransactionStatus.INERROR,
            )
            self._end_half_begun()  # the flush's transaction is not left open
            if held and isinstance(failed, Exception):
                raise FlushFailed(
                    f"committed, but the job store's WAL flush failed: {failed}"
                ) from failed
            raise  # the COMMIT failed, or its outcome is unknown (connection lost)

    def rollback(self) -> None:
        self._pending.events = None  # an event rolled back is never published
        try:
            super().rollback()
        finally:
            self.gate.leave()


def connect(dsn: str, *, password: str | None = None, read_only: bool = False) -> PgStoreDatabase:
    """A peewee database for the job store at ``dsn`` (a ``postgresql://``
    URL or a libpq key=value string; not yet migrated). ``password`` (read
    from the config's ``password_file``) is passed apart, never in the DSN.
    ``read_only``: every transaction read-only (a reader's, which must
    never write)."""
    options = f"-c synchronous_commit={ORDINARY_COMMIT}"
    if read_only:
        options += " -c default_transaction_read_only=on"
    params: dict[str, Any] = {"options": options, **liveness(dsn)}
    if password is not None:
        params["password"] = password
    db = PgStoreDatabase(dsn, prefer_psycopg3=True, autoconnect=True, **params)
    db.read_only = read_only
    return db


def open_store(
    dsn: str, *, password: str | None = None, migrate: bool = True, read_only: bool = False
) -> PgStoreDatabase:
    """Open the job store at ``dsn``, apply pending migrations, bind the models."""
    db = connect(dsn, password=password, read_only=read_only)
    if migrate:
        upgrade(db)
    database.initialize(db)
    return db


def psycopg_errors() -> type[BaseException]:
    """psycopg's base error (imported where PostgreSQL is used only)."""
    import psycopg

    return psycopg.Error


def upgrade(db: PostgresqlDatabase) -> list[str]:
    """Apply every pending migration, under a session advisory lock so two
    nodes starting together do not both apply one; returns the names applied."""
    db.execute_sql("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        with importlib.resources.as_file(importlib.resources.files(MIGRATIONS)) as directory:
            return list(Runner(db, directory=str(directory)).up())
    finally:
        # In a transaction a failed migration aborted, the unlock fails too
        # (and would hide the migration's error): the lock then ends with
        # the session.
        with contextlib.suppress(peewee.DatabaseError, psycopg_errors()):
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


def pending_migrations(db: PostgresqlDatabase) -> list[str]:
    """Names of the migrations not applied yet."""
    with importlib.resources.as_file(importlib.resources.files(MIGRATIONS)) as directory:
        runner = Runner(db, directory=str(directory))
        return [m.name for m in runner.status() if m.path is not None and not m.applied]


def shown_dsn(dsn: str) -> str:
    """``dsn`` without a password, for messages and ``store.path``."""
    if "://" not in dsn:
        return " ".join(p for p in dsn.split() if not p.startswith("password="))
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
