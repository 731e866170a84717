"""Migration 0010 on a store that has run: its jobs are counted per route and
state, its terminal jobs fill ``counters`` (an upgraded node does not start
its totals from nothing), and the triggers then keep ``job_counts`` equal to
a count of ``jobs`` whatever writes them; ``down`` restores the old index."""

from __future__ import annotations

import importlib
from pathlib import Path

from peewee import SqliteDatabase
from playhouse.migrate import SqliteMigrator

from ketter.store.db import connect, upgrade


def _migration(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"ketter.store.migrations.{name}")


def _insert(db: SqliteDatabase, job_id: int, route: str, state: str, **extra: object) -> None:
    values = {"size": 1000, "file_count": 1, "completed_at": None, "transfer_seconds": None}
    values.update(extra)
    db.execute_sql(
        "INSERT INTO jobs (id, route, mode, kind, source_path, source_display, source_key, "
        "size, file_count, state, attempt, priority, bytes_done, node, created_at, "
        "updated_at, completed_at, transfer_seconds) VALUES "
        "(?, ?, 'copy', 'file', x'61', 'a', ?, ?, ?, ?, 1, 0, 0, 'n', 1, 1, ?, ?)",
        (
            job_id,
            route,
            f"k{job_id}",
            values["size"],
            values["file_count"],
            state,
            values["completed_at"],
            values["transfer_seconds"],
        ),
    )


def _counts(db: SqliteDatabase) -> list[tuple[str, str, int]]:
    return db.execute_sql(
        "SELECT route, state, jobs FROM job_counts WHERE jobs > 0 ORDER BY route, state"
    ).fetchall()


def _truth(db: SqliteDatabase) -> list[tuple[str, str, int]]:
    return db.execute_sql(
        "SELECT route, state, COUNT(*) FROM jobs GROUP BY route, state ORDER BY route, state"
    ).fetchall()


def test_backfill_then_triggers_keep_the_counts(tmp_path: Path) -> None:
    db = connect(tmp_path / "ketter.db")
    upgrade(db)
    _migration("0010_counters").down(SqliteMigrator(db), db)  # a store from before 0010
    _insert(
        db, 1, "a", "completed", size=500, file_count=3, completed_at=70.0, transfer_seconds=2.5
    )
    _insert(db, 2, "a", "completed", size=100, completed_at=90.0, transfer_seconds=0.5)
    _insert(db, 3, "a", "failed")
    _insert(db, 4, "b", "detected")
    _migration("0010_counters").up(SqliteMigrator(db), db)
    assert db.execute_sql("SELECT route, name, value FROM counters ORDER BY 1, 2").fetchall() == [
        ("a", "bytes_verified", 600.0),
        ("a", "files_transferred", 4.0),
        ("a", "last_success_at", 90.0),
        ("a", "transfer_seconds", 3.0),
        ("a", "transfers.completed", 2.0),
        ("a", "transfers.failed", 1.0),
    ]
    assert (
        _counts(db)
        == _truth(db)
        == [("a", "completed", 2), ("a", "failed", 1), ("b", "detected", 1)]
    )
    # Every write to jobs, by anyone: insert, move, change of route, delete.
    _insert(db, 5, "b", "detected")
    db.execute_sql("UPDATE jobs SET state = 'validated' WHERE id = 4")
    db.execute_sql("UPDATE jobs SET error = 'x' WHERE id = 5")  # no state change: no count
    db.execute_sql("UPDATE jobs SET route = 'c' WHERE id = 3")
    db.execute_sql("DELETE FROM jobs WHERE id = 1")
    assert _counts(db) == _truth(db)
    plan = db.execute_sql(
        "EXPLAIN QUERY PLAN SELECT MIN(created_at) FROM jobs "
        "WHERE route = 'a' AND state = 'detected'"
    ).fetchall()
    assert "jobs_route_state_created" in str(plan)
    _migration("0010_counters").down(SqliteMigrator(db), db)
    names = {r[0] for r in db.execute_sql("SELECT name FROM sqlite_master").fetchall()}
    assert "jobs_route_state" in names
    assert not names & {"counters", "job_counts", "jobs_route_state_created", "job_counts_insert"}
