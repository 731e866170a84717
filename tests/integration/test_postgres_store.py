"""The job store on PostgreSQL beyond the contract suite (issue #18): the
migrations give the models' schema, two stores (two nodes' connections)
racing for one chain and one set of jobs, the queue on PostgresHuey.
On a throw-away cluster (``pg_dsn``, tests/pg.py)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ketter.audit.chain import AuditChain
from ketter.audit.verify import verify_db
from ketter.config.loader import parse_config
from ketter.config.schema import StoreConfig
from ketter.queue import build_queue
from ketter.store.models import MODELS, database
from ketter.store.postgres import PgJobStore, open_pg_job_store
from ketter.store.postgres.db import connect, pending_migrations, upgrade
from tests.contract.seed import put_job

# -- the schema ------------------------------------------------------------------


def _schema(dsn: str) -> dict[str, Any]:
    """Columns (name, type, nullable) and indexes (definition) of every table
    but the migrations' history, normalised for comparison."""
    with psycopg.connect(dsn) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM "
            "information_schema.columns WHERE table_schema = 'public' "
            "AND table_name NOT IN ('schema_migration', 'job_history') "
            "ORDER BY table_name, column_name"
        ).fetchall()
        indexes = conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'public' AND tablename != 'schema_migration' "
            "ORDER BY tablename, indexname"
        ).fetchall()
    return {"columns": columns, "indexes": indexes}


def test_migrations_give_the_models_schema(pg_cluster: Any, pg_dsn: str) -> None:
    name = "ketter_modelled"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    modelled = connect(pg_cluster.dsn(name))
    database.initialize(modelled)
    modelled.create_tables(MODELS)
    modelled.close()
    migrated, from_models = _schema(pg_dsn), _schema(pg_cluster.dsn(name))
    assert migrated["columns"] == from_models["columns"]
    assert migrated["indexes"] == from_models["indexes"]
    db = connect(pg_dsn)
    assert pending_migrations(db) == []
    assert upgrade(db) == []  # idempotent
    view = db.execute_sql("SELECT count(*) FROM job_history").fetchone()
    triggers = db.execute_sql(
        "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY tgname"
    ).fetchall()
    db.close()
    assert view == (0,)
    assert triggers == [("job_counts_delete",), ("job_counts_insert",), ("job_counts_update",)]


def test_job_history_reads_as_on_sqlite(pg_dsn: str) -> None:
    store = open_pg_job_store(pg_dsn, AuditChain(node="n1"))
    job_id = put_job(store, created_at=1_700_000_000.25, transfer_seconds=2.0, transfer_bytes=10**7)
    row = store.db.execute_sql(
        "SELECT created, seconds, mb_per_s FROM job_history WHERE job_id = %s", (job_id,)
    ).fetchone()
    store.close()
    assert row == ("2023-11-14T22:13:20.250Z", 2.0, 5.0)


# -- two nodes on one database ----------------------------------------------------


@pytest.fixture
def two_nodes(pg_dsn: str) -> Iterator[tuple[PgJobStore, PgJobStore]]:
    first = open_pg_job_store(pg_dsn, AuditChain(node="a"))
    second = open_pg_job_store(pg_dsn, AuditChain(node="b"), migrate=False)
    yield first, second
    first.close()
    second.close()


def _in_threads(work: list[Any]) -> None:
    errors: list[BaseException] = []

    def run(target: Any) -> None:
        try:
            target()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)


def test_appends_from_two_nodes_keep_one_chain(two_nodes: tuple[PgJobStore, PgJobStore]) -> None:
    def appender(store: PgJobStore, job_id: int) -> Any:
        def run() -> None:
            for _ in range(25):
                with store.transaction():
                    store.append_event("detect", now=1.0, job_id=job_id)
            store.release_thread()

        return run

    _in_threads([appender(store, i) for i, store in enumerate(two_nodes * 2)])
    first = two_nodes[0]
    seqs = [e.id for e in first.events_after(0, limit=1000)]
    assert seqs == list(range(1, 101))
    report = verify_db(first)
    assert report.ok, report.problems


