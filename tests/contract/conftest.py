"""The job-store contract: every test in this folder runs against every
implementation of :class:`ketter.store.port.JobStore` (huey's
``StorageTests`` shape): SQLite on a real file, the in-memory fake, and
PostgreSQL (#18) on a throw-away cluster this test session starts
(``pg_dsn`` in ``tests/conftest.py``: one cluster per session, a fresh
database per test, copied from a migrated template)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.store.memory import MemoryJobStore
from ketter.store.port import JobStore
from ketter.store.postgres import open_pg_job_store
from ketter.store.sqlite import open_job_store

BACKENDS = ("sqlite", "memory", "postgres")


def make_store(
    backend: str, tmp_path: Path, chain: AuditChain, request: pytest.FixtureRequest
) -> JobStore:
    if backend == "sqlite":
        return open_job_store(tmp_path / "state" / "ketter.db", chain)
    if backend == "postgres":
        # Time pinned by the tests, as for every backend; the database's
        # clock of a real node: tests/integration/test_postgres_store.py.
        return open_pg_job_store(request.getfixturevalue("pg_dsn"), chain, db_clock=False)
    return MemoryJobStore(chain)


@pytest.fixture(params=BACKENDS)
def job_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """A fresh, empty job store of each backend, unkeyed chain for node ``n1``."""
    store = make_store(request.param, tmp_path, AuditChain(node="n1"), request)
    yield store
    store.close()
