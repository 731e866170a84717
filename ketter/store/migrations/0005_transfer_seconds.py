"""jobs.transfer_seconds and jobs.transfer_bytes: the active time and the bytes
written of the attempt whose copy was verified, measured by the engine (copy
plus read-back). job_history's ``seconds`` and ``mb_per_s`` used
``completed_at - started_at``, which counts every wait on a paused route, a
retry backoff or a re-queue (a 0.2 s copy showed as 52.7 s; issue #14,
finding 19). Rows from before are filled from their last ``verify`` event,
which has carried the same two figures all along; the view is rebuilt (on
PostgreSQL from the view of 0001's PostgreSQL branch, issue #18)."""

import importlib

from peewee import BigIntegerField, DoubleField, PostgresqlDatabase

VIEW = """CREATE VIEW job_history AS
SELECT
    j.id AS job_id,
    j.route AS route,
    j.mode AS mode,
    j.kind AS kind,
    j.state AS state,
    j.attempt AS attempt,
    j.source_display AS source,
    j.dest_display AS destination,
    j.size AS bytes,
    j.file_count AS files,
    j.sha256 AS sha256,
    j.xxh128 AS xxh128,
    strftime('%Y-%m-%dT%H:%M:%fZ', j.created_at, 'unixepoch') AS created,
    strftime('%Y-%m-%dT%H:%M:%fZ', j.started_at, 'unixepoch') AS started,
    strftime('%Y-%m-%dT%H:%M:%fZ', j.placed_at, 'unixepoch') AS placed,
    strftime('%Y-%m-%dT%H:%M:%fZ', j.completed_at, 'unixepoch') AS completed,
    strftime('%Y-%m-%dT%H:%M:%fZ', j.updated_at, 'unixepoch') AS updated,
    ROUND(j.transfer_seconds, 3) AS seconds,
    CASE WHEN j.transfer_seconds > 0 AND j.transfer_bytes > 0
         THEN ROUND(j.transfer_bytes / j.transfer_seconds / 1e6, 1) END AS mb_per_s,
    strftime('%Y-%m-%dT%H:%M:%fZ', j.next_attempt_at, 'unixepoch') AS next_attempt,
    j.error AS error,
    j.node AS node
FROM jobs AS j"""

OLD_VIEW_SECONDS = """    ROUND(j.completed_at - j.started_at, 3) AS seconds,
    CASE WHEN j.completed_at > j.started_at
         THEN ROUND(j.size / (j.completed_at - j.started_at) / 1e6, 1) END AS mb_per_s,"""

NEW_VIEW_SECONDS = """    ROUND(j.transfer_seconds, 3) AS seconds,
    CASE WHEN j.transfer_seconds > 0 AND j.transfer_bytes > 0
         THEN ROUND(j.transfer_bytes / j.transfer_seconds / 1e6, 1) END AS mb_per_s,"""

BACKFILL = """UPDATE jobs SET
    transfer_seconds = (SELECT json_extract(e.details, '$.seconds') FROM events AS e
                        WHERE e.job_id = jobs.id AND e.event = 'verify'
                        ORDER BY e.id DESC LIMIT 1),
    transfer_bytes = (SELECT json_extract(e.details, '$.bytes') FROM events AS e
                      WHERE e.job_id = jobs.id AND e.event = 'verify'
                      ORDER BY e.id DESC LIMIT 1)
WHERE placed_at IS NOT NULL"""


PG_BACKFILL = """UPDATE jobs SET
    transfer_seconds = (SELECT (e.details::json ->> 'seconds')::double precision
                        FROM events AS e
                        WHERE e.job_id = jobs.id AND e.event = 'verify'
                        ORDER BY e.id DESC LIMIT 1),
    transfer_bytes = (SELECT (e.details::json ->> 'bytes')::bigint FROM events AS e
                      WHERE e.job_id = jobs.id AND e.event = 'verify'
                      ORDER BY e.id DESC LIMIT 1)
WHERE placed_at IS NOT NULL"""

PG_SECONDS = """    ROUND(j.transfer_seconds::numeric, 3)::double precision AS seconds,
    CASE WHEN j.transfer_seconds > 0 AND j.transfer_bytes > 0
         THEN ROUND((j.transfer_bytes / j.transfer_seconds / 1e6)::numeric, 1)
              ::double precision END AS mb_per_s,"""


def _initial():
    """Migration 0001 (its PostgreSQL view)."""
    return importlib.import_module("ketter.store.migrations.0001_initial")


def _up_postgresql(migrator, db):
    db.execute_sql('DROP VIEW IF EXISTS "job_history"')
    migrator.migrate(
        migrator.add_column("jobs", "transfer_seconds", DoubleField(null=True)),
        migrator.add_column("jobs", "transfer_bytes", BigIntegerField(null=True)),
    )
    db.execute_sql(PG_BACKFILL)
    db.execute_sql(_initial().pg_view(PG_SECONDS))


def _down_postgresql(migrator, db):
    db.execute_sql('DROP VIEW IF EXISTS "job_history"')
    migrator.migrate(
        migrator.drop_column("jobs", "transfer_bytes"),
        migrator.drop_column("jobs", "transfer_seconds"),
    )
    initial = _initial()
    db.execute_sql(initial.pg_view(initial.PG_SECONDS))


def _view_sql(db):
    row = db.execute_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'view' AND name = 'job_history'"
    )
    found = row.fetchone()
    return found[0] if found else None


def up(migrator, db):
    if isinstance(db, PostgresqlDatabase):
        _up_postgresql(migrator, db)
        return
    # The view is dropped first: SQLite refuses to alter a table a view
    # names in some versions, and it is rebuilt from its current text so a
    # column another migration added to it is kept.
    current = _view_sql(db)
    db.execute_sql('DROP VIEW IF EXISTS "job_history"')
    migrator.migrate(
        migrator.add_column("jobs", "transfer_seconds", DoubleField(null=True)),
        migrator.add_column("jobs", "transfer_bytes", BigIntegerField(null=True)),
    )
    db.execute_sql(BACKFILL)
    if current and OLD_VIEW_SECONDS in current:
        db.execute_sql(current.replace(OLD_VIEW_SECONDS, NEW_VIEW_SECONDS))
    else:
        db.execute_sql(VIEW)


def down(migrator, db):
    if isinstance(db, PostgresqlDatabase):
        _down_postgresql(migrator, db)
        return
    current = _view_sql(db)
    db.execute_sql('DROP VIEW IF EXISTS "job_history"')
    migrator.migrate(
        migrator.drop_column("jobs", "transfer_bytes"),
        migrator.drop_column("jobs", "transfer_seconds"),
    )
    if current and NEW_VIEW_SECONDS in current:
        db.execute_sql(current.replace(NEW_VIEW_SECONDS, OLD_VIEW_SECONDS))
