"""The in-memory job store's tables, transactions and the audit chain's
primitives: a fake for unit tests that keeps the contract of the SQLite
store (one writer at a time, all-or-nothing transactions, events published
after commit), checked by the same contract suite (``tests/contract``). Its
composite operations are the SQLite store's, :mod:`ketter.store.composite`.

A transaction takes one re-entrant lock and snapshots the tables; an
exception inside restores the snapshot (a nested block restores only its
own part, like a savepoint). Nothing is durable: ``durable=True`` only
checks that it does not nest, as the SQLite store does.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ketter.audit.chain import AuditChain
from ketter.events import Event, EventBus, publish_committed
from ketter.store.composite.core import CompositeCore
from ketter.store.rows import (
    ApiTokenRow,
    EventRow,
    HeartbeatRow,
    JobFileRow,
    JobRow,
    RouteStatusRow,
)


@dataclass
class Tables:
    """Every table of the store, keyed as its primary key."""

    jobs: dict[int, JobRow] = field(default_factory=dict)
    job_files: dict[int, JobFileRow] = field(default_factory=dict)
    route_status: dict[str, RouteStatusRow] = field(default_factory=dict)
    heartbeats: dict[tuple[str, str], HeartbeatRow] = field(default_factory=dict)
    events: list[EventRow] = field(default_factory=list)
    api_tokens: dict[int, ApiTokenRow] = field(default_factory=dict)
    #: ``share_markers``: (route, side) → marker id.
    share_markers: dict[tuple[str, str], str] = field(default_factory=dict)
    #: ``counters``: (route, name) → value.
    counters: dict[tuple[str, str], float] = field(default_factory=dict)
    #: Last id handed out per table (ids are never reused, as AUTOINCREMENT).
    ids: dict[str, int] = field(default_factory=dict)

    def next_id(self, table: str) -> int:
        self.ids[table] = self.ids.get(table, 0) + 1
        return self.ids[table]


class MemoryCore(CompositeCore):
    """The in-memory job store's tables, transactions and the audit chain's
    primitives."""

    def __init__(self, chain: AuditChain, path: str = ":memory:") -> None:
        self.chain = chain
        self.tables = Tables()
        self.path = path
        self._lock = threading.RLock()
        self._local = threading.local()

    # -- transactions -------------------------------------------------------

    def transaction(self, *, durable: bool = False) -> contextlib.AbstractContextManager[None]:
        if durable and self.in_transaction():
            raise RuntimeError("durable() must open its own transaction, not nest in one")
        return self._transaction()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            depth = getattr(self._local, "depth", 0)
            snapshot = copy.deepcopy(self.tables)
            if depth == 0:
                self._local.pending = []
            mark = len(self._local.pending)
            self._local.depth = depth + 1
            try:
                yield
            except BaseException:
                self.tables = snapshot
                del self._local.pending[mark:]  # rolled back: never published
                raise
            finally:
                self._local.depth = depth
            if depth == 0:
                pending, self._local.pending = self._local.pending, []
        if depth == 0 and pending:
            publish_committed(pending)

    def in_transaction(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    def sync(self) -> None:
        """Nothing to flush in memory."""

    def release_thread(self) -> None:
        """No per-thread connection in memory."""

    def close(self) -> None:
        """Nothing to close in memory."""

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One statement's worth of writing: joins the caller's transaction or
        runs as its own (SQLite's autocommit)."""
        with self.transaction():
            yield

    # -- the store file -----------------------------------------------------

    @property
    def guard(self) -> None:
        """No file to watch in memory."""
        return None

    def ensure_intact(self, what: str) -> None:
        """A store in memory cannot be deleted under its process."""

    # -- the audit chain's primitives (append_event: CompositeCore) ----------

    def _chain_head(self) -> tuple[int, str] | None:
        events = self.tables.events
        return (events[-1].id, events[-1].hash) if events else None

    def _insert_event(self, row: dict[str, Any]) -> None:
        self.tables.events.append(EventRow(**row))

    def _insert_events(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self._insert_event(row)

    def _publish_after_commit(self, bus: EventBus, event: Event) -> None:
        self._local.pending.append((bus, event))

    def _new_head(self, seq: int, hash_: str) -> None:
        """The head is the list's last: nothing to keep."""

    def _settle(self) -> bool:
        """Nothing is held back in memory."""
        return True

    def _ensure_writable(self) -> None:
        """The memory store is never opened for reading only."""

    def _sealed_later(self) -> bool:
        """Sealed once, on the real head: a shared commit in memory holds
        its lock from the start."""
        return False

    @contextlib.contextmanager
    def _whole(self, *, durable: bool = False) -> Iterator[object]:
        with self.transaction(durable=durable), self._flat():
            yield None

    def _flat(self) -> contextlib.AbstractContextManager[object]:
        """Savepoints cost nothing here: nested blocks stay savepoints."""
        return contextlib.nullcontext()


__all__ = ["Event", "EventBus", "MemoryCore", "Tables"]
