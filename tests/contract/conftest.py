"""The job-store contract: every test in this folder runs against every
implementation of :class:`ketter.store.port.JobStore` (huey's
``StorageTests`` shape): SQLite on a real file, the in-memory fake, and
PostgreSQL (#18) on a throw-away cluster this test session starts
(:mod:`tests.pg`: one cluster per session, a fresh database per test,
copied from a migrated template)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ketter.audit.chain import AuditChain
from ketter.store.memory import MemoryJobStore
from ketter.store.port import JobStore
from ketter.store.postgres import open_pg_job_store
from ketter.store.postgres.db import connect, upgrade
from ketter.store.sqlite import open_job_store
from tests.pg import Cluster, running_cluster

BACKENDS = ("sqlite", "memory", "postgres")
#: The migrated database each test's database is copied from.
TEMPLATE = "ketter_template"
_databases = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One PostgreSQL cluster for the test session, with a migrated template
    database; stopped when the session ends."""
    with running_cluster(tmp_path_factory.mktemp("pg") / "cluster") as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        db = connect(cluster.dsn(TEMPLATE))
        upgrade(db)
        db.close()
        yield cluster


def fresh_pg_dsn(cluster: Cluster) -> str:
    """A new database copied from the migrated template; its DSN."""
    name = f"ketter_{next(_databases)}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    return cluster.dsn(name)


def make_store(
    backend: str, tmp_path: Path, chain: AuditChain, request: pytest.FixtureRequest
) -> JobStore:
    if backend == "sqlite":
        return open_job_store(tmp_path / "state" / "ketter.db", chain)
    if backend == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        return open_pg_job_store(fresh_pg_dsn(cluster), chain)
    return MemoryJobStore(chain)


@pytest.fixture(params=BACKENDS)
def job_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """A fresh, empty job store of each backend, unkeyed chain for node ``n1``."""
    store = make_store(request.param, tmp_path, AuditChain(node="n1"), request)
    yield store
    store.close()
