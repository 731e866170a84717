"""Initial schema: jobs, events, job_files, route_status, heartbeats, job_history."""

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


def up(migrator, db):
    for statement in STATEMENTS:
        db.execute_sql(statement)


def down(migrator, db):
    for name in ("job_history",):
        db.execute_sql(f'DROP VIEW IF EXISTS "{name}"')
    for name in ("route_status", "job_files", "jobs", "heartbeats", "events"):
        db.execute_sql(f'DROP TABLE IF EXISTS "{name}"')
