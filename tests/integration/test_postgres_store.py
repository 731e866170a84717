"""The job store on PostgreSQL beyond the contract suite (issue #18): the
migrations give the models' schema, two stores (two nodes' connections)
racing for one chain and one set of jobs, the queue on PostgresHuey.
On a throw-away cluster (``pg_dsn``, tests/pg.py)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee
import psycopg
import pytest

from ketter.audit.chain import AuditChain
from ketter.audit.verify import verify_db
from ketter.config.loader import parse_config
from ketter.config.schema import StoreConfig
from ketter.queue import build_queue
from ketter.store import guard
from ketter.store.models import MODELS, database
from ketter.store.postgres import PgJobStore, open_pg_job_store
from ketter.store.postgres import db as pg_db
from ketter.store.postgres.db import CHAIN_LOCK, connect, pending_migrations, upgrade
from ketter.store.postgres.errors import FlushFailed
from tests.contract.seed import put_job
from tests.integration.serializer_faults import refusing_message

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


def test_a_claims_search_walks_the_active_jobs_in_order(pg_dsn: str) -> None:
    """With a queue of waiting jobs, a history of finished ones and some
    running: both claim searches read ``jobs_claim_order`` in order and stop
    (no sort of every waiting job under the write turn, as before 0014)."""
    from ketter.store.sql.leases import _CLAIMABLE

    store = open_pg_job_store(pg_dsn, AuditChain(node="n1"))
    now = time.time()
    rows = [
        {
            "route": "r",
            "mode": "copy",
            "kind": "file",
            "source_path": b"/src/%d" % i,
            "source_key": f"key-{i}",
            "source_display": f"/src/{i}",
            "file_count": 1,
            "size": 65536,
            "source_size": 65536,
            "state": "detected",
            "priority": 0,
            "node": "n1",
            "created_at": now,
            "updated_at": now,
            "next_attempt_at": now,
            "attempt": 0,
            "bytes_done": 0,
        }
        for i in range(3000)
    ]
    with store.transaction():
        assert None not in store.add_jobs(rows)
    store.db.execute_sql("UPDATE jobs SET state = 'completed' WHERE id <= 1000")
    store.db.execute_sql(
        "UPDATE jobs SET state = 'transferring', claim = 'c', lease_owner = 'o', "
        "lease_expires_at = %s WHERE id > 1000 AND id <= 1100",
        (now + 100,),
    )
    store.db.execute_sql("ANALYZE jobs")
    searches = (
        f"SELECT priority, id, route FROM jobs WHERE {_CLAIMABLE} AND route IN (%s) "
        "ORDER BY priority DESC, id LIMIT 64 FOR UPDATE SKIP LOCKED",
        f"SELECT * FROM jobs WHERE {_CLAIMABLE} AND route = %s AND state = 'detected' "
        "AND lease_owner IS NULL AND kind = 'file' AND mode = 'copy' AND source_size <= 1048576 "
        "ORDER BY priority DESC, id LIMIT 15 FOR UPDATE SKIP LOCKED",
    )
    later = _db_now(pg_dsn) + 1.0  # the claims come after the jobs were written
    try:
        for search in searches:
            plan = "\n".join(
                row[0]
                for row in store.db.execute_sql(
                    "EXPLAIN " + search.replace("?", "%s"), (later, later, "r")
                ).fetchall()
            )
            assert "Index Scan using jobs_claim_order" in plan, plan
            assert "Sort" not in plan, plan
    finally:
        store.close()


def test_asking_whether_any_job_is_claimable_walks_the_claim_order(pg_dsn: str) -> None:
    """A doorbell's first question (is any job of these routes claimable?)
    over several routes with a backlog behind a long history: the planner,
    left to itself, scanned the whole table from its finished history for
    the ``LIMIT 1`` (11 ms with 60,000 finished jobs); asked in claim order
    it walks ``jobs_claim_order`` and stops at the first waiting job."""
    store = open_pg_job_store(pg_dsn, AuditChain(node="n1"))
    now = time.time()
    insert = (
        "INSERT INTO jobs (route, mode, kind, source_path, source_display, source_key, "
        "state, node, created_at, updated_at, size, file_count, attempt, priority, "
        "bytes_done, source_size) SELECT (ARRAY['a', 'b', 'c'])[1 + g %% 3], 'copy', 'file', "
        "convert_to('/s/' || g, 'UTF8'), 'x', 'k' || g, %s, 'n', %s, %s, 0, 1, 0, 0, 0, 1 "
        "FROM generate_series(%s::int, %s::int) AS g"
    )
    sent: list[tuple[str, tuple[Any, ...]]] = []
    real = store._exec

    def recording(sql: str, params: Any = ()) -> Any:
        sent.append((store.dialect.sql(sql), tuple(params)))
        return real(sql, params)

    try:
        store.db.execute_sql(insert, ("completed", now, now, 1, 60_000))
        store.db.execute_sql(insert, ("detected", now, now, 60_001, 68_700))
        store.db.execute_sql("VACUUM ANALYZE jobs")
        store._exec = recording  # type: ignore[method-assign]
        assert store._first_claimable(["a", "b", "c"], now) == 60_001
        ((sql, params),) = sent
        plan = "\n".join(
            row[0] for row in store.db.execute_sql("EXPLAIN ANALYZE " + sql, params).fetchall()
        )
        assert "Index Scan using jobs_claim_order" in plan, plan
        assert "Seq Scan" not in plan, plan
    finally:
        store._exec = real  # type: ignore[method-assign]
        store.close()


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


def test_durable_commits_and_flushes_wait_for_the_wal_ordinary_ones_do_not(
    pg_cluster: Any, pg_dsn: str
) -> None:
    """As on SQLite: an ordinary commit does not wait for the WAL flush, a
    durable one does, and ``sync()`` flushes every commit before it. The
    server's own flush is made slow (``wal_writer_delay`` 10 s) so that only
    the store's flush can have flushed the ordinary commit."""
    store = open_pg_job_store(pg_dsn, AuditChain(node="a"))
    admin = psycopg.connect(pg_cluster.dsn(), autocommit=True)

    def setting() -> str:
        return str(
            store.db.execute_sql("SELECT current_setting('synchronous_commit')").fetchone()[0]
        )

    def flushed_past(lsn: str) -> bool:
        row = admin.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (lsn,)).fetchone()
        return bool(row[0])

    try:
        admin.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        admin.execute("SELECT pg_reload_conf()")
        with store.transaction():
            assert setting() == "off"
            store.append_event("detect", now=1.0, job_id=1)
        with store.transaction(durable=True):
            # Committed as an ordinary one (the write turn let go before the
            # disk is waited for), then flushed in the same round trip.
            assert setting() == "off"
            store.append_event("detect", now=2.0, job_id=1)
            # The commit record comes after this point of the WAL, and the
            # flush's after it (the WAL writer is 10 s away).
            before_commit = admin.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        assert flushed_past(before_commit)
        with store.transaction():
            store.append_event("detect", now=3.0, job_id=1)
        ordinary_end = admin.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        store.sync()
        assert flushed_past(ordinary_end)
        with pytest.raises(RuntimeError, match="between transactions"), store.transaction():
            store.sync()
        assert [e.id for e in store.events_after(0, limit=10)] == [1, 2, 3]
    finally:
        admin.execute("ALTER SYSTEM RESET wal_writer_delay")
        admin.execute("SELECT pg_reload_conf()")
        admin.close()
        store.close()


