"""What every SQLite job-store operation stands on: the database, its
transactions (``IMMEDIATE``, the writers' turns, the durable group commit of
:mod:`ketter.store.db`), the store guard, and the audit chain's primitives
(the append itself is :class:`ketter.store.composite.core.CompositeCore`'s).

The peewee database object lives here and in the other modules of
:mod:`ketter.store`, nowhere else: the code outside the store holds a
:class:`~ketter.store.port.JobStore` and calls its methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from ketter.audit.chain import AuditChain
from ketter.events import Event, EventBus
from ketter.store.composite.core import CompositeCore
from ketter.store.db import StoreDatabase, durable, sync_wal
from ketter.store.guard import StoreGuard, ensure_store_intact, guard_of
from ketter.store.rows import EVENT_COLUMNS

_INSERT_EVENT = "INSERT INTO events ({}) VALUES ({})".format(
    ", ".join(f'"{name}"' for name in EVENT_COLUMNS), ", ".join("?" for _ in EVENT_COLUMNS)
)

_CHAIN_HEAD = "SELECT id, hash FROM events WHERE id = (SELECT MAX(id) FROM events)"


class SqliteCore(CompositeCore):
    """The SQLite job store's connection, transactions and the audit chain's
    primitives."""

    def __init__(self, db: StoreDatabase, chain: AuditChain) -> None:
        self.db = db
        self.chain = chain

    # -- transactions -------------------------------------------------------

    def transaction(self, *, durable: bool = False) -> contextlib.AbstractContextManager[None]:
        """One transaction (``BEGIN IMMEDIATE``); nested in an open one it is
        a savepoint. ``durable=True``: on the disk when the block is left
        (:func:`ketter.store.db.durable`); it must not nest."""
        return _durable(self.db) if durable else _atomic(self.db)

    def in_transaction(self) -> bool:
        return bool(self.db.in_transaction())

    def sync(self) -> None:
        """Make every commit of this thread so far durable (fsync the WAL,
        shared with the other threads' flushes)."""
        sync_wal(self.db)

    def release_thread(self) -> None:
        """Close this thread's connection (a thread that ends)."""
        self.db.close()

    def close(self) -> None:
        self.db.close()

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

    # -- the audit chain's primitives (append_event: CompositeCore) ----------

    # Raw SQL: an append runs in every state change, peewee's builder costs
    # more than the insert itself.

    def _chain_head(self) -> tuple[int, str] | None:
        # MAX(id) is one step down the primary key; ORDER BY id DESC LIMIT 1
        # plans as a scan of the events (fast only because SQLite stops early).
        last = self.db.execute_sql(_CHAIN_HEAD).fetchone()
        return (last[0], last[1]) if last else None

    def _insert_event(self, row: dict[str, Any]) -> None:
        self.db.execute_sql(_INSERT_EVENT, tuple(row[name] for name in EVENT_COLUMNS))

    def _publish_after_commit(self, bus: EventBus, event: Event) -> None:
        self.db.defer_event(bus, event)

    # -- helpers for the area mixins ----------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.db.execute_sql(sql, tuple(params))
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@contextlib.contextmanager
def _atomic(db: StoreDatabase) -> Iterator[None]:
    with db.atomic():
        yield


@contextlib.contextmanager
def _durable(db: StoreDatabase) -> Iterator[None]:
    with durable(db):
        yield
