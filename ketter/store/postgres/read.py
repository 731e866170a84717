"""How the read model (:mod:`ketter.store.sql_read`) opens the job store on
PostgreSQL: one psycopg connection in autocommit, every transaction
read-only (``default_transaction_read_only``: a read that tried to write
would fail, never write), and lease comparisons on the database's clock
(:data:`DB_NOW`), the clock the workers' leases are set on."""

from __future__ import annotations

from typing import Any

import psycopg

from ketter.store.dialect import POSTGRESQL
from ketter.store.port import StoreUnreadable
from ketter.store.postgres.db import DB_NOW, liveness, shown_dsn
from ketter.store.sql_read import SqlReadStore


def open_read(dsn: str, *, password: str | None = None, db_clock: bool = True) -> SqlReadStore:
    """The read model on the database at ``dsn``; :class:`StoreUnreadable`
    when it cannot be reached. ``db_clock=False`` compares leases with the
    caller's ``now`` (the read model's contract suite, which pins time)."""
    params: dict[str, Any] = {
        # A 10 s connect_timeout, and a database host that vanishes fails
        # the API's reads in about 30 s instead of holding its handler
        # threads (ketter.store.postgres.db.LIVENESS).
        **liveness(dsn),
        "autocommit": True,
        "options": "-c default_transaction_read_only=on",
    }
    if password is not None:
        params["password"] = password
    try:
        conn = psycopg.connect(dsn, **params)
    except psycopg.Error as exc:
        raise StoreUnreadable(f"{shown_dsn(dsn)}: {exc}") from exc

    def lease_clock(now: float) -> float:
        try:
            row = conn.execute(f"SELECT {DB_NOW}").fetchone()
        except psycopg.Error as exc:
            raise StoreUnreadable(str(exc)) from exc
        assert row is not None
        return float(row[0])

    return SqlReadStore(
        conn.execute,
        conn.close,
        "read-only",
        dialect=POSTGRESQL,
        errors=(psycopg.Error,),
        lease_clock=lease_clock if db_clock else None,
    )