def test_a_durable_commit_whose_flush_fails_after_it_held_says_it_is_committed(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A durable transaction sends its WAL flush with its ``COMMIT``. When the
    flush fails after the ``COMMIT`` held, the error must not say that
    nothing was committed (the caller would act on a state the store no
    longer has): it is :class:`FlushFailed`, a store outage (the routes
    pause), and the connection stays usable."""
    store = open_pg_job_store(pg_dsn, AuditChain(node="a"))
    try:
        monkeypatch.setattr(pg_db, "_COMMIT_THEN_FLUSH", "COMMIT; BEGIN; SELECT 1/0; COMMIT")
        with pytest.raises(FlushFailed) as failed, store.transaction(durable=True):
            store.append_event("detect", now=1.0, job_id=1)
        assert guard.is_unwritable_error(failed.value)
        assert [e.id for e in store.events_after(0, limit=10)] == [1]
        monkeypatch.undo()
        with store.transaction(durable=True):
            store.append_event("detect", now=2.0, job_id=1)
        assert [e.id for e in store.events_after(0, limit=10)] == [1, 2]
        assert verify_db(store).ok
    finally:
        store.close()


def test_a_shared_commit_whose_connection_broke_commits_nothing(pg_dsn: str) -> None:
    """A batch's shared commit runs each job's steps in a savepoint and takes
    an item's error for that job's refusal. When the error is the connection
    breaking, the server has rolled the whole transaction back: its commit
    must fail, not reconnect and "commit" on a new connection (the earlier
    jobs' steps, a move's placement record among them, were reported held
    and were not)."""
    store = open_pg_job_store(pg_dsn, AuditChain(node="a"))
    try:

        def first() -> None:
            store.append_event("place", now=1.0, job_id=1)

        def second() -> None:
            store.db.execute_sql("SELECT pg_terminate_backend(pg_backend_pid())")

        with pytest.raises(psycopg.OperationalError) as lost:
            store.commit_together([first, second], durable=True)
        assert guard.is_unwritable_error(lost.value)
        assert store.events_after(0, limit=10) == []
        # A transaction a failed statement aborted (its error caught) is not
        # committed either: PostgreSQL would take its COMMIT for a ROLLBACK.
        with pytest.raises(psycopg.errors.InFailedSqlTransaction), store.transaction():
            store.append_event("detect", now=1.5, job_id=1)
            with pytest.raises(peewee.DatabaseError):
                store.db.execute_sql("SELECT 1/0")
        assert store.events_after(0, limit=10) == []
        with store.transaction():
            store.append_event("detect", now=2.0, job_id=1)
        assert [e.event for e in store.events_after(0, limit=10)] == ["detect"]
    finally:
        store.close()


def test_a_begin_that_fails_waiting_for_the_write_turn_leaves_the_connection_usable(
    pg_dsn: str,
) -> None:
    """``BEGIN`` and the write turn go in one message: when the lock's wait
    fails (a lock timeout here; a cancel, a statement timeout), the
    transaction the server opened is rolled back, and the thread's next
    transaction works (it failed for ever: "current transaction is
    aborted")."""
    store = open_pg_job_store(pg_dsn, AuditChain(node="a"))
    holder = psycopg.connect(pg_dsn)  # a transaction open: holds the turn
    try:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK,))
        store.db.execute_sql("SET lock_timeout = '200ms'")
        with pytest.raises(Exception, match="lock timeout"), store.transaction():
            pass
        holder.rollback()
        store.db.execute_sql("SET lock_timeout = 0")
        with store.transaction():
            store.append_event("detect", now=1.0, job_id=1)
        store.sync()
        assert [e.id for e in store.events_after(0, limit=5)] == [1]
    finally:
        holder.close()
        store.close()