def test_racing_claims_take_each_job_once(two_nodes: tuple[PgJobStore, PgJobStore]) -> None:
    first = two_nodes[0]
    jobs = {put_job(first) for _ in range(40)}
    taken: list[tuple[str, int]] = []
    lock = threading.Lock()

    def claimer(store: PgJobStore, owner: str) -> Any:
        def run() -> None:
            while True:
                got = store.claim_next({"r": 0}, hint=None, owner=owner, now=10.0, ttl=30.0)
                if got is None:
                    break
                with lock:
                    taken.append((owner, got.row.id))
            store.release_thread()

        return run

    nodes = enumerate(two_nodes * 2)
    _in_threads([claimer(store, f"{store.chain.node}/{i}") for i, store in nodes])
    assert sorted(job for _, job in taken) == sorted(jobs)
    assert verify_db(first).ok


def test_racing_claims_keep_max_parallel(two_nodes: tuple[PgJobStore, PgJobStore]) -> None:
    first = two_nodes[0]
    for _ in range(20):
        put_job(first)
    taken: list[int] = []
    lock = threading.Lock()

    def claimer(store: PgJobStore, owner: str) -> Any:
        def run() -> None:
            for _ in range(10):
                got = store.claim_next({"r": 3}, hint=None, owner=owner, now=10.0, ttl=30.0)
                if got is not None:
                    with lock:
                        taken.append(got.row.id)
            store.release_thread()

        return run

    nodes = enumerate(two_nodes * 2)
    _in_threads([claimer(store, f"{store.chain.node}/{i}") for i, store in nodes])
    assert len(taken) == len(set(taken)) == 3


def test_two_nodes_pausing_a_route_pause_it_once(
    two_nodes: tuple[PgJobStore, PgJobStore],
) -> None:
    outcomes: list[bool] = []
    start = threading.Barrier(4)

    def pauser(store: PgJobStore) -> Any:
        def run() -> None:
            start.wait(30)
            outcomes.append(store.pause_route("r", "share down", now=5.0))
            store.release_thread()

        return run

    _in_threads([pauser(store) for store in two_nodes * 2])
    first = two_nodes[0]
    events = [e.event for e in first.events_after(0, limit=100)]
    assert sorted(outcomes) == [False, False, False, True]
    assert events == ["route_paused"]


# -- the queue --------------------------------------------------------------------


def test_the_queue_rings_on_postgres_huey(pg_dsn: str, tmp_path: Path) -> None:
    config = parse_config(f"state_dir: {tmp_path}\n")
    config = dataclasses.replace(config, store=StoreConfig(backend="postgresql", dsn=pg_dsn))
    queue = build_queue(config)
    try:
        queue.ring(7)
        queue.ring_many([8, 9])
        assert queue.pending() == 3
        rung = [queue.huey.dequeue().args[0] for _ in range(3)]
        assert sorted(rung) == [7, 8, 9]
        assert queue.pending() == 0
        assert not (tmp_path / "queue.db").exists()
    finally:
        queue.close()


# -- the composition root ----------------------------------------------------------


def test_the_node_opens_the_store_its_config_names(pg_dsn: str, tmp_path: Path) -> None:
    """``Node.from_config`` is the one place a backend is chosen (the loader
    still refuses ``postgresql`` for a whole node: the config is built here)."""
    from ketter.node import Node

    (tmp_path / "pw").write_text("unused-by-trust-auth\n")
    config = parse_config(f"state_dir: {tmp_path}\nnode: n1\n")
    store = StoreConfig(backend="postgresql", dsn=pg_dsn, password_file=str(tmp_path / "pw"))
    node = Node.from_config(dataclasses.replace(config, store=store), "enqueue")
    try:
        assert isinstance(node.store, PgJobStore)
        assert node.store.path == pg_dsn  # no password in it
        with node.store.transaction():
            node.store.append_event("detect", now=1.0, job_id=1)
        assert node.store.last_event() is not None
    finally:
        node.close()
    assert not (tmp_path / "ketter.db").exists()


def test_the_migrations_go_down_and_up_again(pg_dsn: str) -> None:
    import importlib.resources

    from playhouse.migrations import Runner

    db = connect(pg_dsn)
    with importlib.resources.as_file(
        importlib.resources.files("ketter.store.migrations")
    ) as directory:
        runner = Runner(db, directory=str(directory))
        applied = [m.name for m in runner.status() if m.applied]
        assert runner.down(target=applied[0]) == applied[::-1]
        assert upgrade(db) == applied
    db.close()
