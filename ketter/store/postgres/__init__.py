"""The job store on PostgreSQL (issue #18): one class composed of one mixin
per area, over the connection and transactions of
:mod:`ketter.store.postgres.core`; the composite operations are
:mod:`ketter.store.composite`'s, as for every backend."""

from __future__ import annotations

from ketter.audit.chain import AuditChain
from ketter.store.postgres.db import open_store, shown_dsn
from ketter.store.postgres.events import EventsPg
from ketter.store.postgres.heartbeats import HeartbeatsPg
from ketter.store.postgres.intake import IntakePg
from ketter.store.postgres.jobs import JobsPg
from ketter.store.postgres.leases import LeasesPg
from ketter.store.postgres.manifests import ManifestsPg
from ketter.store.postgres.metrics import MetricsPg
from ketter.store.postgres.routes import RoutesPg
from ketter.store.postgres.tokens import TokensPg


class PgJobStore(
    JobsPg,
    LeasesPg,
    IntakePg,
    RoutesPg,
    HeartbeatsPg,
    EventsPg,
    ManifestsPg,
    TokensPg,
    MetricsPg,
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
