"""peewee's psycopg 3 adapter with the driver imported when a PostgreSQL
store is opened, not at peewee's import (:mod:`ketter.store.driver`).

peewee's own :class:`peewee.Psycopg3Adapter` reads psycopg from peewee's
module globals, set at peewee's import; this one imports psycopg in its
constructor and sets everything the adapter's methods read from it.
"""

from __future__ import annotations

from typing import Any

from peewee import Psycopg3Adapter


class Psycopg3(Psycopg3Adapter):
    """:class:`peewee.Psycopg3Adapter`, its driver imported here."""

    def __init__(self) -> None:
        import psycopg
        from psycopg.types.json import Json, Jsonb

        super().__init__()
        self._psycopg = psycopg
        status = psycopg.pq.TransactionStatus
        self._in_transaction = status.INTRANS
        self.txn_idle = status.IDLE
        self.txn_inerror = status.INERROR
        self.txn_unknown = status.UNKNOWN
        self.json_type = Json
        self.jsonb_type = Jsonb

    def check_driver(self) -> None:
        """The driver was imported by the constructor."""

    def get_binary_type(self) -> Any:
        return self._psycopg.Binary

    def connect(self, db: Any, **params: Any) -> Any:
        if db._encoding:
            params.setdefault("client_encoding", db._encoding)
        if db.database.startswith("postgresql://"):
            params.setdefault("conninfo", db.database)
        else:
            params.setdefault("dbname", db.database)
        return self._psycopg.connect(**params)

    def server_side_cursor(self, conn: Any) -> Any:
        # As peewee's: a named cursor streams inside a transaction; outside
        # one the server requires ``withhold``.
        in_transaction = self.txn_status(conn) == self._in_transaction
        return conn.cursor(name=_cursor_name(), withhold=not in_transaction)


def _cursor_name() -> str:
    import uuid

    return str(uuid.uuid1())
