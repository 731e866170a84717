"""The job-store contract: every test in this folder runs against every
implementation of :class:`ketter.store.port.JobStore` (huey's
``StorageTests`` shape): SQLite on a real file, and the in-memory fake. A
PostgreSQL store joins by adding one parameter here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.store.memory import MemoryJobStore
from ketter.store.port import JobStore
from ketter.store.sqlite import open_job_store

BACKENDS = ("sqlite", "memory")


def make_store(backend: str, tmp_path: Path, chain: AuditChain) -> JobStore:
    if backend == "sqlite":
        return open_job_store(tmp_path / "state" / "ketter.db", chain)
    return MemoryJobStore(chain)


@pytest.fixture(params=BACKENDS)
def job_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """A fresh, empty job store of each backend, unkeyed chain for node ``n1``."""
    store = make_store(request.param, tmp_path, AuditChain(node="n1"))
    yield store
    store.close()
