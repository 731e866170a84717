"""Shared fixtures: a fresh job store, config files written on the fly."""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from peewee import SqliteDatabase

from ketter.audit.chain import AuditChain
from ketter.store import open_store
from ketter.store.postgres.db import connect as pg_connect
from ketter.store.postgres.db import upgrade as pg_upgrade
from ketter.store.sqlite import SqliteJobStore
from tests.pg import Cluster, running_cluster

ROOT = Path(__file__).resolve().parent.parent
#: The command line as the units run it (ketter/__main__.py); ``-m ketter.cli.main``
#: printed a RuntimeWarning in every subprocess (the module is imported by
#: ``ketter.cli`` before it runs as ``__main__``).
KETTER = [sys.executable, "-m", "ketter"]


#: The migrated PostgreSQL database each test's database is copied from.
PG_TEMPLATE = "ketter_template"
_pg_databases = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throw-away PostgreSQL cluster for the test session (:mod:`tests.pg`),
    with a migrated template database; stopped when the session ends."""
    # Not under pytest's basetemp: every pytest session that starts (another
    # run on the machine, a nested one) resets /tmp/pytest-of-USER to 0700,
    # which took the server account's way to its data directory away in the
    # middle of a run (PANIC: could not open pg_control: Permission denied).
    home = Path(tempfile.mkdtemp(prefix="ketter-pg-"))
    try:
        with running_cluster(home / "cluster") as cluster:
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {PG_TEMPLATE}")
            db = pg_connect(cluster.dsn(PG_TEMPLATE))
            pg_upgrade(db)
            db.close()
            yield cluster
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_cluster: Cluster) -> str:
    """A fresh, migrated PostgreSQL database (a copy of the template): its DSN."""
    name = f"ketter_{next(_pg_databases)}"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {PG_TEMPLATE}")
    return pg_cluster.dsn(name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteDatabase]:
    """A migrated job store in a temporary state directory, bound to the models."""
    db = open_store(tmp_path / "state" / "ketter.db")
    yield db
    db.close()


@pytest.fixture
def job_store(store: SqliteDatabase) -> SqliteJobStore:
    """The job store (:class:`ketter.store.port.JobStore`) over the ``store``
    fixture's database, unkeyed chain for node ``test-node``."""
    return SqliteJobStore(store, AuditChain(node="test-node"))


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a YAML config (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "ketter.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for running `python -m ketter` in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("KETTER_CONFIG", None)
    env.update(extra)
    return env
