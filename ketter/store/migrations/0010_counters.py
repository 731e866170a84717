"""counters and job_counts: what a ``/metrics`` scrape reads (issue #17).

``counters`` holds per-route running totals (transfers by result, bytes
verified, files, retries, verify failures, source deletes, transfer seconds)
and the last success of each route. A Prometheus counter must never fall
and must not count a transfer twice when the workers are killed and the job
is taken over: each total is incremented by the job store in the same
transaction as the transition it counts
(:mod:`ketter.store.composite.counting`), so a transition lost to a crash is
not counted and a committed one is counted once. They live apart from
``jobs``: pruning old jobs would not lower them. Filled here from the jobs
already in the store (their terminal states, and the bytes, files and seconds
of the completed ones), so an upgraded node does not start from nothing.

``job_counts`` is the number of jobs per route and state, kept by triggers
on ``jobs`` in the statement that inserts, moves or deletes a job: counting
a million rows at each scrape read the whole ``(route, state)`` index (about
80 ms, the scrape's budget is 100 ms); the triggers cost two small upserts
per transition and cover every write to ``jobs``, whoever makes it.

``jobs_route_state`` becomes ``jobs_route_state_created`` (the same columns
and ``created_at``): the oldest waiting job of a route is one index seek.
One index instead of two: every transition updates them.

On PostgreSQL (issue #18) the triggers call one PL/pgSQL function; the rest
is the same SQL."""

from peewee import PostgresqlDatabase

STATEMENTS = [
    'CREATE TABLE "counters" ("route" TEXT NOT NULL, "name" TEXT NOT NULL, '
    '"value" REAL NOT NULL, PRIMARY KEY ("route", "name"))',
    'CREATE TABLE "job_counts" ("route" TEXT NOT NULL, "state" TEXT NOT NULL, '
    '"jobs" INTEGER NOT NULL, PRIMARY KEY ("route", "state"))',
    'CREATE INDEX "jobs_route_state_created" ON "jobs" ("route", "state", "created_at")',
    'DROP INDEX IF EXISTS "jobs_route_state"',
    """CREATE TRIGGER "job_counts_insert" AFTER INSERT ON "jobs" BEGIN
    INSERT INTO job_counts (route, state, jobs) VALUES (NEW.route, NEW.state, 1)
        ON CONFLICT (route, state) DO UPDATE SET jobs = jobs + 1;
END""",
    """CREATE TRIGGER "job_counts_update" AFTER UPDATE OF state, route ON "jobs"
WHEN OLD.state IS NOT NEW.state OR OLD.route IS NOT NEW.route BEGIN
    UPDATE job_counts SET jobs = jobs - 1 WHERE route = OLD.route AND state = OLD.state;
    INSERT INTO job_counts (route, state, jobs) VALUES (NEW.route, NEW.state, 1)
        ON CONFLICT (route, state) DO UPDATE SET jobs = jobs + 1;
END""",
    """CREATE TRIGGER "job_counts_delete" AFTER DELETE ON "jobs" BEGIN
    UPDATE job_counts SET jobs = jobs - 1 WHERE route = OLD.route AND state = OLD.state;
END""",
    """INSERT INTO job_counts (route, state, jobs)
SELECT route, state, COUNT(*) FROM jobs GROUP BY route, state""",
    """INSERT INTO counters (route, name, value)
SELECT route, 'transfers.' || state, COUNT(*) FROM jobs
WHERE state IN ('completed', 'failed', 'superseded', 'cancelled') GROUP BY route, state""",
]

PG_COUNT_FUNCTION = """CREATE FUNCTION job_counts_keep() RETURNS trigger
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
$$"""

PG_TRIGGERS = [
    PG_COUNT_FUNCTION,
    'CREATE TRIGGER "job_counts_insert" AFTER INSERT ON "jobs" '
    "FOR EACH ROW EXECUTE FUNCTION job_counts_keep()",
    'CREATE TRIGGER "job_counts_update" AFTER UPDATE OF state, route ON "jobs" FOR EACH ROW '
    "WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.route IS DISTINCT FROM NEW.route) "
    "EXECUTE FUNCTION job_counts_keep()",
    'CREATE TRIGGER "job_counts_delete" AFTER DELETE ON "jobs" '
    "FOR EACH ROW EXECUTE FUNCTION job_counts_keep()",
]


def _statements(db):
    """The statements of this backend: SQLite's triggers are replaced."""
    if not isinstance(db, PostgresqlDatabase):
        return STATEMENTS
    # REAL is single precision on PostgreSQL: the totals are doubles.
    counters = STATEMENTS[0].replace('"value" REAL', '"value" DOUBLE PRECISION')
    return [counters, *STATEMENTS[1:4], *PG_TRIGGERS, *STATEMENTS[7:]]


#: The completed jobs' totals (``size`` is what was verified at the
#: destination, ``transfer_seconds`` the verified attempt's active time).
BACKFILL_COMPLETED = """SELECT route, SUM(size), SUM(file_count),
    SUM(COALESCE(transfer_seconds, 0)), MAX(completed_at)
FROM jobs WHERE state = 'completed' GROUP BY route"""


def up(migrator, db):
    for sql in _statements(db):
        db.execute_sql(sql)
    for route, size, files, seconds, last in db.execute_sql(BACKFILL_COMPLETED).fetchall():
        for name, value in (
            ("bytes_verified", size),
            ("files_transferred", files),
            ("transfer_seconds", seconds),
            ("last_success_at", last),
        ):
            if value is not None:
                marks = ", ".join(db.param for _ in range(3))
                db.execute_sql(
                    f"INSERT INTO counters (route, name, value) VALUES ({marks})",
                    (route, name, value),
                )


def down(migrator, db):
    postgresql = isinstance(db, PostgresqlDatabase)
    for trigger in ("job_counts_insert", "job_counts_update", "job_counts_delete"):
        on = ' ON "jobs"' if postgresql else ""
        db.execute_sql(f'DROP TRIGGER IF EXISTS "{trigger}"{on}')
    if postgresql:
        db.execute_sql("DROP FUNCTION IF EXISTS job_counts_keep()")
    db.execute_sql('CREATE INDEX IF NOT EXISTS "jobs_route_state" ON "jobs" ("route", "state")')
    db.execute_sql('DROP INDEX IF EXISTS "jobs_route_state_created"')
    db.execute_sql('DROP TABLE IF EXISTS "job_counts"')
    db.execute_sql('DROP TABLE IF EXISTS "counters"')