def test_a_doorbell_with_nothing_to_claim_does_not_wait_for_the_write_turn(
    pg_dsn: str,
) -> None:
    """Most doorbells find their job taken by a batch already: they look
    without the write turn first, so another node holding it for long does
    not make them queue. A claimable job still waits for the turn."""
    store = open_pg_job_store(pg_dsn, AuditChain(node="a"))
    holder = psycopg.connect(pg_dsn)
    taken = put_job(store, state="transferring", claim="c1", lease_owner="other")
    store.db.execute_sql(
        "UPDATE jobs SET lease_expires_at = EXTRACT(EPOCH FROM now()) + 600 WHERE id = %s",
        (taken,),
    )
    put_job(store, route="other")  # a fresh job of another route
    try:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK,))
        store.db.execute_sql("SET lock_timeout = '2s'")
        began = time.monotonic()
        got = store.claim_next({"r": 0}, hint=taken, owner="a", now=time.time(), ttl=30.0)
        assert got is None
        assert time.monotonic() - began < 1.5  # it did not wait for the turn
        with pytest.raises(Exception, match="lock timeout"):  # it waits for the turn
            store.claim_next({"other": 0}, hint=None, owner="a", now=time.time(), ttl=30.0)
    finally:
        holder.close()
        store.close()


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


