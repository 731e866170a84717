"""History that costs nothing (issue #19, P6): what a store of a million jobs
needs so that no query reads every job or event
(``tests/integration/test_query_plans.py``).

* ``jobs_state_id`` on ``jobs (state, id)`` replaces ``jobs_state_due`` on
  ``(state, next_attempt_at)``: ``ketter jobs --state failed --limit 50``
  walks the failed jobs newest first and stops after 50 (with the old
  index SQLite sorted them all, or walked every job from the newest when
  ``ANALYZE`` told it most jobs share one state). The claims' search of due
  jobs still finds the active states through it (a few rows: the queue) and
  reads ``next_attempt_at`` from them. One index for one: no more writes
  per transition.
* ``jobs_route_id`` on ``jobs (route, id)``: ``ketter jobs --route X`` and
  an API token's routes (``GET /transfers``) walk the route's jobs newest
  first and stop after the page (0.34 s to sort a route of 250,000 jobs
  before). A job's route does not change after it is inserted: one entry
  per job, nothing per transition.
* ``jobs_created`` on ``jobs (created_at)``: ``ketter jobs --since/--until``
  and ``GET /transfers?since=`` (the read model's time filters). A job's
  ``created_at`` never changes: the index costs one entry per job inserted
  (at the right edge of the tree), nothing per transition.
* ``events_delete_source``, partial, on ``events (ts)`` for the
  ``delete_source`` events only: docs/operations.md's "moved sources deleted
  today". One entry per moved job, none for the other events.
* ``job_counts.bytes``: the sum of the jobs' ``size`` per route and state,
  kept by the triggers of 0010 (rewritten here to keep it, and to follow a
  job whose ``size`` changes): ``ketter status`` reads its counts and bytes
  per state from these few rows instead of grouping a million jobs (0.87 s on
  1,000,000 jobs).
"""

from peewee import PostgresqlDatabase

TRIGGERS = ("job_counts_insert", "job_counts_update", "job_counts_delete")

STATEMENTS = [
    'CREATE INDEX "jobs_state_id" ON "jobs" ("state", "id")',
    'DROP INDEX IF EXISTS "jobs_state_due"',
    'CREATE INDEX "jobs_route_id" ON "jobs" ("route", "id")',
    'CREATE INDEX "jobs_created" ON "jobs" ("created_at")',
    """CREATE INDEX "events_delete_source" ON "events" ("ts") WHERE ("event" = 'delete_source')""",
    'ALTER TABLE "job_counts" ADD COLUMN "bytes" INTEGER NOT NULL DEFAULT 0',
    *(f'DROP TRIGGER IF EXISTS "{name}"' for name in TRIGGERS),
    """CREATE TRIGGER "job_counts_insert" AFTER INSERT ON "jobs" BEGIN
    INSERT INTO job_counts (route, state, jobs, bytes) VALUES (NEW.route, NEW.state, 1, NEW.size)
        ON CONFLICT (route, state) DO UPDATE SET jobs = jobs + 1, bytes = bytes + excluded.bytes;
END""",
    """CREATE TRIGGER "job_counts_update" AFTER UPDATE OF state, route, size ON "jobs"
WHEN OLD.state IS NOT NEW.state OR OLD.route IS NOT NEW.route OR OLD.size IS NOT NEW.size BEGIN
    UPDATE job_counts SET jobs = jobs - 1, bytes = bytes - OLD.size
        WHERE route = OLD.route AND state = OLD.state;
    INSERT INTO job_counts (route, state, jobs, bytes) VALUES (NEW.route, NEW.state, 1, NEW.size)
        ON CONFLICT (route, state) DO UPDATE SET jobs = jobs + 1, bytes = bytes + excluded.bytes;
END""",
    """CREATE TRIGGER "job_counts_delete" AFTER DELETE ON "jobs" BEGIN
    UPDATE job_counts SET jobs = jobs - 1, bytes = bytes - OLD.size
        WHERE route = OLD.route AND state = OLD.state;
END""",
    # The bytes of the jobs already in the store: one pass over the
    # (route, state) index and the rows' sizes.
    """UPDATE job_counts SET bytes = COALESCE((SELECT SUM(size) FROM jobs
    WHERE jobs.route = job_counts.route AND jobs.state = job_counts.state), 0)""",
]


