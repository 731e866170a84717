"""What every PostgreSQL job-store operation stands on: the database, its
transactions and the leases' clock; the statements and the audit chain's
primitives are :class:`ketter.store.sql.core.SqlCore`'s.

A durable transaction (``transaction(durable=True)``) returns once the
WAL is flushed past its commit (flushed after it lets the write turn go);
the others do not wait for the WAL flush, and :meth:`sync` waits for it
(:mod:`.db`), as SQLite's WAL commits and its flushes. Every transaction
takes the store's write turn first, a transaction-scoped advisory lock
(:data:`~ketter.store.postgres.db.CHAIN_LOCK`): the chain's appends read
the head this one writes, and no transaction waits for the lock while
holding a row lock another one that holds it wants (a deadlock, see
:func:`_atomic`). It is SQLite's ``BEGIN IMMEDIATE``, across nodes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from ketter.audit.chain import AuditChain
from ketter.store.dialect import POSTGRESQL
from ketter.store.guard import StoreGuard
from ketter.store.postgres.db import DB_NOW, UNREAD, PgStoreDatabase, shown_dsn
from ketter.store.sql.core import SqlCore
from ketter.store.sql.turn import UNKNOWN


class PgCore(SqlCore):
    """The PostgreSQL job store's connection, transactions and clock."""

    dialect = POSTGRESQL

    def __init__(self, db: PgStoreDatabase, chain: AuditChain, *, db_clock: bool = True) -> None:
        self.db = db
        self.chain = chain
        #: Leases on the database's clock (:meth:`lease_clock`); ``False``
        #: only for the contract suite, which pins time for every backend.
        self.db_clock = db_clock

    # -- transactions -------------------------------------------------------

    def _transaction(self, *, durable: bool) -> contextlib.AbstractContextManager[None]:
        """One transaction, which takes the store's write turn
        (:data:`~ketter.store.postgres.db.CHAIN_LOCK`, with its ``BEGIN``)
        first; nested in an open one it is a savepoint. ``durable=True``:
        its commit returns once the WAL is flushed past it; it must not nest,
        as on SQLite."""
        if durable and self.db.in_transaction():
            raise RuntimeError("durable() must open its own transaction, not nest in one")
        return _atomic(self, durable)

    def _begun_head(self) -> object:
        head = self.db.transaction_head()  # read with the BEGIN: no round trip
        return UNKNOWN if head is UNREAD else head

    def sync(self) -> None:
        """Make every commit of this thread so far durable (the server's WAL
        flushed up to now, shared with the other connections' flushes)."""
        self.db.flush()

    # -- the store ----------------------------------------------------------

    @property
    def guard(self) -> StoreGuard | None:
        """The process's watch over the server's availability
        (:class:`ketter.store.postgres.guard.PgStoreGuard`; None for a store
        opened only to read)."""
        guard = self.db.guard
        return guard if isinstance(guard, StoreGuard) else None

    def lease_clock(self, now: float) -> float:
        """The database's clock (``now()``: the transaction's start, one
        instant for every comparison of a claim), never this node's: the
        leases of several nodes are set and compared on one clock."""
        if not self.db_clock:
            return now
        clock = self.db.transaction_clock()  # read with the BEGIN: no round trip
        if clock is not None:
            return clock
        row = self.db.execute_sql(f"SELECT {DB_NOW}").fetchone()
        return float(row[0])

    def lease_clock_offset(self) -> float:
        """The database's clock less this node's: read with the open write
        transaction's ``BEGIN``, else asked (one round trip)."""
        if not self.db_clock:
            return 0.0
        offset = self.db.transaction_clock_offset()
        if offset is not None:
            return offset
        wall = time.time()
        row = self.db.execute_sql(f"SELECT {DB_NOW}").fetchone()
        return float(row[0]) - wall

    def ensure_intact(self, what: str) -> None:
        """Nothing to check: a lost database fails the next statement."""

    @property
    def path(self) -> str:
        return shown_dsn(str(self.db.database))


@contextlib.contextmanager
def _atomic(core: PgCore, durable: bool = False) -> Iterator[None]:
    # The outermost one's BEGIN takes the write turn first, before any row
    # lock (PgStoreDatabase.begin): a transaction that locked a job row (a
    # compare-and-set) and then waited for the chain's lock (its event)
    # deadlocked with one that held the chain's lock and wanted that row
    # (seen in the node's end-to-end test). Taken first, the one lock orders
    # every write transaction as SQLite's BEGIN IMMEDIATE does; a single
    # statement outside a transaction (a renewal, a heartbeat) never waits
    # for it.
    if durable:
        core.db.begin_durable()
    if not core.db.in_transaction():
        core.db.begin_with_head()
    with core.db.atomic():
        yield
