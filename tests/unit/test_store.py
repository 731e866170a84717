"""The job store: byte-exact paths, idempotent creation, migrations, the view."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

from peewee import SqliteDatabase

from ketter.jobs.create import NewJob, create_job, file_source_key, folder_source_key
from ketter.paths import readable
from ketter.store import open_store
from ketter.store.db import connect, pending_migrations, upgrade
from ketter.store.models import MODELS, Job, database

ODD_NAMES = [
    b"/mnt/in/caf\xe9-latin1.mov",  # not valid UTF-8
    "/mnt/in/Ame\u0301lie NFD.wav".encode(),
    "/mnt/in/Am\u00e9lie NFC.wav".encode(),
    b"/mnt/in/line\nbreak and  spaces .mxf",
    b"/mnt/in/" + b"x" * 255,
]


def test_invalid_utf8_paths_round_trip(store, job_store) -> None:
    for index, path in enumerate(ODD_NAMES):
        key = file_source_key("r", path, 1, 2, index)
        created = create_job(job_store,
                             NewJob("r", "copy", "file", path, key, 1, dest_path=path),
                             node="n", now=time.time())
        job = Job.get_by_id(created.job_id)
        assert bytes(job.source_path) == path
        assert bytes(job.dest_path) == path
        assert job.source_display == readable(path)
    shown = store.execute_sql("SELECT source FROM job_history ORDER BY job_id").fetchall()
    assert shown[0][0] == "/mnt/in/caf\\xe9-latin1.mov"


def test_create_is_idempotent_on_source_key(job_store) -> None:
    key = file_source_key("r", b"a.mov", 10, 20, 30)
    first = create_job(job_store, NewJob("r", "copy", "file", b"/in/a.mov", key, 10),
                       node="n", now=1.0)
    again = create_job(job_store, NewJob("r", "copy", "file", b"/in/a.mov", key, 10),
                       node="n", now=2.0)
    assert first.created and not again.created and first.job_id == again.job_id
    # Once terminal, the same identity may start a new job (requeue by change).
    Job.update(state="completed").where(Job.id == first.job_id).execute()
    third = create_job(job_store, NewJob("r", "copy", "file", b"/in/a.mov", key, 10),
                       node="n", now=3.0)
    assert third.created and third.job_id != first.job_id


def test_source_keys_distinguish_versions() -> None:
    base = file_source_key("r", b"a", 1, 2, 3)
    assert base != file_source_key("r", b"a", 1, 2, 4)  # another inode
    assert base != file_source_key("r2", b"a", 1, 2, 3)
    assert file_source_key("r", b"a1", 1, 2, 3) != file_source_key("r", b"a", 11, 2, 3)
    assert folder_source_key("r", b"f", "aa") != folder_source_key("r", b"f", "ab")


def _schema(db: SqliteDatabase) -> dict[str, object]:
    """Tables, columns and indexes, normalised for comparison."""
    out: dict[str, object] = {}
    tables = [r[0] for r in db.execute_sql(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
        "AND name != 'schema_migration'")]
    for table in sorted(tables):
        columns = db.execute_sql(f'PRAGMA table_info("{table}")').fetchall()
        indexes = {}
        for _, name, unique, _origin, partial in db.execute_sql(
                f'PRAGMA index_list("{table}")').fetchall():
            cols = [c[2] for c in db.execute_sql(f'PRAGMA index_info("{name}")')]
            sql = db.execute_sql("SELECT sql FROM sqlite_master WHERE name=?",
                                 (name,)).fetchone()[0]
            indexes[name] = (unique, partial, cols, sql)
        out[table] = (columns, indexes)
    return out


def test_migrations_equal_models(tmp_path: Path) -> None:
    migrated = connect(tmp_path / "migrated.db")
    # Later numbers (other changes) may follow; each is checked by the schema
    # comparison below.
    assert upgrade(migrated)[:3] == ["0001_initial", "0002_rollback_outcome",
                                    "0003_source_ctime_superseded"]
    assert pending_migrations(migrated) == []
    modelled = connect(tmp_path / "modelled.db")
    database.initialize(modelled)
    modelled.create_tables(MODELS)
    assert _schema(migrated) == _schema(modelled)
    views = migrated.execute_sql("SELECT name FROM sqlite_master WHERE type='view'").fetchall()
    assert views == [("job_history",)]
    assert upgrade(migrated) == []  # idempotent


def _upgrade_in_child(path: str, barrier) -> None:  # type: ignore[no-untyped-def]
    barrier.wait()
    db = connect(path)
    upgrade(db)
    db.close()


def test_concurrent_upgrades_are_safe(tmp_path: Path) -> None:
    path = str(tmp_path / "ketter.db")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    children = [ctx.Process(target=_upgrade_in_child, args=(path, barrier)) for _ in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    con = sqlite3.connect(path)
    # Every migration in the folder, each applied once (several are added in
    # parallel: the list is read from the folder, not pinned here).
    folder = Path(__file__).resolve().parents[2] / "ketter" / "store" / "migrations"
    shipped = sorted(p.stem for p in folder.glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert con.execute("SELECT name FROM schema_migration ORDER BY name").fetchall() == [
        (name,) for name in shipped]
    con.close()


def test_wal_and_sqlite3_cli_readable(tmp_path: Path) -> None:
    db = open_store(tmp_path / "ketter.db")
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    con = sqlite3.connect(tmp_path / "ketter.db")
    assert con.execute("SELECT COUNT(*) FROM job_history").fetchone() == (0,)
    con.close()
    db.close()


def test_writer_threads_take_turns_and_a_failed_transaction_lets_go(store) -> None:
    """StoreDatabase: threads of one process queue on a mutex for the write
    lock; a transaction that raises or commits releases it for the next."""
    import threading

    db = database.obj
    with contextlib.suppress(RuntimeError), db.atomic():
        db.execute_sql("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
        raise RuntimeError("rolled back")
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def holder() -> None:
        with db.atomic():
            db.execute_sql("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
            order.append("holder in")
            inside.set()
            release.wait(60)
            order.append("holder out")

    def waiter() -> None:
        with db.atomic():
            order.append("waiter in")
            db.execute_sql("INSERT INTO t VALUES (1)")

    a = threading.Thread(target=holder)
    a.start()
    assert inside.wait(60)
    b = threading.Thread(target=waiter)
    b.start()
    b.join(0.5)  # it cannot get in while the holder's transaction is open
    assert b.is_alive() and order == ["holder in"]
    release.set()
    a.join(60)
    b.join(60)
    assert not a.is_alive() and not b.is_alive()
    assert order == ["holder in", "holder out", "waiter in"]
    assert db.execute_sql("SELECT count(*) FROM t").fetchone()[0] == 1


def test_durable_commit_fsyncs_the_wal_after_releasing_the_write_lock(store, monkeypatch) -> None:
    """durable(): the commit is flushed (the WAL file is fsynced) before the
    block is left, and the flush happens after SQLite's write lock is
    released, so another writer is not held up by it."""
    from ketter.store import db as store_db

    db = database.obj
    wal = os.path.realpath(db.database + "-wal")
    seen: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def spying_fsync(fd: int) -> None:
        path = os.path.realpath(f"/proc/self/fd/{fd}")
        other = sqlite3.connect(db.database, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")  # fails at once if the lock is held
            other.execute("ROLLBACK")
            free = True
        except sqlite3.OperationalError:
            free = False
        finally:
            other.close()
        seen.append((path, free))
        real_fsync(fd)

    monkeypatch.setattr(store_db.os, "fsync", spying_fsync)
    flushes = db.wal_flush.flushes
    with store_db.durable(db):
        db.execute_sql("CREATE TABLE IF NOT EXISTS d (n INTEGER)")
        db.execute_sql("INSERT INTO d VALUES (1)")
        assert seen == []  # nothing is flushed before the commit
    assert seen == [(wal, True)]
    assert not db.in_transaction()
    # A lone durable commit runs its own flush (through the group commit).
    assert db.wal_flush.flushes == flushes + 1
    with store_db.durable(db):
        db.execute_sql("INSERT INTO d VALUES (2)")
    assert len(seen) == 2 and db.wal_flush.flushes == flushes + 2
