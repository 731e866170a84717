"""What every PostgreSQL job-store operation stands on: the database, its
transactions and the leases' clock; the statements and the audit chain's
primitives are :class:`ketter.store.sql.core.SqlCore`'s.

A durable transaction (``transaction(durable=True)``) commits with
``synchronous_commit=on``; the others do not wait for the WAL flush, and
:meth:`sync` waits for it (:mod:`.db`), as SQLite's WAL commits and its
flushes. Every transaction takes the store's write turn first, a
transaction-scoped advisory lock (:data:`~ketter.store.postgres.db.CHAIN_LOCK`): the chain's appends
read the head this one writes, and no transaction waits for the lock while
holding a row lock another one that holds it wants (a deadlock, see
:func:`_atomic`). It is SQLite's ``BEGIN IMMEDIATE``, across nodes.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from ketter.audit.chain import GENESIS, AuditChain, hashed_fields, record_hash
from ketter.store.dialect import POSTGRESQL
from ketter.store.guard import StoreGuard
from ketter.store.postgres.db import DB_NOW, UNREAD, PgStoreDatabase, shown_dsn
from ketter.store.rows import EVENT_COLUMNS
from ketter.store.sql.core import INSERT_EVENT, SqlCore
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
        its commit returns once the WAL is flushed (``synchronous_commit=on``);
        it must not nest, as on SQLite."""
        if durable and self.db.in_transaction():
            raise RuntimeError("durable() must open its own transaction, not nest in one")
        return _atomic(self, durable)

    @contextlib.contextmanager
    def _whole(self) -> Iterator[object]:
        """A shared commit tried whole, its work run **before** the write
        turn is taken: the items' Python (their steps, their events' JSON)
        no longer holds every other writer of every node out. Their
        statements are held back (flat), their events sealed on a
        provisional head; :meth:`_settle` takes the turn, re-seals them on
        the real head, sends them in one pipeline. A statement an item runs
        that writes at once is refused (:meth:`PgStoreDatabase.refuse_writes`):
        the try fails and the items run again, each in its savepoint. Reads
        run outside the transaction, as if before it: every write is a
        compare-and-set checked when it is sent."""
        turn = self._turn()
        if turn.depth or self.db.in_transaction():
            raise RuntimeError("a shared commit tried whole opens its own transaction")
        try:
            with contextlib.ExitStack() as stack:
                turn.depth, turn.flat, turn.lazy, turn.stack = 1, True, True, stack
                self.db.refuse_writes(True)
                yield None
                if turn.lazy:
                    self._take_turn()  # nothing was settled: an empty commit
                if turn.deferred:
                    raise RuntimeError("statements held back and never sent (no _settle)")
                if turn.counts:
                    self._count_many(turn.counts)
        finally:
            self.db.refuse_writes(False)
            turn.depth = 0
            turn.reset()

    def _take_turn(self) -> None:
        """The lazy shared commit's transaction, now: ``BEGIN`` with the
        write turn and the head, the held events re-sealed after it (each
        one's sequence and hash; their JSON is kept) and their publication
        set for the commit."""
        turn = self._turn()
        assert turn.stack is not None and turn.lazy
        self.db.refuse_writes(False)
        turn.lazy = False
        turn.head = UNKNOWN
        turn.stack.enter_context(self._transaction(durable=False))
        head = self._chain_head()
        base, prev = head if head is not None else (0, GENESIS)
        for row in turn.unsealed:
            row["id"] = base + int(row["id"])
            row["prev_hash"] = prev
            row["hash"] = prev = record_hash(prev, hashed_fields(row), self.chain.key)
        if turn.unsealed:
            turn.head = (int(turn.unsealed[-1]["id"]), prev)
        for bus, event in turn.published:
            self.db.defer_event(bus, dataclasses.replace(event, seq=event.seq + base))
        turn.unsealed, turn.published = [], []

    def _insert_event(self, row: dict[str, Any]) -> None:
        turn = self._turn()
        if not turn.lazy:
            super()._insert_event(row)
            return
        turn.unsealed.append(row)
        turn.deferred.append(
            (self.dialect.sql(INSERT_EVENT), lambda: tuple(row[n] for n in EVENT_COLUMNS), 1)
        )

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
