"""peewee without psycopg until a PostgreSQL store is opened
(:mod:`ketter.store.driver`): a command on SQLite does not import the
driver, and a process whose peewee was imported without it still opens,
writes and reads the PostgreSQL store through Ketter's own adapter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import cli_env

_NO_DRIVER = """
import sys
import ketter.cli.main
import peewee, playhouse.migrations
assert "psycopg" not in sys.modules, sorted(m for m in sys.modules if "psycopg" in m)
assert peewee.psycopg is None
print("ok")
"""

#: Opened after peewee was imported without the driver: a write turn with
#: its BEGIN, a failed statement inside a transaction (the adapter's
#: transaction statuses decide whether the connection is usable again), a
#: named (server-side) cursor inside a transaction, a binary parameter.
_ON_POSTGRESQL = """
import sys
import ketter.store
import peewee
assert peewee.psycopg is None and "psycopg" not in sys.modules
from ketter.store.postgres.db import connect
db = connect(sys.argv[1])
with db.atomic():
    assert db.execute_sql("SELECT count(*) FROM jobs").fetchone()[0] == 0
try:
    with db.atomic():
        db.execute_sql("SELECT no_such_column FROM jobs")
except peewee.ProgrammingError:
    pass
else:
    raise AssertionError("the bad statement passed")
assert db.is_connection_usable()
with db.atomic():
    cursor = db._adapter.server_side_cursor(db.connection())
    cursor.execute("SELECT g FROM generate_series(1, 1000) AS g")
    assert sum(row[0] for row in cursor) == 500500
    cursor.close()
blob = db.execute_sql("SELECT %s::bytea", (db.get_binary_type()(b"\\x00ketter"),)).fetchone()[0]
assert bytes(blob) == b"\\x00ketter", blob
print(type(db._adapter).__module__, "ok")
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )


def test_a_command_on_sqlite_does_not_import_psycopg() -> None:
    run = _python(_NO_DRIVER)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_the_postgresql_store_brings_its_driver(pg_dsn: str) -> None:
    run = _python(_ON_POSTGRESQL, pg_dsn)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ketter.store.postgres.adapter ok", run.stdout
