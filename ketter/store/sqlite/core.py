"""What every SQLite job-store operation stands on: the database, its
transactions (``IMMEDIATE``, the writers' turns, the durable group commit of
:mod:`ketter.store.db`) and the store guard; the statements and the audit
chain's primitives are :class:`ketter.store.sql.core.SqlCore`'s.

The peewee database object lives here and in the other modules of
:mod:`ketter.store`, nowhere else: the code outside the store holds a
:class:`~ketter.store.port.JobStore` and calls its methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ketter.audit.chain import AuditChain
from ketter.store.db import StoreDatabase, durable, sync_wal
from ketter.store.dialect import SQLITE
from ketter.store.guard import StoreGuard, ensure_store_intact, guard_of
from ketter.store.sql.core import SqlCore


class SqliteCore(SqlCore):
    """The SQLite job store's connection and transactions."""

    dialect = SQLITE

    def __init__(self, db: StoreDatabase, chain: AuditChain) -> None:
        self.db = db
        self.chain = chain

    def lease_clock_offset(self) -> float:
        """One node: the leases are on its clock."""
        return 0.0

    def lease_clock(self, now: float) -> float:
        """The caller's clock: one node, one clock."""
        return now

    # -- transactions -------------------------------------------------------

    def _transaction(self, *, durable: bool) -> contextlib.AbstractContextManager[None]:
        """One transaction (``BEGIN IMMEDIATE``); nested in an open one it is
        a savepoint. ``durable=True``: on the disk when the block is left
        (:func:`ketter.store.db.durable`); it must not nest."""
        return _durable(self.db) if durable else _atomic(self.db)

    def sync(self) -> None:
        """Make every commit of this thread so far durable (fsync the WAL,
        shared with the other threads' flushes)."""
        sync_wal(self.db)

    # -- the store file -----------------------------------------------------

    @property
    def guard(self) -> StoreGuard | None:
        """The store file's identity and writability watch (None for a store
        opened without one)."""
        return guard_of(self.db)

    def ensure_intact(self, what: str) -> None:
        """Raise :class:`ketter.errors.StoreLost` when the store file is no
        longer the one opened (``what`` names the step that stops)."""
        ensure_store_intact(self.db, what)

    @property
    def path(self) -> str:
        return str(self.db.database)


@contextlib.contextmanager
def _atomic(db: StoreDatabase) -> Iterator[None]:
    with db.atomic():
        yield


@contextlib.contextmanager
def _durable(db: StoreDatabase) -> Iterator[None]:
    with durable(db):
        yield
