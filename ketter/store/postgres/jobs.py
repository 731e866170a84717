"""PostgreSQL job store: what its jobs area does its own way (the rest is
:mod:`ketter.store.sql.jobs`): a transition's compare-and-set and its audit
event in **one** statement, one round trip instead of two, on the hot path
(five or six per transfer, each under the store's write turn); and a
batch's shared commit tried whole sends every job's transitions in one
pipeline, one round trip for all of them."""

from __future__ import annotations

from typing import Any

from ketter.store.postgres.core import PgCore
from ketter.store.rows import EVENT_COLUMNS
from ketter.store.sql.jobs import JobsShared

_EVENT_NAMES = ", ".join(f'"{name}"' for name in EVENT_COLUMNS)


class JobsPg(PgCore, JobsShared):
    """The jobs operations on PostgreSQL."""

    _event_types: dict[str, str] | None = None

    def _change_and_append(
        self,
        job_id: int,
        state: str,
        claim: str | None,
        values: dict[str, Any],
        unplaced: bool,
        uncancelled: bool,
        event: dict[str, Any],
    ) -> bool:
        # The event is inserted for each row the update changed: none when
        # the compare-and-set is refused. A parameter in a SELECT list has no
        # type of its own: each one is cast to its column's.
        types = self._event_column_types()
        assignments = ", ".join(f'"{name}" = ?' for name in values)
        selected = ", ".join(f"?::{types[name]}" for name in EVENT_COLUMNS)
        sql = (
            f"WITH changed AS (UPDATE jobs SET {assignments} "
            "WHERE id = ? AND state = ? AND claim IS ?"
            + (" AND placed_at IS NULL" if unplaced else "")
            + (" AND cancel_requested_at IS NULL" if uncancelled else "")
            + f" RETURNING id) INSERT INTO events ({_EVENT_NAMES}) SELECT {selected} FROM changed"
        )
        params = (
            *values.values(),
            job_id,
            state,
            claim,
            *(event[name] for name in EVENT_COLUMNS),
        )
        turn = self._turn()
        if turn.flat:
            # A shared commit tried whole: sent with the others at its end
            # (_settle), one round trip; a refusal there rolls it all back
            # and each job runs alone.
            turn.deferred.append((self.dialect.sql(sql), params))
            return True
        return int(self._exec(sql, params).rowcount) == 1

    def _settle(self) -> bool:
        """The held-back transitions in one pipeline (psycopg sends them
        together and reads the answers after): ``False`` when one of them
        changed no row."""
        turn = self._turn()
        work, turn.deferred = turn.deferred, []
        if not work:
            return True
        conn = self.db.connection()
        cursors = []
        try:
            with conn.pipeline():
                for sql, params in work:
                    cursor = conn.cursor()
                    cursors.append(cursor)
                    cursor.execute(sql, params)
            return all(cursor.rowcount == 1 for cursor in cursors)
        finally:
            for cursor in cursors:
                cursor.close()

    def _event_column_types(self) -> dict[str, str]:
        """The ``events`` columns' types, read once per process."""
        types = self._event_types
        if types is None:
            rows = self.db.execute_sql(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'events'::regclass AND attnum > 0 AND NOT attisdropped"
            ).fetchall()
            types = self._event_types = {name: kind for name, kind in rows}
        return types
