"""route_status.room_pauses, room_paused_at, resume_at: a route paused for a
full destination that the filesystem calls roomy (a quota, EDQUOT, or space
another writer took) was resumed by the sweep at once, the job hit the wall
again and the route paused again: a route_paused/route_resumed pair and an
alert every retry.max_delay, for ever. The route now counts the pauses for
room with nothing delivered in between (one alert per episode), and the
sweep resumes it no earlier than ``resume_at``, a backoff that doubles with
each of them (review of issue #14 finding 17)."""

from peewee import DoubleField, IntegerField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("route_status", "room_pauses", IntegerField(default=0)),
        migrator.add_column("route_status", "room_paused_at", DoubleField(null=True)),
        migrator.add_column("route_status", "resume_at", DoubleField(null=True)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("route_status", "resume_at"),
        migrator.drop_column("route_status", "room_paused_at"),
        migrator.drop_column("route_status", "room_pauses"),
    )
