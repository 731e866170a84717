"""PostgreSQL job store: leases (see :class:`ketter.store.ports.leases.LeasesPort`);
the claims, releases and the sweep's choices are
:mod:`ketter.store.composite.leases`, over the queries here.

A worker owns a job only while its lease is live and the job's ``claim``
column holds the worker's token; every later write is conditional on that
token. Raw SQL: one claim per transfer, and building these queries with
peewee cost more than running them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ketter.jobs.states import State
from ketter.store.composite.leases import CompositeLeases
from ketter.store.ports.leases import ACTIVE_STATES
from ketter.store.postgres.core import PgCore
from ketter.store.postgres.jobs import select_jobs
from ketter.store.rows import JobRow

# state IN (active states), not NOT IN (terminal): the former uses the
# (state, next_attempt_at) index, the latter scans every job ever run.
_ACTIVE_SQL = "state IN ({})".format(", ".join(f"'{s}'" for s in ACTIVE_STATES))
_CLAIMABLE = (
    f"{_ACTIVE_SQL} AND (lease_expires_at IS NULL OR lease_expires_at <= %s) "
    "AND (next_attempt_at IS NULL OR next_attempt_at <= %s)"
)


class LeasesPg(PgCore, CompositeLeases):
    """The leases queries on PostgreSQL."""

    def paused_route_names(self) -> set[str]:
        rows = self.db.execute_sql("SELECT route FROM route_status WHERE paused = 1 OR held = 1")
        return {row[0] for row in rows}

    def _running(self, route: str, now: float) -> int:
        # The count and the claim it allows are one step, as under SQLite's
        # write lock: claims that check a max_parallel queue here until the
        # claim (and its event) commits.
        self._write_turn()
        return int(
            self.db.execute_sql(
                f"SELECT count(*) FROM jobs WHERE route = %s AND {_ACTIVE_SQL} "
                "AND lease_expires_at > %s",
                (route, now),
            ).fetchone()[0]
        )

    def _claimable_job(self, job_id: int, now: float) -> JobRow | None:
        # Locked until the claim commits; a row another claimant holds is
        # not claimable now (SKIP LOCKED), whichever node it is on.
        for job in select_jobs(
            self.db, f"id = %s AND {_CLAIMABLE} FOR UPDATE SKIP LOCKED", job_id, now, now
        ):
            return job
        return None

    def _due_jobs(
        self, routes: Sequence[str], now: float, limit: int
    ) -> list[tuple[int, int, str]]:
        marks = ", ".join("%s" for _ in routes)
        # Locked until the claim commits: under READ COMMITTED the job read
        # next (find_job) would otherwise be the row as another claimant
        # just left it. Rows another claimant holds are passed over.
        rows = self.db.execute_sql(
            f"SELECT priority, id, route FROM jobs WHERE {_CLAIMABLE} AND route IN ({marks}) "
            "ORDER BY priority DESC, id LIMIT %s FOR UPDATE SKIP LOCKED",
            (now, now, *routes, limit),
        ).fetchall()
        return [(priority, job_id, route) for priority, job_id, route in rows]

    def _fresh_file_jobs(
        self, route: str, now: float, *, mode: str, max_size: int, limit: int
    ) -> list[JobRow]:
        return select_jobs(
            self.db,
            f"{_CLAIMABLE} AND route = %s AND state = %s AND lease_owner IS NULL "
            "AND kind = 'file' AND mode = %s AND source_size <= %s "
            "ORDER BY priority DESC, id LIMIT %s FOR UPDATE SKIP LOCKED",
            now,
            now,
            route,
            State.DETECTED.value,
            mode,
            max_size,
            limit,
        )

    def _claim_row(
        self, job: JobRow, token: str, owner: str, attempt: int, now: float, ttl: float
    ) -> bool:
        updated = self.db.execute_sql(
            "UPDATE jobs SET claim = %s, lease_owner = %s, lease_expires_at = %s, attempt = %s, "
            "progress_at = %s, updated_at = %s, started_at = %s "
            "WHERE id = %s AND claim IS NOT DISTINCT FROM %s AND state = %s",
            (
                token,
                owner,
                now + ttl,
                attempt,
                now,
                now,
                job.started_at or now,
                job.id,
                job.claim,
                job.state,
            ),
        ).rowcount
        return int(updated) == 1

    def claim_holder(self, job_id: int) -> str | None:
        row = self.db.execute_sql("SELECT claim FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return row[0] if row else None

    def let_go(self, job_id: int, claim: str, *, next_attempt_at: float) -> bool:
        cursor = self.db.execute_sql(
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL, "
            "next_attempt_at = %s, attempt = attempt + 1 WHERE id = %s AND claim = %s",
            (next_attempt_at, job_id, claim),
        )
        return int(cursor.rowcount) == 1

    def expired_lease_count(self, now: float) -> int:
        now = self.lease_clock(now)
        return int(
            self.db.execute_sql(
                f"SELECT count(*) FROM jobs WHERE {_ACTIVE_SQL} AND lease_owner IS NOT NULL "
                "AND lease_expires_at <= %s",
                (now,),
            ).fetchone()[0]
        )

    def smallest_waiting_size(self, route: str) -> int | None:
        row = self.db.execute_sql(
            "SELECT MIN(COALESCE(NULLIF(size, 0), source_size)) FROM jobs "
            f"WHERE route = %s AND {_ACTIVE_SQL}",
            (route,),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def is_active(self, job_id: int) -> bool:
        row = self.db.execute_sql(
            f"SELECT 1 FROM jobs WHERE id = %s AND {_ACTIVE_SQL} LIMIT 1", (job_id,)
        ).fetchone()
        return row is not None
