"""The SQLite backend (:class:`ketter.store.backend.StoreBackend`): the job
store ``state_dir/ketter.db`` and the queue ``state_dir/queue.db``, files
that need no server."""

from __future__ import annotations

import os
from collections.abc import Iterable

from ketter.audit.chain import AuditChain
from ketter.store.port import JobStore
from ketter.store.sql_read import SqlReadStore


class SqliteBackend:
    """The job store and the queue as SQLite files under ``state_dir``."""

    name = "sqlite"

    def __init__(self, db_path: str, queue_path: str) -> None:
        self.path = db_path
        self.queue_path = queue_path

    @property
    def where(self) -> str:
        return self.path

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def open_store(self, chain: AuditChain, *, evidence: Iterable[str] = ()) -> JobStore:
        from ketter.store.sqlite import open_job_store

        return open_job_store(self.path, chain, evidence=evidence)

    def open_readonly_store(self, chain: AuditChain) -> JobStore:
        from ketter.store.sqlite import open_readonly_job_store

        return open_readonly_job_store(self.path, chain)

    def open_read(self, *, for_health: bool = False, shared: bool = False) -> SqlReadStore:
        from ketter.store.sqlite_read import open_read, open_read_raw, open_read_shared

        if for_health:
            return open_read_raw(self.path)
        return open_read_shared(self.path) if shared else open_read(self.path)

    def upgrade(self, *, new_store: bool, evidence: Iterable[str] = ()) -> list[str]:
        from ketter.store.guard import ensure_may_create, write_marker
        from ketter.store.sqlite.schema import upgrade_schema

        ensure_may_create(self.path, evidence=evidence, new_store=new_store)
        applied = upgrade_schema(self.path)
        write_marker(self.path)
        return applied

    def pending(self) -> list[str]:
        from ketter.store.db import all_migrations, open_readonly, pending_migrations

        if not self.exists():
            return all_migrations()
        db = open_readonly(self.path)
        try:
            return pending_migrations(db)
        finally:
            db.close()

    def route_locks(self, routes: Iterable[str], *, node: str, ttl: float = 30.0) -> None:
        """None: one node per SQLite store, its watcher watches every route."""
        return None

    def probe_queue(self) -> tuple[str, str]:
        from ketter.store.sqlite_read import probe_readonly

        return self.queue_path, probe_readonly(self.queue_path)

    def upkeep(self) -> None:
        return None  # the log's growth is health's "store log"

    def history_command(self, shown: str | None = None) -> str:
        from ketter.store.sqlite_read import history_command

        return history_command(shown or self.path)
