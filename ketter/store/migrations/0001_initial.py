"""Initial schema: jobs, events, job_files, route_status, heartbeats, job_history.

The same schema on PostgreSQL (issue #18) in its own types: ``SERIAL`` for
the ids, ``BIGINT`` where the models say so (SQLite's ``INTEGER`` holds 64
bits), ``DOUBLE PRECISION`` for ``REAL``, ``BYTEA`` for ``BLOB``, and the
view's times through ``to_char``."""

from peewee import PostgresqlDatabase

STATEMENTS = [
    'CREATE TABLE "events" ("id" INTEGER NOT NULL PRIMARY KEY, "job_id" INTEGER, '
    '"ts" REAL NOT NULL, "event" TEXT NOT NULL, "route" TEXT, "from_state" TEXT, '
    '"to_state" TEXT, "attempt" INTEGER, "node" TEXT NOT NULL, "pid" INTEGER NOT NULL, '
    '"user" TEXT NOT NULL, "details" TEXT NOT NULL, "prev_hash" TEXT NOT NULL, '
    '"hash" TEXT NOT NULL)',
    'CREATE INDEX "events_job_id" ON "events" ("job_id")',
    'CREATE TABLE "heartbeats" ("id" INTEGER NOT NULL PRIMARY KEY, '
    '"component" TEXT NOT NULL, "node" TEXT NOT NULL, "pid" INTEGER NOT NULL, '
    '"ts" REAL NOT NULL, "details" TEXT NOT NULL)',
    'CREATE UNIQUE INDEX "heartbeats_component_node" ON "heartbeats" ("component", "node")',
    'CREATE TABLE "jobs" ("id" INTEGER NOT NULL PRIMARY KEY, "route" TEXT NOT NULL, '
    '"mode" TEXT NOT NULL, "kind" TEXT NOT NULL, "source_path" BLOB NOT NULL, '
    '"source_display" TEXT NOT NULL, "dest_path" BLOB, "dest_display" TEXT, '
    '"source_key" TEXT NOT NULL, "source_size" INTEGER, "source_mtime_ns" INTEGER, '
    '"source_inode" INTEGER, "source_dev" INTEGER, "source_owner" TEXT, '
    '"dest_dev" INTEGER, "size" INTEGER NOT NULL, "file_count" INTEGER NOT NULL, '
    '"state" TEXT NOT NULL, "attempt" INTEGER NOT NULL, "next_attempt_at" REAL, '
    '"priority" INTEGER NOT NULL, "lease_owner" TEXT, "lease_expires_at" REAL, '
    '"claim" TEXT, "bytes_done" INTEGER NOT NULL, "progress_at" REAL, "placed_at" REAL, '
    '"placed_inode" INTEGER, "sha256" TEXT, "xxh128" TEXT, "xxh64" TEXT, "md5" TEXT, '
    '"error" TEXT, "node" TEXT NOT NULL, "created_at" REAL NOT NULL, '
    '"updated_at" REAL NOT NULL, "started_at" REAL, "completed_at" REAL)',
    'CREATE INDEX "jobs_state_due" ON "jobs" ("state", "next_attempt_at")',
    'CREATE INDEX "jobs_route_state" ON "jobs" ("route", "state")',
    'CREATE INDEX "jobs_source_key" ON "jobs" ("source_key")',
    'CREATE UNIQUE INDEX "jobs_active_source_key" ON "jobs" ("source_key") '
    "WHERE (\"state\" NOT IN ('completed', 'failed'))",
    'CREATE TABLE "job_files" ("id" INTEGER NOT NULL PRIMARY KEY, '
    '"job_id" INTEGER NOT NULL, "relpath" BLOB NOT NULL, "relpath_display" TEXT NOT NULL, '
    '"size" INTEGER NOT NULL, "mtime_ns" INTEGER NOT NULL, "mode" INTEGER NOT NULL, '
    '"inode" INTEGER, "sha256" TEXT, "xxh128" TEXT, "xxh64" TEXT)',
    'CREATE INDEX "job_files_job_id" ON "job_files" ("job_id")',
    'CREATE TABLE "route_status" ("route" TEXT NOT NULL PRIMARY KEY, '
    '"paused" INTEGER NOT NULL, "reason" TEXT, "since" REAL, "updated_at" REAL NOT NULL)',
    # One readable row per job for operators (docs/operations.md has queries).
    """CREATE VIEW job_history AS
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
    ROUND(j.completed_at - j.started_at, 3) AS seconds,
    CASE WHEN j.completed_at > j.started_at
         THEN ROUND(j.size / (j.completed_at - j.started_at) / 1e6, 1) END AS mb_per_s,
    strftime('%Y-%m-%dT%H:%M:%fZ', j.next_attempt_at, 'unixepoch') AS next_attempt,
    j.error AS error,
    j.node AS node
FROM jobs AS j""",
]


#: job_history's times on PostgreSQL: ISO 8601 in UTC with milliseconds, as
#: SQLite's ``strftime('%Y-%m-%dT%H:%M:%fZ', x, 'unixepoch')`` writes them.
PG_TIME = "to_char(to_timestamp({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

