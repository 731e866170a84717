"""PostgreSQL job store: what its jobs area does its own way (the rest is
:mod:`ketter.store.sql.jobs`): a transition's compare-and-set and its audit
event in **one** statement, one round trip instead of two, on the hot path
(five or six per transfer, each under the store's write turn); and a
batch's shared commit tried whole sends every job's transitions in one
pipeline, one round trip for all of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ketter.store.composite.jobs import Planned, one_by_one
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
        return self._send_change(job_id, state, claim, values, unplaced, uncancelled, [event])

    def _change_and_append_all(
        self, job_id: int, claim: str | None, planned: Sequence[Planned]
    ) -> int:
        # One UPDATE for the job's changes of one advance (validated and
        # transferring; placed and completed): a row version, its index
        # entries and its trigger once instead of once per change. The
        # checks of the first change hold for all of them, unless a later
        # one checks a column an earlier one sets: then one by one.
        if len(planned) == 1 or not _mergeable(planned):
            return one_by_one(self, job_id, claim, planned)
        values: dict[str, Any] = {}
        for step in planned:
            values.update(step.values)
        events = [step.event for step in planned]
        unplaced = any(step.unplaced for step in planned)
        uncancelled = any(step.uncancelled for step in planned)
        first = planned[0].state
        if self._send_change(job_id, first, claim, values, unplaced, uncancelled, events):
            return len(planned)
        # Refused, nothing written: a change at a time finds which one (the
        # earlier ones written, then rolled back with the caller's refusal),
        # and the refusal reads the row as SQLite's would.
        return one_by_one(self, job_id, claim, planned)

    def _send_change(
        self,
        job_id: int,
        state: str,
        claim: str | None,
        values: dict[str, Any],
        unplaced: bool,
        uncancelled: bool,
        events: list[dict[str, Any]],
    ) -> bool:
        """The compare-and-set and its ``events`` in one statement (sent now,
        or held back in a shared commit tried whole): whether it held."""
        # The events are inserted for each row the update changed: none when
        # the compare-and-set is refused. A parameter in a SELECT list has no
        # type of its own: each one is cast to its column's.
        types = self._event_column_types()
        assignments = ", ".join(f'"{name}" = ?' for name in values)
        selected = ", ".join(f"?::{types[name]}" for name in EVENT_COLUMNS)
        rows = ", ".join([f"({selected})"] * len(events))
        inserted = (
            f"SELECT {selected} FROM changed"
            if len(events) == 1
            else f"SELECT v.* FROM changed, (VALUES {rows}) AS v"
        )
        sql = self.dialect.sql(
            f"WITH changed AS (UPDATE jobs SET {assignments} "
            "WHERE id = ? AND state = ? AND claim IS ?"
            + (" AND placed_at IS NULL" if unplaced else "")
            + (" AND cancel_requested_at IS NULL" if uncancelled else "")
            + f" RETURNING id) INSERT INTO events ({_EVENT_NAMES}) {inserted}"
        )
        known = (*values.values(), job_id, state, claim)

        def params() -> tuple[object, ...]:
            return (*known, *(event[name] for event in events for name in EVENT_COLUMNS))

        turn = self._turn()
        if turn.lazy:
            # Before the write turn: the events are re-sealed when it is
            # taken (PgCore._take_turn), the parameters read then.
            turn.unsealed.extend(events)
            turn.deferred.append((sql, params, len(events)))
            return True
        if turn.flat:
            # A shared commit tried whole: sent with the others at its end
            # (_settle), one round trip; a refusal there rolls it all back
            # and each job runs alone.
            turn.deferred.append((sql, params(), len(events)))
            return True
        return int(self.db.execute_sql(sql, params()).rowcount) == len(events)

    def _settle(self) -> bool:
        """The held-back transitions in one pipeline (psycopg sends them
        together and reads the answers after): ``False`` when one of them
        changed fewer rows than it should."""
        turn = self._turn()
        if turn.lazy:
            self._take_turn()
        work, turn.deferred = turn.deferred, []
        if not work:
            return True
        conn = self.db.connection()
        cursors = []
        try:
            with conn.pipeline():
                for sql, params, _ in work:
                    cursor = conn.cursor()
                    cursors.append(cursor)
                    cursor.execute(sql, params() if callable(params) else params)
            return all(
                cursor.rowcount == rows for cursor, (_, _, rows) in zip(cursors, work, strict=True)
            )
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


def _mergeable(planned: Sequence[Planned]) -> bool:
    """Whether the checks of ``planned`` all hold on the row as it was
    before the first: no change checks a column an earlier one sets (the
    claim and the id every change checks; the placement and the cancel
    request those that ask)."""
    for i, step in enumerate(planned[1:], start=1):
        earlier = {name for before in planned[:i] for name in before.values}
        if {"claim", "id"} & earlier:
            return False
        if (step.unplaced and "placed_at" in earlier) or (
            step.uncancelled and "cancel_requested_at" in earlier
        ):
            return False
    return True
