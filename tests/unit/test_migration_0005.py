"""Migration 0005 on a store that has run: jobs from before get their
``seconds``/``mb_per_s`` from their last ``verify`` event, not from the time
between their first claim and completion (issue #14 finding 19)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from peewee import SqliteDatabase
from playhouse.migrate import SqliteMigrator


def _migration(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"ketter.store.migrations.{name}")


def test_backfill_from_the_verify_event(tmp_path: Path) -> None:
    db = SqliteDatabase(str(tmp_path / "old.db"))
    migrator = SqliteMigrator(db)
    _migration("0001_initial").up(migrator, db)
    _migration("0002_rollback_outcome").up(migrator, db)
    # A 1 MB job claimed at t=1000, waited 50 s on a paused route, then
    # copied and verified in 0.25 s; and one that was never placed.
    for job_id, placed in ((1, 1050.2), (2, None)):
        db.execute_sql(
            "INSERT INTO jobs (id, route, mode, kind, source_path, source_display, source_key, "
            "size, file_count, state, attempt, priority, bytes_done, node, created_at, "
            "updated_at, started_at, placed_at, completed_at) VALUES "
            "(?, 'r', 'copy', 'file', x'61', 'a', ?, 1000000, 1, ?, 1, 0, 0, 'n', 1000, "
            "1050.3, 1000, ?, ?)",
            (job_id, f"k{job_id}", "completed" if placed else "failed", placed, 1050.3),
        )
    for seq, seconds in ((1, 9.0), (2, 0.25)):  # the last verify is the one that counts
        db.execute_sql(
            "INSERT INTO events (id, job_id, ts, event, node, pid, user, details, prev_hash, "
            "hash) VALUES (?, 1, 1050, 'verify', 'n', 1, 'u', ?, '', '')",
            (seq, json.dumps({"seconds": seconds, "bytes": 500000 if seq == 2 else 1})),
        )
    before = db.execute_sql("SELECT seconds FROM job_history WHERE job_id = 1").fetchone()
    assert before == (50.3,)  # the wait counted: the bug
    _migration("0005_transfer_seconds").up(migrator, db)
    rows = db.execute_sql(
        "SELECT job_id, seconds, mb_per_s FROM job_history ORDER BY job_id"
    ).fetchall()
    assert rows == [(1, 0.25, 2.0), (2, None, None)]
    _migration("0005_transfer_seconds").down(migrator, db)
    assert db.execute_sql("SELECT seconds FROM job_history WHERE job_id = 1").fetchone() == (50.3,)
