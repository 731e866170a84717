"""jobs.source_ctime_ns and job_files.ctime_ns: the source's ctime, part of
its identity (issue #14, finding 2: a rewrite in place that restores size and
mtime still moves the ctime), kept so a job resumed after a restart still
compares it before deleting a move's source; and the ``superseded`` terminal
state (finding 14): a superseded job no longer holds its source_key, so the
partial unique index leaves it out like completed and failed ones."""

from peewee import BigIntegerField

OLD_INDEX = (
    'CREATE UNIQUE INDEX "jobs_active_source_key" ON "jobs" ("source_key") '
    "WHERE (\"state\" NOT IN ('completed', 'failed'))"
)
NEW_INDEX = (
    'CREATE UNIQUE INDEX "jobs_active_source_key" ON "jobs" ("source_key") '
    "WHERE (\"state\" NOT IN ('completed', 'failed', 'superseded'))"
)


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("jobs", "source_ctime_ns", BigIntegerField(null=True)),
        migrator.add_column("job_files", "ctime_ns", BigIntegerField(null=True)),
    )
    db.execute_sql('DROP INDEX IF EXISTS "jobs_active_source_key"')
    db.execute_sql(NEW_INDEX)


def down(migrator, db):
    db.execute_sql('DROP INDEX IF EXISTS "jobs_active_source_key"')
    db.execute_sql(OLD_INDEX)
    migrator.migrate(
        migrator.drop_column("job_files", "ctime_ns"),
        migrator.drop_column("jobs", "source_ctime_ns"),
    )
