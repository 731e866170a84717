"""PostgreSQL job store: a new job (the rest of intake is
:mod:`ketter.store.sql.intake`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from ketter.store.models import TERMINAL_STATES
from ketter.store.ports.intake import check_job_columns
from ketter.store.postgres.core import PgCore
from ketter.store.rows import JOB_COLUMNS
from ketter.store.sql.intake import IntakeShared

#: The predicate of the partial unique index jobs_active_source_key.
_ACTIVE_KEY = "state NOT IN ({})".format(", ".join(f"'{s}'" for s in TERMINAL_STATES))


class IntakePg(PgCore, IntakeShared):
    """The intake operations on PostgreSQL."""

    def add_job(self, columns: Mapping[str, Any]) -> int | None:
        check_job_columns(columns, JOB_COLUMNS)
        # Raw SQL: the watcher creates thousands of jobs in a burst. A failed
        # statement would abort the whole transaction on PostgreSQL, so the
        # partial unique index jobs_active_source_key is the conflict's
        # arbiter: a second active job with this key is not inserted (no
        # look first, no error); any other constraint still raises.
        row = self.db.execute_sql(_insert_sql(tuple(columns)), tuple(columns.values())).fetchone()
        return None if row is None else int(row[0])


@functools.lru_cache(maxsize=4)
def _insert_sql(columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{c}"' for c in columns)
    return (
        f"INSERT INTO jobs ({names}) VALUES ({', '.join('%s' for _ in columns)}) "
        f"ON CONFLICT (source_key) WHERE {_ACTIVE_KEY} DO NOTHING RETURNING id"
    )