def test_a_ring_wakes_a_listening_worker(pg_dsn: str, tmp_path: Path) -> None:
    """The enqueue's one statement (the row and its ``NOTIFY``) wakes a
    consumer blocked on ``LISTEN``, as huey's own enqueue does."""
    config = parse_config(f"state_dir: {tmp_path}\n")
    config = dataclasses.replace(config, store=StoreConfig(backend="postgresql", dsn=pg_dsn))
    queue = build_queue(config)
    channel = queue.huey.storage.channel
    listener = psycopg.connect(pg_dsn, autocommit=True)
    try:
        listener.execute(f'LISTEN "{channel}"')
        queue.ring(11)
        woken = list(listener.notifies(timeout=30, stop_after=1))
        assert [n.channel for n in woken] == [channel]
        task = queue.huey.dequeue()
        assert task.args[0] == 11
        # No revocation to look for (two round trips per doorbell spared):
        # a job is cancelled in the job store.
        assert not queue.huey.is_revoked(task)
        with pytest.raises(NotImplementedError, match="ketter cancel"):
            queue.huey.revoke(task)
    finally:
        listener.close()
        queue.close()


def test_a_burst_of_rings_is_one_statement_in_order_and_wakes_a_listener(
    pg_dsn: str, tmp_path: Path
) -> None:
    """The watcher's burst (``ring_many``) goes in as one statement: every
    message, in order, and a ``NOTIFY``; a burst that fails halfway sends
    none (the sweep rings for those jobs)."""
    config = parse_config(f"state_dir: {tmp_path}\n")
    config = dataclasses.replace(config, store=StoreConfig(backend="postgresql", dsn=pg_dsn))
    queue = build_queue(config)
    channel = queue.huey.storage.channel
    listener = psycopg.connect(pg_dsn, autocommit=True)
    watcher = psycopg.connect(pg_dsn, autocommit=True)
    try:
        listener.execute(f'LISTEN "{channel}"')
        queue.ring_many(list(range(21, 71)))
        # One transaction wrote every row (the server's id of the writer).
        table = queue.huey.storage.table_task
        writers = watcher.execute(f"SELECT count(DISTINCT xmin::text) FROM {table}").fetchone()
        assert writers == (1,)
        woken = list(listener.notifies(timeout=30, stop_after=1))
        assert [n.channel for n in woken] == [channel]
        assert queue.pending() == 50
        assert [queue.huey.dequeue().args[0] for _ in range(50)] == list(range(21, 71))

        with refusing_message(queue, 3), pytest.raises(OSError):
            queue.ring_many([1, 2, 3, 4])
        assert queue.pending() == 0
        queue.ring(5)  # alone, outside a burst: at once
        assert queue.pending() == 1
    finally:
        listener.close()
        watcher.close()
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


# -- leases on the database's clock -------------------------------------------------


def _db_now(dsn: str) -> float:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT EXTRACT(EPOCH FROM now())::double precision").fetchone()
    assert row is not None
    return float(row[0])


