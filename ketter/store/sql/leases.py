"""The SQL job store: leases (see :class:`ketter.store.ports.leases.LeasesPort`);
the claims, releases and the sweep's choices are
:mod:`ketter.store.composite.leases`, over the queries here.

A worker owns a job only while its lease is live and the job's ``claim``
column holds the worker's token; every later write is conditional on that
token. Raw SQL: one claim per transfer, and building these queries with
peewee cost more than running them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ketter.jobs.states import State
from ketter.store.composite.leases import SOME_JOB, CompositeLeases
from ketter.store.ports.leases import ACTIVE_STATES
from ketter.store.rows import JobRow
from ketter.store.sql.jobs import JobsShared

# state IN (active states), not NOT IN (terminal): the former uses the
# (state, next_attempt_at) index, the latter scans every job ever run.
_ACTIVE_SQL = "state IN ({})".format(", ".join(f"'{s}'" for s in ACTIVE_STATES))
_CLAIMABLE = (
    f"{_ACTIVE_SQL} AND (lease_expires_at IS NULL OR lease_expires_at <= ?) "
    "AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
)


class LeasesShared(JobsShared, CompositeLeases):
    """The leases queries on SQL."""

    def paused_route_names(self) -> set[str]:
        rows = self._exec("SELECT route FROM route_status WHERE paused = 1 OR held = 1")
        return {row[0] for row in rows}

    def _running(self, route: str, now: float) -> int:
        return int(
            self._exec(
                f"SELECT count(*) FROM jobs WHERE route = ? AND {_ACTIVE_SQL} "
                "AND lease_expires_at > ?",
                (route, now),
            ).fetchone()[0]
        )

    def _claimable_job(self, job_id: int, now: float) -> JobRow | None:
        # Locked until the claim commits on PostgreSQL; a row another
        # claimant holds is not claimable now (SKIP LOCKED), on any node.
        lock = self.dialect.lock_rows
        for job in self._select_jobs(f"id = ? AND {_CLAIMABLE}{lock}", job_id, now, now):
            return job
        return None

    def _first_claimable(self, routes: Sequence[str], now: float) -> int | None:
        if not routes:
            return None
        # The server's clock where the leases are on it (PostgreSQL; not in
        # the contract suite, which pins time): no round trip to read it.
        clock = self.dialect.clock if getattr(self, "db_clock", False) else None
        where = _CLAIMABLE if clock is None else _CLAIMABLE.replace("?", clock)
        marks = ", ".join("?" for _ in routes)
        order = self.dialect.any_in_order
        found = self._exec(
            f"SELECT id FROM jobs WHERE {where} AND route IN ({marks}){order} LIMIT 1",
            ((now, now) if clock is None else ()) + tuple(routes),
        ).fetchone()
        if found is None:
            return None
        # In claim order where the dialect reads so (PostgreSQL): the best.
        return int(found[0]) if order else SOME_JOB

    def _due_jobs(
        self, routes: Sequence[str], now: float, limit: int, *, lock: bool = True
    ) -> list[tuple[int, int, str]]:
        marks = ", ".join("?" for _ in routes)
        locked = self.dialect.lock_rows if lock else ""
        rows = self._exec(
            f"SELECT priority, id, route FROM jobs WHERE {_CLAIMABLE} AND route IN ({marks}) "
            f"ORDER BY priority DESC, id LIMIT ?{locked}",
            (now, now, *routes, limit),
        ).fetchall()
        return [(priority, job_id, route) for priority, job_id, route in rows]

    def _fresh_file_jobs(
        self, route: str, now: float, *, mode: str, max_size: int, limit: int
    ) -> list[JobRow]:
        return self._select_jobs(
            f"{_CLAIMABLE} AND route = ? AND state = ? AND lease_owner IS NULL "
            "AND kind = 'file' AND mode = ? AND source_size <= ? "
            f"ORDER BY priority DESC, id LIMIT ?{self.dialect.lock_rows}",
            now,
            now,
            route,
            State.DETECTED.value,
            mode,
            max_size,
            limit,
        )

    def _claim_row(
        self,
        job: JobRow,
        token: str,
        owner: str,
        attempt: int,
        now: float,
        ttl: float,
        event: dict[str, Any],
    ) -> bool:
        values = {
            "claim": token,
            "lease_owner": owner,
            "lease_expires_at": now + ttl,
            "attempt": attempt,
            "progress_at": now,
            "updated_at": now,
            "started_at": job.started_at or now,
        }
        # The compare-and-set of every transition (id, state, claim), and its
        # event: one statement on PostgreSQL (ketter.store.postgres.jobs).
        return self._change_and_append(job.id, job.state, job.claim, values, False, False, event)

    def claim_holder(self, job_id: int) -> str | None:
        row = self._exec("SELECT claim FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def leases_held(self, claims: Mapping[int, str], *, now: float) -> dict[int, float]:
        if not claims:
            return {}
        # The leases' clock in the statement where it is the server's
        # (PostgreSQL): its ``now()``, no round trip of its own to read it.
        clock = self.dialect.clock if getattr(self, "db_clock", False) else None
        left = "lease_expires_at - ?" if clock is None else f"lease_expires_at - {clock}"
        marks = ", ".join("?" for _ in claims)
        rows = self._exec(
            f"SELECT id, claim, {left} FROM jobs WHERE id IN ({marks})",
            ((now,) if clock is None else ()) + tuple(claims),
        ).fetchall()
        return {
            int(job_id): 0.0 if seconds is None else float(seconds)
            for job_id, claim, seconds in rows
            if claim is not None and claim == claims[int(job_id)]
        }

    def let_go(self, job_id: int, claim: str, *, next_attempt_at: float) -> bool:
        cursor = self._exec(
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL, "
            "next_attempt_at = ?, attempt = attempt + 1 WHERE id = ? AND claim = ?",
            (
                self._due_on_lease_clock({"next_attempt_at": next_attempt_at})["next_attempt_at"],
                job_id,
                claim,
            ),
        )
        return int(cursor.rowcount) == 1

    def expired_lease_count(self, now: float) -> int:
        now = self.lease_clock(now)
        return int(
            self._exec(
                f"SELECT count(*) FROM jobs WHERE {_ACTIVE_SQL} AND lease_owner IS NOT NULL "
                "AND lease_expires_at <= ?",
                (now,),
            ).fetchone()[0]
        )

    def smallest_waiting_size(self, route: str) -> int | None:
        row = self._exec(
            "SELECT MIN(COALESCE(NULLIF(size, 0), source_size)) FROM jobs "
            f"WHERE route = ? AND {_ACTIVE_SQL}",
            (route,),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def is_active(self, job_id: int) -> bool:
        row = self._exec(
            f"SELECT 1 FROM jobs WHERE id = ? AND {_ACTIVE_SQL} LIMIT 1", (job_id,)
        ).fetchone()
        return row is not None
