"""The job store on PostgreSQL (issue #18): the shared SQL of
:mod:`ketter.store.sql` (one mixin per area) over the connection,
transactions and dialect of :mod:`ketter.store.postgres.core`, with what
PostgreSQL does its own way (a new job, two reads of the events); the
composite operations are :mod:`ketter.store.composite`'s, as for every
backend."""

from __future__ import annotations

from ketter.audit.chain import AuditChain
from ketter.store.postgres.db import open_store, shown_dsn
from ketter.store.postgres.events import EventsPg
from ketter.store.postgres.intake import IntakePg
from ketter.store.postgres.jobs import JobsPg
from ketter.store.sql.heartbeats import HeartbeatsShared
from ketter.store.sql.leases import LeasesShared
from ketter.store.sql.manifests import ManifestsShared
from ketter.store.sql.metrics import MetricsShared
from ketter.store.sql.routes import RoutesShared
from ketter.store.sql.tokens import TokensShared


class PgJobStore(
    IntakePg,
    EventsPg,
    LeasesShared,
    JobsPg,
    RoutesShared,
    HeartbeatsShared,
    ManifestsShared,
    TokensShared,
    MetricsShared,
):
    """The job store on a PostgreSQL database (see :class:`ketter.store.port.JobStore`)."""


def open_pg_job_store(
    dsn: str,
    chain: AuditChain,
    *,
    password: str | None = None,
    migrate: bool = True,
    status_path: str | None = None,
    db_clock: bool = True,
    read_only: bool = False,
) -> PgJobStore:
    """Open (and migrate) the PostgreSQL job store at ``dsn`` for ``chain``'s
    process (see :func:`ketter.store.postgres.db.open_store`). ``status_path``:
    where the SQLite store would be, for the guard's status file (a process
    that writes: the services); ``db_clock=False`` leaves leases on the
    caller's ``now`` (the contract suite); ``read_only``: every transaction
    read-only (``audit verify``, ``metrics``)."""
    from ketter.store.postgres.guard import PgStoreGuard

    db = open_store(dsn, password=password, migrate=migrate, read_only=read_only)
    if status_path is not None:
        db.guard = PgStoreGuard(db, status_path, where=shown_dsn(dsn))
    return PgJobStore(db, chain, db_clock=db_clock)
