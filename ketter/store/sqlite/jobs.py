"""SQLite job store: jobs (see :class:`ketter.store.ports.jobs.JobsPort`).

Raw SQL, not peewee's query builder: transitions are the hot path (five or
six per transfer) and building a peewee query costs about a millisecond of
CPU, more than the SQLite statement itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ketter.errors import InvalidTransition
from ketter.store.db import StoreDatabase
from ketter.store.ports.jobs import JobChange, explain_refusal
from ketter.store.rows import JOB_COLUMNS, JobRow, NoSuchJob
from ketter.store.sqlite.core import SqliteCore

#: Columns a change may set (guards the raw SQL below against typos).
_COLUMNS = frozenset(JOB_COLUMNS)
_SELECT_JOBS = "SELECT {} FROM jobs WHERE ".format(", ".join(f'"{c}"' for c in JOB_COLUMNS))


def select_jobs(db: StoreDatabase, where: str, *params: object) -> list[JobRow]:
    """Jobs matching raw SQL ``where`` (may end with ORDER BY / LIMIT), rows
    built straight from the cursor: the hot paths (claims, the steps of a
    transfer) read jobs several times per transfer, and peewee's query
    builder and models cost five times the read itself."""
    cursor = db.execute_sql(_SELECT_JOBS + where, params)
    return [JobRow(*row) for row in cursor.fetchall()]


class JobsSql(SqliteCore):
    """The jobs operations on SQLite."""

    def get_job(self, job_id: int) -> JobRow:
        job = self.find_job(job_id)
        if job is None:
            raise NoSuchJob(f"job {job_id} does not exist")
        return job

    def find_job(self, job_id: int) -> JobRow | None:
        for job in select_jobs(self.db, "id = ?", job_id):
            return job
        return None

    def job_ids(
        self,
        *,
        state: str | None = None,
        route: str | None = None,
        updated_since: float | None = None,
    ) -> list[int]:
        where: list[str] = ["1"]
        params: list[object] = []
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if route is not None:
            where.append("route = ?")
            params.append(route)
        if updated_since is not None:
            where.append("updated_at >= ?")
            params.append(updated_since)
        sql = f"SELECT id FROM jobs WHERE {' AND '.join(where)} ORDER BY id"
        return [row[0] for row in self.db.execute_sql(sql, tuple(params)).fetchall()]

    def compare_and_set(
        self,
        job_id: int,
        *,
        state: str,
        claim: str | None,
        values: dict[str, Any],
        only_unplaced: bool = False,
    ) -> bool:
        unknown = set(values) - _COLUMNS
        if unknown:
            raise ValueError(f"not a jobs column: {', '.join(sorted(unknown))}")
        assignments = ", ".join(f'"{name}" = ?' for name in values)
        sql = f"UPDATE jobs SET {assignments} WHERE id = ? AND state = ? AND claim IS ?" + (
            " AND placed_at IS NULL" if only_unplaced else ""
        )
        cursor = self.db.execute_sql(sql, (*values.values(), job_id, state, claim))
        return int(cursor.rowcount) == 1

    def _route_and_attempt(self, job_id: int) -> tuple[str, int]:
        row = self.db.execute_sql(
            "SELECT route, attempt FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise InvalidTransition(f"job {job_id} does not exist")
        return row[0], row[1]

    def advance(
        self,
        job_id: int,
        state: str,
        changes: Sequence[JobChange],
        *,
        claim: str | None,
        now: float,
        durable: bool = False,
        route: str | None = None,
        attempt: int | None = None,
    ) -> str:
        current = state
        with self.transaction(durable=durable):
            if route is None or attempt is None:
                route, attempt = self._route_and_attempt(job_id)
            for change in changes:
                new = current if change.to is None else change.to
                values = {"updated_at": now, **change.fields}
                if change.to is not None:
                    values["state"] = new
                if not self.compare_and_set(
                    job_id,
                    state=current,
                    claim=claim,
                    values=values,
                    only_unplaced=change.only_unplaced,
                ):
                    raise self.refusal(job_id, current, new, claim)
                attempt = int(values.get("attempt", attempt))
                self.append_event(
                    change.event,
                    now=now,
                    job_id=job_id,
                    route=route,
                    from_state=current,
                    to_state=new,
                    attempt=attempt,
                    details=change.details,
                )
                current = new
        return current

    def refusal(
        self, job_id: int, from_state: str, to_state: str, claim: str | None
    ) -> InvalidTransition:
        return explain_refusal(self.find_job(job_id), job_id, from_state, to_state, claim)

    def set_attempt(self, job_id: int, claim: str, attempt: int) -> bool:
        cursor = self.db.execute_sql(
            "UPDATE jobs SET attempt = ? WHERE id = ? AND claim = ?", (attempt, job_id, claim)
        )
        return int(cursor.rowcount) == 1

    def set_error(self, job_id: int, error: str) -> None:
        self.db.execute_sql("UPDATE jobs SET error = ? WHERE id = ?", (error, job_id))