def _lease_expiry(dsn: str, job_id: int) -> float:
    """The job's lease expiry as the database has it."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT lease_expires_at FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return float(row[0])


def test_leases_are_set_and_compared_on_the_database_clock(pg_dsn: str) -> None:
    # Two nodes whose clocks are wrong in opposite directions: one in 1970,
    # one a day ahead. Neither clock decides a lease.
    behind = open_pg_job_store(pg_dsn, AuditChain(node="behind"))
    ahead = open_pg_job_store(pg_dsn, AuditChain(node="ahead"), migrate=False)
    day = 86_400.0
    try:
        job_id = put_job(behind)
        before = _db_now(pg_dsn)
        got = behind.claim_next({"r": 0}, hint=job_id, owner="behind/1", now=0.0, ttl=600.0)
        after = _db_now(pg_dsn)
        assert got is not None
        expires = behind.get_job(job_id).lease_expires_at
        assert before + 600.0 <= expires <= after + 600.0
        assert got.row.lease_expires_at == expires  # the row as the claim left it
        # A day ahead, the lease is still live: no claim, nothing expired.
        now = time.time() + day
        assert ahead.claim_next({"r": 0}, hint=job_id, owner="ahead/1", now=now, ttl=600.0) is None
        assert ahead.expired_lease_count(now) == 0
        assert ahead.due_job_ids({"r": 0}, now=now, limit=10) == []
        assert ahead.lease_clock(now) < now - day / 2
        # The renewal of the node in 1970 is as long as the ttl, from now.
        assert behind.renew_lease(job_id, got.claim, now=0.0, ttl=900.0)
        assert behind.get_job(job_id).lease_expires_at >= before + 900.0
        # What a batch's one claim check reads (ketter.jobs.fence): the
        # lease's time left on the database's clock, whatever the node's.
        expires, read_from = _lease_expiry(pg_dsn, job_id), _db_now(pg_dsn)
        (left,) = ahead.leases_held({job_id: got.claim}, now=now).values()
        assert expires - _db_now(pg_dsn) <= left <= expires - read_from
        # Let run out (on the database's clock), the node in 1970 sees it
        # expired and takes it over.
        assert behind.renew_lease(job_id, got.claim, now=0.0, ttl=-1.0)
        assert behind.expired_lease_count(0.0) == 1
        again = behind.claim_next({"r": 0}, hint=job_id, owner="behind/2", now=0.0, ttl=60.0)
        assert again is not None and again.recovered and again.previous_owner == "behind/1"
        # A caller-clock store (the contract suite's) would have seen it
        # otherwise: the difference is the clock, nothing else.
        pinned = open_pg_job_store(pg_dsn, AuditChain(node="pinned"), migrate=False, db_clock=False)
        try:
            assert pinned.expired_lease_count(time.time() + day) == 1
        finally:
            pinned.close()
    finally:
        behind.close()
        ahead.close()


def test_the_read_model_shows_running_jobs_by_the_database_clock(pg_dsn: str) -> None:
    from ketter.store.postgres.read import open_read

    store = open_pg_job_store(pg_dsn, AuditChain(node="n1"))
    try:
        job_id = put_job(store, state="transferring")
        assert store.claim_next({"r": 0}, hint=job_id, owner="n1/1", now=0.0, ttl=600.0)
    finally:
        store.close()
    read = open_read(pg_dsn)
    try:
        for now in (0.0, time.time(), time.time() + 86_400.0):
            assert [job.job_id for job in read.status(now).running] == [job_id], now
    finally:
        read.close()


# -- outages: the same "store unavailable" as SQLite's unwritable store ------------


def test_a_dropped_connection_is_an_outage_and_the_store_reconnects(
    pg_dsn: str, tmp_path: Path
) -> None:
    from ketter.store.guard import is_unwritable_error

    store = open_pg_job_store(
        pg_dsn, AuditChain(node="n1"), status_path=str(tmp_path / "ketter.db")
    )
    guard = store.guard
    assert guard is not None
    try:
        job_id = put_job(store)

        def drop() -> None:
            pid = store.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
            with psycopg.connect(pg_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        # Outside a transaction, then inside one.
        for in_transaction in (False, True):
            drop()
            with pytest.raises(Exception) as caught:
                if in_transaction:
                    with store.transaction():
                        store.find_job(job_id)
                else:
                    store.find_job(job_id)
            exc = caught.value
            assert guard.is_unwritable(exc), repr(exc)
            assert is_unwritable_error(exc), repr(exc)  # the workers' triage: Stop.STORE
            assert guard.write_failed(exc)  # the first failure of this outage
            assert guard.problem is not None and "unavailable" in guard.problem
            assert guard.probe()
            assert guard.write_ok() is True
            # This thread's broken connection is dropped: the next call connects.
            assert store.get_job(job_id).id == job_id
            with store.transaction():
                assert store.find_job(job_id) is not None
    finally:
        store.close()


def test_deadlocks_and_serialization_failures_count_as_outages() -> None:
    from ketter.store.postgres.errors import is_unavailable

    assert is_unavailable(psycopg.errors.DeadlockDetected("deadlock detected"))
    assert is_unavailable(psycopg.errors.SerializationFailure("could not serialize"))
    assert is_unavailable(psycopg.errors.AdminShutdown("terminating connection"))
    assert is_unavailable(psycopg.errors.DiskFull("no space"))
    assert is_unavailable(psycopg.OperationalError("server closed the connection"))
    # The job's own or Ketter's bugs are not the store's outage.
    assert not is_unavailable(psycopg.errors.UniqueViolation("duplicate key"))
    assert not is_unavailable(psycopg.errors.UndefinedColumn("no such column"))
    assert not is_unavailable(ValueError("x"))


def test_every_connection_notices_a_vanished_host_unless_the_dsn_says_otherwise(
    pg_dsn: str,
) -> None:
    """libpq's keepalives and tcp_user_timeout on the job store's connection
    (tests/integration/test_postgres_vanished_host.py shows what they do);
    a value the operator put in the DSN wins."""
    from ketter.store.postgres.db import LIVENESS

    def options(dsn: str) -> dict[str, str]:
        db = connect(dsn)
        try:
            info = db.connection().pgconn.info
            return {o.keyword.decode(): (o.val or b"").decode() for o in info}
        finally:
            db.close()

    plain = options(pg_dsn)
    assert {k: plain[k] for k in LIVENESS} == {k: str(v) for k, v in LIVENESS.items()}
    own = options(f"{pg_dsn}?connect_timeout=60&tcp_user_timeout=5000")
    assert (own["connect_timeout"], own["tcp_user_timeout"]) == ("60", "5000")
    assert own["keepalives_idle"] == str(LIVENESS["keepalives_idle"])


def _job_columns(key: str, now: float) -> dict[str, Any]:
    """A new job's row as the watcher writes it (ketter.jobs.create): due at
    its creation, on the writer's clock."""
    return {
        "route": "r",
        "mode": "copy",
        "kind": "file",
        "source_path": b"/src/" + key.encode(),
        "source_display": "/src/" + key,
        "source_key": key,
        "size": 10,
        "file_count": 1,
        "state": "detected",
        "attempt": 0,
        "priority": 0,
        "bytes_done": 0,
        "node": "ahead",
        "created_at": now,
        "updated_at": now,
        "next_attempt_at": now,
    }


