"""The PostgreSQL backend (:class:`ketter.store.backend.StoreBackend`, issue
#18): the job store and the queue (huey's ``PostgresHuey``, tables
``huey_*``) in the database ``store.dsn`` names, its password read from
``store.password_file``. ``state_dir`` still holds what is the node's own:
the audit log, the store marker that refuses a silently new store, the
services' status files for ``ketter health``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ketter.audit.chain import AuditChain
from ketter.errors import StoreMissing
from ketter.store.port import JobStore, StoreUnreadable
from ketter.store.sql_read import SqlReadStore

if TYPE_CHECKING:
    from ketter.store.postgres.route_locks import RouteLocks


class PgBackend:
    """The job store and the queue in one PostgreSQL database."""

    name = "postgresql"

    def __init__(self, dsn: str, password_file: str | None, db_path: str) -> None:
        self.dsn = dsn
        self.password_file = password_file
        #: Where the SQLite store would be: the marker and the status files
        #: live next to it, in ``state_dir``.
        self.status_path = db_path

    @property
    def where(self) -> str:
        from ketter.store.postgres.db import shown_dsn

        return shown_dsn(self.dsn)

    def _password(self) -> str | None:
        from ketter.config.store import read_password

        return read_password(self.password_file)

    def _probe(self, **params: Any) -> Any:
        """A short connection for a probe (``exists``, the queue, the
        upkeep), with the liveness settings every connection has."""
        import psycopg

        from ketter.store.postgres.db import liveness

        return psycopg.connect(self.dsn, password=self._password(), **liveness(self.dsn), **params)

    def exists(self) -> bool:
        import psycopg

        try:
            with self._probe() as conn:
                row = conn.execute("SELECT to_regclass('public.schema_migration')").fetchone()
        except psycopg.Error as exc:
            raise StoreUnreadable(f"{self.where}: {exc}") from exc
        return row is not None and row[0] is not None

    def _ensure_may_create(self, evidence: Iterable[str], new_store: bool) -> None:
        """Never silently a new, empty store where the node has run before
        (as on SQLite: :func:`ketter.store.guard.ensure_may_create`)."""
        from ketter.store.guard import evidence_of_past_runs

        if new_store or self.exists():
            return
        found = evidence_of_past_runs(self.status_path, evidence)
        if found:
            raise StoreMissing(
                f"no job store in the database {self.where}, but this node has run before "
                f"({', '.join(found)} exist): the database was emptied, or store.dsn names "
                "another one. Restore it from a backup (jobs, events and the audit chain "
                "are in it) and start again; or, to start over with an empty store on "
                "purpose, run `ketter db upgrade --new-store`"
            )

    def _write_marker(self) -> None:
        from ketter.store.guard import write_marker

        write_marker(self.status_path)

    def open_store(self, chain: AuditChain, *, evidence: Iterable[str] = ()) -> JobStore:
        from ketter.store.postgres import open_pg_job_store

        self._ensure_may_create(evidence, new_store=False)
        store = open_pg_job_store(
            self.dsn, chain, password=self._password(), status_path=self.status_path
        )
        self._write_marker()
        return store

    def open_readonly_store(self, chain: AuditChain) -> JobStore:
        from ketter.store.postgres import open_pg_job_store

        if not self.exists():
            raise FileNotFoundError(
                f"no job store in the database {self.where}; run `ketter db upgrade` first"
            )
        return open_pg_job_store(
            self.dsn, chain, password=self._password(), migrate=False, read_only=True
        )

    def open_read(self, *, for_health: bool = False, shared: bool = False) -> SqlReadStore:
        # One psycopg connection serves one thread after another (psycopg
        # serialises its use): every variant is the same.
        from ketter.store.postgres.read import open_read

        return open_read(self.dsn, password=self._password())

    def upgrade(self, *, new_store: bool, evidence: Iterable[str] = ()) -> list[str]:
        from ketter.store.postgres.db import connect, upgrade

        self._ensure_may_create(evidence, new_store)
        db = connect(self.dsn, password=self._password())
        try:
            applied = upgrade(db)
        finally:
            db.close()
        self._write_marker()
        return applied

    def pending(self) -> list[str]:
        from ketter.store.postgres.db import connect, pending_migrations

        db = connect(self.dsn, password=self._password(), read_only=True)
        try:
            return pending_migrations(db)
        finally:
            db.close()

    def route_locks(
        self, routes: Iterable[str], *, node: str, ttl: float = 30.0
    ) -> RouteLocks | None:
        """The watcher's route locks, one watcher per route across nodes
        (:mod:`ketter.store.postgres.route_locks`)."""
        from ketter.store.postgres.route_locks import RouteLocks

        return RouteLocks(self.dsn, self._password(), routes, node=node, ttl=ttl)

    def probe_queue(self) -> tuple[str, str]:
        import psycopg

        try:
            with self._probe() as conn:
                conn.execute("SELECT count(*) FROM huey_task").fetchone()
        except psycopg.errors.UndefinedTable:
            return self.where, "PostgresHuey, no message yet (its tables come with the workers)"
        except psycopg.Error as exc:
            raise StoreUnreadable(str(exc)) from exc
        return self.where, "PostgresHuey in the job store's database"

    def upkeep(self) -> tuple[bool, str]:
        import psycopg

        from ketter.store.postgres.upkeep import vacuum_check

        try:
            # Read-only, as the read model's connections.
            with self._probe(options="-c default_transaction_read_only=on") as conn:
                return vacuum_check(conn)
        except psycopg.Error as exc:
            raise StoreUnreadable(f"{self.where}: cannot read the tables' upkeep: {exc}") from exc

    def history_command(self, shown: str | None = None) -> str:
        return f"psql '{self.where}' -c 'select * from job_history'"
