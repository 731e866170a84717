"""The job store on SQLite: the shared SQL of :mod:`ketter.store.sql` (one
mixin per area) over the connection, transactions and dialect of
:mod:`ketter.store.sqlite.core`, with what SQLite does its own way (a new
job, two reads of the events and the writes' hold)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from ketter.audit.chain import AuditChain
from ketter.store.db import StoreDatabase, open_readonly, open_store
from ketter.store.sql.heartbeats import HeartbeatsShared
from ketter.store.sql.jobs import JobsShared
from ketter.store.sql.leases import LeasesShared
from ketter.store.sql.manifests import ManifestsShared
from ketter.store.sql.metrics import MetricsShared
from ketter.store.sql.routes import RoutesShared
from ketter.store.sql.tokens import TokensShared
from ketter.store.sqlite.events import EventsSql
from ketter.store.sqlite.intake import IntakeSql


class SqliteJobStore(
    IntakeSql,
    EventsSql,
    LeasesShared,
    JobsShared,
    RoutesShared,
    HeartbeatsShared,
    ManifestsShared,
    TokensShared,
    MetricsShared,
):
    """The job store on one SQLite file (see :class:`ketter.store.port.JobStore`)."""


def open_job_store(
    path: str | os.PathLike[str],
    chain: AuditChain,
    *,
    migrate: bool = True,
    new_store: bool = False,
    evidence: Iterable[str] = (),
) -> SqliteJobStore:
    """Open (and migrate) the SQLite job store at ``path`` for ``chain``'s
    process (see :func:`ketter.store.db.open_store`)."""
    db = open_store(path, migrate=migrate, new_store=new_store, evidence=evidence)
    assert isinstance(db, StoreDatabase)
    return SqliteJobStore(db, chain)


def open_readonly_job_store(path: str | os.PathLike[str], chain: AuditChain) -> SqliteJobStore:
    """The SQLite job store at ``path`` for reading only (no migration, no
    write: ``ketter audit verify`` by an account that may only read the state
    directory; see :func:`ketter.store.db.open_readonly`). Raises
    ``FileNotFoundError`` when there is no store. Give it a ``chain`` that
    may not append."""
    # Only the reads of the store run on it (no transaction, no guard).
    return SqliteJobStore(open_readonly(path), chain)  # type: ignore[arg-type]
