"""PostgreSQL job store: a new job (the rest of intake is
:mod:`ketter.store.sql.intake`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
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
        columns = self._due_on_lease_clock(dict(columns))
        # Raw SQL: the watcher creates thousands of jobs in a burst. A failed
        # statement would abort the whole transaction on PostgreSQL, so the
        # partial unique index jobs_active_source_key is the conflict's
        # arbiter: a second active job with this key is not inserted (no
        # look first, no error); any other constraint still raises.
        row = self.db.execute_sql(_insert_sql(tuple(columns)), tuple(columns.values())).fetchone()
        return None if row is None else int(row[0])

    def add_jobs(self, rows: Sequence[Mapping[str, Any]]) -> list[int | None]:
        """One multi-row insert per :data:`JOBS_PER_INSERT` rows of the same
        columns (one round trip, under the write turn); the arbiter as in
        :meth:`add_job`. A row whose key an earlier one of the same insert
        took is not inserted either."""
        ids: list[int | None] = []
        i = 0
        while i < len(rows):
            columns = tuple(rows[i])
            j = i + 1
            while j < len(rows) and j - i < JOBS_PER_INSERT and tuple(rows[j]) == columns:
                j += 1
            ids.extend(self._insert_many(columns, rows[i:j]))
            i = j
        return ids

    def _insert_many(
        self, columns: tuple[str, ...], rows: Sequence[Mapping[str, Any]]
    ) -> list[int | None]:
        if len(rows) == 1:
            return [self.add_job(rows[0])]  # its due time moved there
        rows = [self._due_on_lease_clock(dict(row)) for row in rows]
        for row in rows:
            check_job_columns(row, JOB_COLUMNS)
        marks = "({})".format(", ".join("%s" for _ in columns))
        names = ", ".join(f'"{c}"' for c in columns)
        sql = (
            f"INSERT INTO jobs ({names}) VALUES {', '.join([marks] * len(rows))} "
            f"ON CONFLICT (source_key) WHERE {_ACTIVE_KEY} DO NOTHING RETURNING id, source_key"
        )
        params = tuple(value for row in rows for value in row.values())
        got = {key: int(job_id) for job_id, key in self.db.execute_sql(sql, params)}
        return [got.pop(row["source_key"], None) for row in rows]


#: Rows per multi-row insert of :meth:`IntakePg.add_jobs`.
JOBS_PER_INSERT = 200


@functools.lru_cache(maxsize=4)
def _insert_sql(columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{c}"' for c in columns)
    return (
        f"INSERT INTO jobs ({names}) VALUES ({', '.join('%s' for _ in columns)}) "
        f"ON CONFLICT (source_key) WHERE {_ACTIVE_KEY} DO NOTHING RETURNING id"
    )
