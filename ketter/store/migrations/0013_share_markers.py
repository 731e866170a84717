"""share_markers: which share each route root must be (issue #18 item 6).

With several nodes on one database, every node must mount every route root
from the same share. The first node to run a job of a route writes a marker
file (``.ketter-share-<route>.id``, a random id) in the route's source and
destination roots and records the id here, one row per route and side;
every other node (and every later job) checks that the file there holds the
recorded id, and pauses the route when it does not (:mod:`ketter.jobs.shares`).
PostgreSQL: ``DOUBLE PRECISION`` time."""

from peewee import PostgresqlDatabase

TABLE = (
    'CREATE TABLE "share_markers" ("route" TEXT NOT NULL, "side" TEXT NOT NULL, '
    '"path" TEXT NOT NULL, "marker" TEXT NOT NULL, "node" TEXT NOT NULL, '
    '"created_at" {real} NOT NULL, PRIMARY KEY ("route", "side"))'
)


def up(migrator, db):
    postgresql = isinstance(db, PostgresqlDatabase)
    db.execute_sql(TABLE.format(real="DOUBLE PRECISION" if postgresql else "REAL"))


def down(migrator, db):
    db.execute_sql('DROP TABLE IF EXISTS "share_markers"')