@pytest.mark.parametrize("skew", [3.0, -3.0])
def test_due_times_written_by_a_node_off_the_clock_are_on_the_database_clock(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    """A node whose clock runs 3 s ahead of the server's (or behind) writes
    a new job's, a released job's and a let-go job's due time as "now" on
    its clock: each is "now" on the database's clock, claimable at once.
    Before, a node ahead wrote them in the database's future: the job's
    doorbell found it not due and the job waited for the sweep (or as long
    as the clock was off)."""
    ahead = open_pg_job_store(pg_dsn, AuditChain(node="ahead"))
    other = open_pg_job_store(pg_dsn, AuditChain(node="other"), migrate=False)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew)

    def on_time(job_id: int) -> bool:
        due = ahead.get_job(job_id).next_attempt_at
        return due is not None and abs(due - _db_now(pg_dsn)) < 1.0

    try:
        now = time.time()
        with ahead.transaction():
            created = ahead.add_job(_job_columns("new", now))
            (batch,) = ahead.add_jobs([_job_columns("burst", now)])  # a burst of one
            pair = ahead.add_jobs([_job_columns("a", now), _job_columns("b", now)])
        assert created is not None and batch is not None and None not in pair
        for job_id in (created, batch, *pair):
            assert on_time(job_id), job_id  # moved once, not twice
        taken = other.claim_next({"r": 0}, hint=created, owner="other/1", now=real(), ttl=60.0)
        assert taken is not None and taken.row.id == created
        # Released (a graceful stop) by the node ahead: due at once again.
        got = ahead.claim_next({"r": 0}, hint=batch, owner="ahead/1", now=now, ttl=60.0)
        assert got is not None and got.row.id == batch
        assert ahead.release_lease(batch, got.claim, now=time.time(), reason="stop")
        again = other.claim_next({"r": 0}, hint=batch, owner="other/2", now=real(), ttl=60.0)
        assert again is not None and again.row.id == batch
        # Let go (a rollback that failed) with no delay: due at once too.
        assert ahead.let_go(batch, again.claim, next_attempt_at=time.time())
        assert on_time(batch)
    finally:
        ahead.close()
        other.close()


def test_the_sweeps_due_list_neither_takes_nor_skips_row_locks(pg_dsn: str) -> None:
    """The sweep's list of due jobs reads without row locks: a claim's row
    locked meanwhile is still listed (rung if its claim fails), and the
    list locks nothing a concurrent claim would then skip (its doorbell
    unused)."""
    store = open_pg_job_store(pg_dsn, AuditChain(node="n1"))
    try:
        job_id = put_job(store)
        with psycopg.connect(pg_dsn) as conn:  # a claimant holding the row
            conn.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
            assert store.due_job_ids({"r": 0}, now=time.time(), limit=10) == [job_id]
            conn.rollback()
    finally:
        store.close()
