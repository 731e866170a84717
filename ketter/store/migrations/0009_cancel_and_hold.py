"""jobs.cancel_requested_at/_by: an operator's cancel of a job (issue #17),
recorded on the row so the worker holding the job notices it (and a step
forward is refused from then on); the ``cancelled`` terminal state, which
no longer holds its source_key, so the partial unique index leaves it out
like the other terminal states. route_status.held, held_reason, held_by,
held_since: an operator hold of a route (``ketter pause``), apart from the
outage and room pauses that the sweep lifts by itself."""

from peewee import DoubleField, IntegerField, TextField

OLD_INDEX = (
    'CREATE UNIQUE INDEX "jobs_active_source_key" ON "jobs" ("source_key") '
    "WHERE (\"state\" NOT IN ('completed', 'failed', 'superseded'))"
)
NEW_INDEX = (
    'CREATE UNIQUE INDEX "jobs_active_source_key" ON "jobs" ("source_key") '
    "WHERE (\"state\" NOT IN ('completed', 'failed', 'superseded', 'cancelled'))"
)


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("jobs", "cancel_requested_at", DoubleField(null=True)),
        migrator.add_column("jobs", "cancel_requested_by", TextField(null=True)),
        migrator.add_column("route_status", "held", IntegerField(default=0)),
        migrator.add_column("route_status", "held_reason", TextField(null=True)),
        migrator.add_column("route_status", "held_by", TextField(null=True)),
        migrator.add_column("route_status", "held_since", DoubleField(null=True)),
    )
    db.execute_sql('DROP INDEX IF EXISTS "jobs_active_source_key"')
    db.execute_sql(NEW_INDEX)


def down(migrator, db):
    db.execute_sql('DROP INDEX IF EXISTS "jobs_active_source_key"')
    db.execute_sql(OLD_INDEX)
    migrator.migrate(
        migrator.drop_column("route_status", "held_since"),
        migrator.drop_column("route_status", "held_by"),
        migrator.drop_column("route_status", "held_reason"),
        migrator.drop_column("route_status", "held"),
        migrator.drop_column("jobs", "cancel_requested_by"),
        migrator.drop_column("jobs", "cancel_requested_at"),
    )
