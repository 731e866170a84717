"""What a process needs of the job store beyond the store itself, per backend
(issue #18): where it is, whether it exists, its read model, its schema
upgrade, a read-only store for the commands that only read, the queue's
check and how an operator reads the history by hand.

One implementation per backend — :class:`ketter.store.sqlite.backend.SqliteBackend`
(files under ``state_dir``) and :class:`ketter.store.postgres.backend.PgBackend`
(a database named by ``store.dsn``) — chosen in one place, the composition
root (:func:`ketter.node.store_backend`); nothing else asks which backend it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ketter.audit.chain import AuditChain
    from ketter.store.port import JobStore
    from ketter.store.postgres.route_locks import RouteLocks
    from ketter.store.sql_read import SqlReadStore


class StoreBackend(Protocol):
    """The job store's backend as a process sees it."""

    #: ``sqlite`` or ``postgresql``.
    name: str

    @property
    def where(self) -> str:
        """The store's location for messages: a path, or a DSN without password."""
        ...

    def exists(self) -> bool:
        """Whether there is a job store there (a schema, not an empty database)."""
        ...

    def open_store(self, chain: AuditChain, *, evidence: Iterable[str] = ()) -> JobStore:
        """The job store a service or a writing command uses (migrated; never
        silently a new one where the node has run before, ``evidence``)."""
        ...

    def open_readonly_store(self, chain: AuditChain) -> JobStore:
        """The job store for reading only (no migration, no write); raises
        ``FileNotFoundError`` or :class:`ketter.store.port.StoreUnreadable`
        when there is none or it cannot be read."""
        ...

    def open_read(self, *, for_health: bool = False, shared: bool = False) -> SqlReadStore:
        """The read model (``status``, ``jobs``; ``health``'s variant never
        waits on a writer; ``shared``: usable by one thread after another,
        the API's read connections lent to one step of a request at a time)."""
        ...

    def upgrade(self, *, new_store: bool, evidence: Iterable[str] = ()) -> list[str]:
        """Create the store or apply pending migrations (``ketter db
        upgrade``); the names applied."""
        ...

    def pending(self) -> list[str]:
        """The migrations not applied yet (``ketter db status``); every one
        when there is no store."""
        ...

    def route_locks(
        self, routes: Iterable[str], *, node: str, ttl: float = 30.0
    ) -> RouteLocks | None:
        """The watcher's locks, one watcher per route across nodes (None:
        one node per store, every route is this watcher's)."""
        ...

    def probe_queue(self) -> tuple[str, str]:
        """The queue's name and how it opens (``ketter health``); raises
        :class:`ketter.store.port.StoreUnreadable` or ``OSError`` when not."""
        ...

    def history_command(self, shown: str | None = None) -> str:
        """The shell command an operator runs to read the history by hand."""
        ...

    def upkeep(self) -> tuple[bool, str] | None:
        """``(ok, detail)`` of the store's upkeep by its server (``ketter
        health``'s "store upkeep": PostgreSQL's vacuuming); None where there
        is none to check (SQLite's log has a check of its own). Raises
        :class:`ketter.store.port.StoreUnreadable` when it cannot be read."""
        ...
