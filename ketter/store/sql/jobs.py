"""The SQL job store: jobs (see :class:`ketter.store.ports.jobs.JobsPort`);
the transitions with their events are :mod:`ketter.store.composite.jobs`.

Raw SQL, not peewee's query builder: transitions are the hot path (five or
six per transfer) and building a peewee query costs about a millisecond of
CPU, more than the statement itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ketter.errors import InvalidTransition
from ketter.store.composite.jobs import CompositeJobs, Planned, one_by_one
from ketter.store.rows import JOB_COLUMNS, JobRow
from ketter.store.sql.core import SqlCore

_SELECT_JOBS = "SELECT {} FROM jobs WHERE ".format(", ".join(f'"{c}"' for c in JOB_COLUMNS))


class JobsShared(SqlCore, CompositeJobs):
    """The jobs operations (``advance``: :class:`CompositeJobs`)."""

    def _select_jobs(self, where: str, *params: object) -> list[JobRow]:
        """Jobs matching raw SQL ``where`` (may end with ORDER BY / LIMIT),
        rows built straight from the cursor: the hot paths (claims, the
        steps of a transfer) read jobs several times per transfer, and
        peewee's query builder and models cost five times the read itself."""
        cursor = self._exec(_SELECT_JOBS + where, params)
        return [JobRow(*row) for row in cursor.fetchall()]

    def find_job(self, job_id: int) -> JobRow | None:
        for job in self._select_jobs("id = ?", job_id):
            return job
        return None

    def job_ids(
        self,
        *,
        state: str | None = None,
        route: str | None = None,
        updated_since: float | None = None,
    ) -> list[int]:
        where: list[str] = [self.dialect.true]
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
        return [row[0] for row in self._exec(sql, tuple(params)).fetchall()]

    def _compare_and_set(
        self,
        job_id: int,
        state: str,
        claim: str | None,
        values: dict[str, Any],
        unplaced: bool,
        uncancelled: bool = False,
    ) -> bool:
        sql = _cas_sql(values, unplaced, uncancelled)
        cursor = self._exec(sql, _cas_params(job_id, state, claim, values))
        return int(cursor.rowcount) == 1

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
        # Two statements; one on PostgreSQL (ketter.store.postgres.jobs),
        # where each is a round trip.
        turn = self._turn()
        if turn.lazy:
            # A shared commit tried whole, before its write turn: both held
            # back, the change checked when _settle sends it (a refusal
            # there rolls the try back and each job runs alone).
            sql = _cas_sql(values, unplaced, uncancelled)
            turn.deferred.append(
                (self.dialect.sql(sql), _cas_params(job_id, state, claim, values), 1)
            )
            self._insert_event(event)
            return True
        if not self._compare_and_set(job_id, state, claim, values, unplaced, uncancelled):
            return False
        self._insert_event(event)
        return True

    def _change_and_append_all(
        self, job_id: int, claim: str | None, planned: Sequence[Planned]
    ) -> int:
        return one_by_one(self, job_id, claim, planned)

    def _route_and_attempt(self, job_id: int) -> tuple[str, int]:
        row = self._exec("SELECT route, attempt FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise InvalidTransition(f"job {job_id} does not exist")
        return row[0], row[1]

    def _update_held(self, job_id: int, claim: str, values: dict[str, Any]) -> bool:
        assignments = ", ".join(f'"{name}" = ?' for name in values)
        cursor = self._exec(
            f"UPDATE jobs SET {assignments} WHERE id = ? AND claim = ?",
            (*values.values(), job_id, claim),
        )
        return int(cursor.rowcount) == 1

    def cancel_requested(self, job_id: int) -> bool:
        row = self._exec("SELECT cancel_requested_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row is not None and row[0] is not None

    def set_error(self, job_id: int, error: str) -> None:
        self._exec("UPDATE jobs SET error = ? WHERE id = ?", (error, job_id))


def _cas_sql(values: dict[str, Any], unplaced: bool, uncancelled: bool) -> str:
    """A transition's compare-and-set (SQLite's spelling)."""
    assignments = ", ".join(f'"{name}" = ?' for name in values)
    return (
        f"UPDATE jobs SET {assignments} WHERE id = ? AND state = ? AND claim IS ?"
        + (" AND placed_at IS NULL" if unplaced else "")
        + (" AND cancel_requested_at IS NULL" if uncancelled else "")
    )


def _cas_params(
    job_id: int, state: str, claim: str | None, values: dict[str, Any]
) -> tuple[object, ...]:
    return (*values.values(), job_id, state, claim)
