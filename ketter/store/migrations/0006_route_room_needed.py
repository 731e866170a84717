"""route_status.room_needed: the bytes a route paused for a full destination
waits for (the size of the job that did not fit), on top of its min_free; the
resume sweep resumes it only once that much is free, so a job that does not
fit waits without using attempts instead of failing (R-J7, issue #14 finding
17)."""

from peewee import BigIntegerField


def up(migrator, db):
    migrator.migrate(migrator.add_column("route_status", "room_needed", BigIntegerField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("route_status", "room_needed"))
