"""What the shared SQL stands on: the backend's database, its dialect, the
statement helpers every area mixin calls, and the audit chain's primitives
(the append itself is :class:`ketter.store.composite.core.CompositeCore`'s)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from ketter.events import Event, EventBus
from ketter.store.composite.core import CompositeCore
from ketter.store.dialect import Dialect
from ketter.store.rows import EVENT_COLUMNS

_INSERT_EVENT = "INSERT INTO events ({}) VALUES ({})".format(
    ", ".join(f'"{name}"' for name in EVENT_COLUMNS), ", ".join("?" for _ in EVENT_COLUMNS)
)

# MAX(id) is one step down the primary key; ORDER BY id DESC LIMIT 1 plans
# as a scan of the events on SQLite (fast only because SQLite stops early).
_CHAIN_HEAD = "SELECT id, hash FROM events WHERE id = (SELECT MAX(id) FROM events)"


class SqlCore(CompositeCore):
    """Statements in SQLite's spelling run on the backend's database."""

    db: Any
    #: How this backend spells the shared SQL.
    dialect: Dialect

    @property
    @abc.abstractmethod
    def path(self) -> str:
        """Where the store is, for messages."""

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run ``sql`` (SQLite's spelling) with ``params``; the cursor."""
        return self.db.execute_sql(self.dialect.sql(sql), tuple(params))

    def in_transaction(self) -> bool:
        return bool(self.db.in_transaction())

    def release_thread(self) -> None:
        """Close this thread's connection (a thread that ends)."""
        self.db.close()

    def close(self) -> None:
        self.db.close()

    # -- the audit chain's primitives (append_event: CompositeCore) ----------
    # Raw SQL: an append runs in every state change, peewee's builder costs
    # more than the insert itself. The backend's transaction serialises the
    # appends (SQLite's write lock, PostgreSQL's write turn).

    def _chain_head(self) -> tuple[int, str] | None:
        last = self._exec(_CHAIN_HEAD).fetchone()
        return (last[0], last[1]) if last else None

    def _insert_event(self, row: dict[str, Any]) -> None:
        self._exec(_INSERT_EVENT, tuple(row[name] for name in EVENT_COLUMNS))

    def _publish_after_commit(self, bus: EventBus, event: Event) -> None:
        self.db.defer_event(bus, event)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._exec(sql, params)
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
