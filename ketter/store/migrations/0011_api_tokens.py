"""api_tokens: the HTTP API's tokens for machines (issue #17 item 4). Only the
SHA-256 of a secret is kept; a name is unique among the tokens not revoked
(partial index), and revoked rows stay as the record of who could do what.
PostgreSQL (issue #18): ``SERIAL`` id, ``DOUBLE PRECISION`` times."""

from peewee import PostgresqlDatabase

STATEMENTS = [
    'CREATE TABLE "api_tokens" ("id" INTEGER NOT NULL PRIMARY KEY, "name" TEXT NOT NULL, '
    '"secret_sha256" TEXT NOT NULL, "scopes" TEXT NOT NULL, "routes" TEXT NOT NULL, '
    '"created_at" REAL NOT NULL, "created_by" TEXT NOT NULL, "expires_at" REAL, '
    '"revoked_at" REAL, "revoked_by" TEXT, "last_used_at" REAL)',
    'CREATE UNIQUE INDEX "api_tokens_secret_sha256" ON "api_tokens" ("secret_sha256")',
    'CREATE UNIQUE INDEX "api_tokens_live_name" ON "api_tokens" ("name") '
    'WHERE ("revoked_at" IS NULL)',
]


PG_TABLE = (
    'CREATE TABLE "api_tokens" ("id" SERIAL NOT NULL PRIMARY KEY, "name" TEXT NOT NULL, '
    '"secret_sha256" TEXT NOT NULL, "scopes" TEXT NOT NULL, "routes" TEXT NOT NULL, '
    '"created_at" DOUBLE PRECISION NOT NULL, "created_by" TEXT NOT NULL, '
    '"expires_at" DOUBLE PRECISION, "revoked_at" DOUBLE PRECISION, "revoked_by" TEXT, '
    '"last_used_at" DOUBLE PRECISION)'
)


def up(migrator, db):
    postgresql = isinstance(db, PostgresqlDatabase)
    for statement in [PG_TABLE, *STATEMENTS[1:]] if postgresql else STATEMENTS:
        db.execute_sql(statement)


def down(migrator, db):
    db.execute_sql('DROP TABLE IF EXISTS "api_tokens"')
