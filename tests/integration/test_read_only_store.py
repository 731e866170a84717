"""A job store opened for reading only (``ketter audit verify``'s, the
inspect commands', a read-only PostgreSQL role's) refuses a batch's shared
commit with an error that says so, before any of it runs; nothing is
written. It used to fail on SQLite with an AttributeError from the writers'
machinery the read-only database does not have."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.store.port import JobStore
from ketter.store.postgres import open_pg_job_store
from ketter.store.sql.core import ReadOnlyStore
from ketter.store.sqlite import open_job_store, open_readonly_job_store
from tests.contract.seed import put_job


def _refuses_a_shared_commit(reader: JobStore, writer: JobStore, where: str) -> None:
    job = put_job(writer)
    ran: list[int] = []

    def item() -> None:
        ran.append(job)
        reader.append_event("detect", now=1.0, job_id=job)

    with pytest.raises(ReadOnlyStore, match="open for reading only") as refused:
        reader.commit_together([item, item])
    assert where in str(refused.value)
    with pytest.raises(ReadOnlyStore):  # one item: the path without a try whole
        reader.commit_together([item])
    assert ran == []  # refused before any item ran
    assert writer.events_after(0, limit=10) == []
    assert reader.get_job(job).state == "detected"  # its reads still work


def test_a_read_only_sqlite_store_refuses_a_shared_commit(tmp_path: Path) -> None:
    path = tmp_path / "ketter.db"
    writer = open_job_store(path, AuditChain(node="n1"))
    reader = open_readonly_job_store(path, AuditChain(node="n1", may_append=False))
    try:
        _refuses_a_shared_commit(reader, writer, str(path))
    finally:
        reader.close()
        writer.close()


def test_a_read_only_postgresql_store_refuses_a_shared_commit(pg_dsn: str) -> None:
    writer = open_pg_job_store(pg_dsn, AuditChain(node="n1"))
    reader = open_pg_job_store(
        pg_dsn, AuditChain(node="n1", may_append=False), migrate=False, read_only=True
    )
    try:
        _refuses_a_shared_commit(reader, writer, pg_dsn.rsplit("/", 1)[-1])
    finally:
        reader.close()
        writer.close()