PG_STATEMENTS = [
    'CREATE TABLE "events" ("id" SERIAL NOT NULL PRIMARY KEY, "job_id" INTEGER, '
    '"ts" DOUBLE PRECISION NOT NULL, "event" TEXT NOT NULL, "route" TEXT, '
    '"from_state" TEXT, "to_state" TEXT, "attempt" INTEGER, "node" TEXT NOT NULL, '
    '"pid" INTEGER NOT NULL, "user" TEXT NOT NULL, "details" TEXT NOT NULL, '
    '"prev_hash" TEXT NOT NULL, "hash" TEXT NOT NULL)',
    'CREATE INDEX "events_job_id" ON "events" ("job_id")',
    'CREATE TABLE "heartbeats" ("id" SERIAL NOT NULL PRIMARY KEY, '
    '"component" TEXT NOT NULL, "node" TEXT NOT NULL, "pid" INTEGER NOT NULL, '
    '"ts" DOUBLE PRECISION NOT NULL, "details" TEXT NOT NULL)',
    'CREATE UNIQUE INDEX "heartbeats_component_node" ON "heartbeats" ("component", "node")',
    'CREATE TABLE "jobs" ("id" SERIAL NOT NULL PRIMARY KEY, "route" TEXT NOT NULL, '
    '"mode" TEXT NOT NULL, "kind" TEXT NOT NULL, "source_path" BYTEA NOT NULL, '
    '"source_display" TEXT NOT NULL, "dest_path" BYTEA, "dest_display" TEXT, '
    '"source_key" TEXT NOT NULL, "source_size" BIGINT, "source_mtime_ns" BIGINT, '
    '"source_inode" BIGINT, "source_dev" BIGINT, "source_owner" TEXT, '
    '"dest_dev" BIGINT, "size" BIGINT NOT NULL, "file_count" INTEGER NOT NULL, '
    '"state" TEXT NOT NULL, "attempt" INTEGER NOT NULL, "next_attempt_at" DOUBLE PRECISION, '
    '"priority" INTEGER NOT NULL, "lease_owner" TEXT, "lease_expires_at" DOUBLE PRECISION, '
    '"claim" TEXT, "bytes_done" BIGINT NOT NULL, "progress_at" DOUBLE PRECISION, '
    '"placed_at" DOUBLE PRECISION, "placed_inode" BIGINT, "sha256" TEXT, "xxh128" TEXT, '
    '"xxh64" TEXT, "md5" TEXT, "error" TEXT, "node" TEXT NOT NULL, '
    '"created_at" DOUBLE PRECISION NOT NULL, "updated_at" DOUBLE PRECISION NOT NULL, '
    '"started_at" DOUBLE PRECISION, "completed_at" DOUBLE PRECISION)',
    *STATEMENTS[5:9],
    'CREATE TABLE "job_files" ("id" SERIAL NOT NULL PRIMARY KEY, '
    '"job_id" INTEGER NOT NULL, "relpath" BYTEA NOT NULL, "relpath_display" TEXT NOT NULL, '
    '"size" BIGINT NOT NULL, "mtime_ns" BIGINT NOT NULL, "mode" INTEGER NOT NULL, '
    '"inode" BIGINT, "sha256" TEXT, "xxh128" TEXT, "xxh64" TEXT)',
    STATEMENTS[10],
    'CREATE TABLE "route_status" ("route" TEXT NOT NULL PRIMARY KEY, '
    '"paused" INTEGER NOT NULL, "reason" TEXT, "since" DOUBLE PRECISION, '
    '"updated_at" DOUBLE PRECISION NOT NULL)',
]


def pg_view(seconds):
    """job_history on PostgreSQL, with ``seconds`` (the lines that compute
    ``seconds`` and ``mb_per_s``, which migration 0005 changes)."""
    times = {
        name: PG_TIME.format(f"j.{column}")
        for name, column in (
            ("created", "created_at"),
            ("started", "started_at"),
            ("placed", "placed_at"),
            ("completed", "completed_at"),
            ("updated", "updated_at"),
            ("next_attempt", "next_attempt_at"),
        )
    }
    return f"""CREATE VIEW job_history AS
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
    {times["created"]} AS created,
    {times["started"]} AS started,
    {times["placed"]} AS placed,
    {times["completed"]} AS completed,
    {times["updated"]} AS updated,
{seconds}
    {times["next_attempt"]} AS next_attempt,
    j.error AS error,
    j.node AS node
FROM jobs AS j"""


#: ROUND of a double needs numeric on PostgreSQL; read back as a double.
PG_SECONDS = """    ROUND((j.completed_at - j.started_at)::numeric, 3)::double precision AS seconds,
    CASE WHEN j.completed_at > j.started_at
         THEN ROUND((j.size / (j.completed_at - j.started_at) / 1e6)::numeric, 1)
              ::double precision END AS mb_per_s,"""


def up(migrator, db):
    if isinstance(db, PostgresqlDatabase):
        for statement in PG_STATEMENTS:
            db.execute_sql(statement)
        db.execute_sql(pg_view(PG_SECONDS))
        return
    for statement in STATEMENTS:
        db.execute_sql(statement)


def down(migrator, db):
    for name in ("job_history",):
        db.execute_sql(f'DROP VIEW IF EXISTS "{name}"')
    for name in ("route_status", "job_files", "jobs", "heartbeats", "events"):
        db.execute_sql(f'DROP TABLE IF EXISTS "{name}"')