#: On PostgreSQL (issue #18) the triggers call 0010's PL/pgSQL function,
#: replaced here to keep the bytes; ``bytes`` is a BIGINT there (INTEGER is
#: 32 bits), and the update trigger follows ``size`` too.
PG_COUNT_FUNCTION = """CREATE OR REPLACE FUNCTION job_counts_keep() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE job_counts SET jobs = jobs - 1, bytes = bytes - OLD.size
            WHERE route = OLD.route AND state = OLD.state;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO job_counts (route, state, jobs, bytes)
            VALUES (NEW.route, NEW.state, 1, NEW.size)
            ON CONFLICT (route, state) DO UPDATE
            SET jobs = job_counts.jobs + 1, bytes = job_counts.bytes + excluded.bytes;
    END IF;
    RETURN NULL;
END
$$"""

PG_STATEMENTS = [
    *STATEMENTS[:5],
    'ALTER TABLE "job_counts" ADD COLUMN "bytes" BIGINT NOT NULL DEFAULT 0',
    PG_COUNT_FUNCTION,
    'DROP TRIGGER IF EXISTS "job_counts_update" ON "jobs"',
    'CREATE TRIGGER "job_counts_update" AFTER UPDATE OF state, route, size ON "jobs" '
    "FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state "
    "OR OLD.route IS DISTINCT FROM NEW.route OR OLD.size IS DISTINCT FROM NEW.size) "
    "EXECUTE FUNCTION job_counts_keep()",
    STATEMENTS[-1],
]

#: 0010's function and update trigger, for ``down`` on PostgreSQL.
PG_DOWN = [
    """CREATE OR REPLACE FUNCTION job_counts_keep() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE job_counts SET jobs = jobs - 1 WHERE route = OLD.route AND state = OLD.state;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO job_counts (route, state, jobs) VALUES (NEW.route, NEW.state, 1)
            ON CONFLICT (route, state) DO UPDATE SET jobs = job_counts.jobs + 1;
    END IF;
    RETURN NULL;
END
$$""",
    'DROP TRIGGER IF EXISTS "job_counts_update" ON "jobs"',
    'CREATE TRIGGER "job_counts_update" AFTER UPDATE OF state, route ON "jobs" FOR EACH ROW '
    "WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.route IS DISTINCT FROM NEW.route) "
    "EXECUTE FUNCTION job_counts_keep()",
]


def up(migrator, db):
    postgresql = isinstance(db, PostgresqlDatabase)
    for sql in PG_STATEMENTS if postgresql else STATEMENTS:
        db.execute_sql(sql)


def down(migrator, db):
    if isinstance(db, PostgresqlDatabase):
        for sql in PG_DOWN:
            db.execute_sql(sql)
        _drop_common(db)
        return
    for name in TRIGGERS:
        db.execute_sql(f'DROP TRIGGER IF EXISTS "{name}"')
    db.execute_sql("""CREATE TRIGGER "job_counts_insert" AFTER INSERT ON "jobs" BEGIN
    INSERT INTO job_counts (route, state, jobs) VALUES (NEW.route, NEW.state, 1)
        ON CONFLICT (route, state) DO UPDATE SET jobs = jobs + 1;
END""")
    db.execute_sql("""CREATE TRIGGER "job_counts_update" AFTER UPDATE OF state, route ON "jobs"
WHEN OLD.state IS NOT NEW.state OR OLD.route IS NOT NEW.route BEGIN
    UPDATE job_counts SET jobs = jobs - 1 WHERE route = OLD.route AND state = OLD.state;
    INSERT INTO job_counts (route, state, jobs) VALUES (NEW.route, NEW.state, 1)
        ON CONFLICT (route, state) DO UPDATE SET jobs = jobs + 1;
END""")
    db.execute_sql("""CREATE TRIGGER "job_counts_delete" AFTER DELETE ON "jobs" BEGIN
    UPDATE job_counts SET jobs = jobs - 1 WHERE route = OLD.route AND state = OLD.state;
END""")
    _drop_common(db)


def _drop_common(db):
    db.execute_sql('ALTER TABLE "job_counts" DROP COLUMN "bytes"')
    db.execute_sql('DROP INDEX IF EXISTS "events_delete_source"')
    db.execute_sql('DROP INDEX IF EXISTS "jobs_created"')
    db.execute_sql('DROP INDEX IF EXISTS "jobs_route_id"')
    db.execute_sql(
        'CREATE INDEX IF NOT EXISTS "jobs_state_due" ON "jobs" ("state", "next_attempt_at")'
    )
    db.execute_sql('DROP INDEX IF EXISTS "jobs_state_id"')
