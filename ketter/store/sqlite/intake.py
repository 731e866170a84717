"""SQLite job store: a new job (the rest of intake is
:mod:`ketter.store.sql.intake`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from peewee import IntegrityError

from ketter.store.ports.intake import check_job_columns
from ketter.store.rows import JOB_COLUMNS
from ketter.store.sql.intake import IntakeShared
from ketter.store.sqlite.core import SqliteCore


class IntakeSql(SqliteCore, IntakeShared):
    """The intake operations on SQLite."""

    def add_job(self, columns: Mapping[str, Any]) -> int | None:
        check_job_columns(columns, JOB_COLUMNS)
        try:
            # Raw SQL: the watcher creates thousands of jobs in a burst and
            # peewee's builder cost more than the insert. A failed INSERT
            # aborts only itself in SQLite, not the transaction.
            cursor = self._exec(_insert_sql(tuple(columns)), tuple(columns.values()))
        except IntegrityError:
            # No look first: the partial unique index jobs_active_source_key
            # refuses a second active job with this key.
            if self.active_job(columns.get("source_key", "")) is None:
                raise  # another constraint: not "already active"
            return None
        return int(cursor.lastrowid)


@functools.lru_cache(maxsize=4)
def _insert_sql(columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{c}"' for c in columns)
    return f"INSERT INTO jobs ({names}) VALUES ({', '.join('?' for _ in columns)})"
