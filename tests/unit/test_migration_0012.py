"""Migration 0012 on a store that has run: ``job_counts.bytes`` is filled
from the jobs already there, and the triggers then keep it equal to a sum of
``jobs.size`` per route and state whatever writes them (a size that changes,
a move, a delete); ``down`` gives back the 0010 triggers and indexes."""

from __future__ import annotations

import importlib
from pathlib import Path

from peewee import SqliteDatabase
from playhouse.migrate import SqliteMigrator

from ketter.store.db import connect, upgrade

M0012 = importlib.import_module("ketter.store.migrations.0012_history_indexes")


def _insert(db: SqliteDatabase, job_id: int, route: str, state: str, size: int) -> None:
    db.execute_sql(
        "INSERT INTO jobs (id, route, mode, kind, source_path, source_display, source_key, "
        "size, file_count, state, attempt, priority, bytes_done, node, created_at, updated_at) "
        "VALUES (?, ?, 'copy', 'file', x'61', 'a', ?, ?, 1, ?, 1, 0, 0, 'n', 1, 1)",
        (job_id, route, f"k{job_id}", size, state),
    )


def _kept(db: SqliteDatabase) -> list[tuple[str, str, int, int]]:
    return db.execute_sql(
        "SELECT route, state, jobs, bytes FROM job_counts WHERE jobs > 0 ORDER BY 1, 2"
    ).fetchall()


def _truth(db: SqliteDatabase) -> list[tuple[str, str, int, int]]:
    return db.execute_sql(
        "SELECT route, state, COUNT(*), SUM(size) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()


def _indexes(db: SqliteDatabase) -> set[str]:
    return {r[0] for r in db.execute_sql("SELECT name FROM sqlite_master WHERE type = 'index'")}


def test_backfill_then_triggers_keep_the_bytes(tmp_path: Path) -> None:
    db = connect(tmp_path / "ketter.db")
    upgrade(db)
    M0012.down(SqliteMigrator(db), db)  # a store from before 0012
    assert {"jobs_state_due"} <= _indexes(db)
    assert not {"jobs_state_id", "jobs_created", "events_delete_source"} & _indexes(db)
    _insert(db, 1, "a", "completed", 500)
    _insert(db, 2, "a", "completed", 100)
    _insert(db, 3, "b", "detected", 7)
    M0012.up(SqliteMigrator(db), db)
    assert _kept(db) == _truth(db) == [("a", "completed", 2, 600), ("b", "detected", 1, 7)]
    assert {"jobs_state_id", "jobs_route_id", "jobs_created", "events_delete_source"} <= _indexes(
        db
    )
    assert "jobs_state_due" not in _indexes(db)
    _insert(db, 4, "b", "detected", 0)
    db.execute_sql("UPDATE jobs SET size = 40 WHERE id = 4")  # sized once inspected
    db.execute_sql("UPDATE jobs SET state = 'validated', size = 9 WHERE id = 3")
    db.execute_sql("UPDATE jobs SET error = 'x' WHERE id = 2")  # nothing counted changes
    db.execute_sql("UPDATE jobs SET route = 'c' WHERE id = 2")
    db.execute_sql("DELETE FROM jobs WHERE id = 1")
    assert _kept(db) == _truth(db)
    assert ("b", "validated", 1, 9) in _kept(db)
