"""SQLite job store: leases (see :class:`ketter.store.ports.leases.LeasesPort`).

A worker owns a job only while its lease is live and the job's ``claim``
column holds the worker's token; every later write is conditional on that
token. Raw SQL: one claim per transfer, and building these queries with
peewee cost more than running them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ketter.jobs.states import State
from ketter.store.ports.leases import ACTIVE_STATES, FRESH_STATES, Taken, new_token, took
from ketter.store.rows import JobRow
from ketter.store.sqlite.core import SqliteCore
from ketter.store.sqlite.jobs import select_jobs

# state IN (active states), not NOT IN (terminal): the former uses the
# (state, next_attempt_at) index, the latter scans every job ever run.
_ACTIVE_SQL = "state IN ({})".format(", ".join(f"'{s}'" for s in ACTIVE_STATES))
_CLAIMABLE = (
    f"{_ACTIVE_SQL} AND (lease_expires_at IS NULL OR lease_expires_at <= ?) "
    "AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
)


class LeasesSql(SqliteCore):
    """The leases operations on SQLite."""

    def paused_route_names(self) -> set[str]:
        rows = self.db.execute_sql("SELECT route FROM route_status WHERE paused = 1")
        return {row[0] for row in rows}

    def _running(self, route: str, now: float) -> int:
        """Jobs of the route under a live lease (for ``max_parallel``)."""
        return int(
            self.db.execute_sql(
                f"SELECT count(*) FROM jobs WHERE route = ? AND {_ACTIVE_SQL} "
                "AND lease_expires_at > ?",
                (route, now),
            ).fetchone()[0]
        )

    def claim_next(
        self,
        routes: Mapping[str, int],
        *,
        hint: int | None,
        owner: str,
        now: float,
        ttl: float,
    ) -> Taken | None:
        # One IMMEDIATE transaction: the candidate query, the max_parallel
        # check and the compare-and-set cannot interleave with another
        # worker's.
        db = self.db
        with self.transaction():
            paused = self.paused_route_names()

            def eligible(route: str) -> bool:
                if route not in routes or route in paused:
                    return False  # route removed from the config, or paused: leave it be
                limit = routes[route]
                return not limit or self._running(route, now) < limit

            # The hint first, by primary key: the common case costs one lookup.
            if hint is not None:
                for job in select_jobs(db, f"id = ? AND {_CLAIMABLE}", hint, now, now):
                    if eligible(job.route):
                        return self._take(job, owner, now, ttl)
            running_routes = [name for name in routes if name not in paused]
            if not running_routes:
                return None
            marks = ", ".join("?" for _ in running_routes)
            # Ids and routes only: the hint of most messages was taken by a
            # batch already, and building 64 rows to take one cost more than
            # the claim itself.
            candidates = db.execute_sql(
                f"SELECT id, route FROM jobs WHERE {_CLAIMABLE} AND route IN ({marks}) "
                "ORDER BY priority DESC, id LIMIT 64",
                (now, now, *running_routes),
            ).fetchall()
            verdicts: dict[str, bool] = {}
            for job_id, route in candidates:
                if route not in verdicts:
                    verdicts[route] = eligible(route)
                if verdicts[route]:
                    (job,) = select_jobs(db, "id = ?", job_id)
                    return self._take(job, owner, now, ttl)
        return None

    def claim_batch(
        self,
        route: str,
        *,
        max_parallel: int,
        owner: str,
        now: float,
        ttl: float,
        limit: int,
        max_size: int,
        mode: str,
    ) -> list[Taken]:
        taken: list[Taken] = []
        with self.transaction():
            if route in self.paused_route_names():
                return []
            if max_parallel:
                limit = min(limit, max_parallel - self._running(route, now))
            if limit <= 0:
                return []
            for job in select_jobs(
                self.db,
                f"{_CLAIMABLE} AND route = ? AND state = ? AND lease_owner IS NULL "
                "AND kind = 'file' AND mode = ? AND source_size <= ? "
                "ORDER BY priority DESC, id LIMIT ?",
                now,
                now,
                route,
                State.DETECTED.value,
                mode,
                max_size,
                limit,
            ):
                got = self._take(job, owner, now, ttl)
                if got is not None:
                    taken.append(got)
        return taken

    def _take(self, job: JobRow, owner: str, now: float, ttl: float) -> Taken | None:
        token = new_token()
        previous = job.lease_owner
        fresh = job.state in FRESH_STATES
        # The previous holder died with the lease (crash), whatever the state.
        recovered = previous is not None
        released = not fresh and previous is None
        # A graceful release does not use up an attempt; a crash does (a job
        # that kills its worker every time must end up failed, not loop forever).
        attempt = job.attempt + (0 if released else 1)
        updated = self.db.execute_sql(
            "UPDATE jobs SET claim = ?, lease_owner = ?, lease_expires_at = ?, attempt = ?, "
            "progress_at = ?, updated_at = ?, started_at = ? "
            "WHERE id = ? AND claim IS ? AND state = ?",
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
        if updated != 1:  # pragma: no cover - impossible inside the IMMEDIATE transaction
            return None
        return took(self, job, token, owner, now, ttl, attempt, recovered, released)

    def renew_lease(
        self,
        job_id: int,
        claim: str,
        *,
        expires_at: float,
        bytes_done: int | None = None,
        progress_at: float | None = None,
    ) -> bool:
        fields: dict[str, Any] = {"lease_expires_at": expires_at}
        if bytes_done is not None:
            fields["bytes_done"] = bytes_done
        if progress_at is not None:
            fields["progress_at"] = progress_at
        assignments = ", ".join(f'"{name}" = ?' for name in fields)
        cursor = self.db.execute_sql(
            f"UPDATE jobs SET {assignments} WHERE id = ? AND claim = ?",
            (*fields.values(), job_id, claim),
        )
        return int(cursor.rowcount) == 1

    def claim_holder(self, job_id: int) -> str | None:
        row = self.db.execute_sql("SELECT claim FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def release_lease(
        self, job_id: int, claim: str, *, now: float, reason: str, bytes_done: int | None = None
    ) -> bool:
        with self.transaction():
            rows = select_jobs(self.db, "id = ? AND claim = ?", job_id, claim)
            if not rows:
                return False
            job = rows[0]
            kept = job.bytes_done if bytes_done is None else bytes_done
            self.db.execute_sql(
                "UPDATE jobs SET claim = NULL, lease_owner = NULL, lease_expires_at = NULL, "
                "next_attempt_at = ?, updated_at = ?, bytes_done = ? WHERE id = ? AND claim = ?",
                (now, now, kept, job_id, claim),
            )
            self.append_event(
                "release",
                now=now,
                job_id=job_id,
                route=job.route,
                from_state=job.state,
                to_state=job.state,
                attempt=job.attempt,
                details={"reason": reason, "bytes_done": kept},
            )
        return True

    def let_go(self, job_id: int, claim: str, *, next_attempt_at: float) -> bool:
        cursor = self.db.execute_sql(
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL, "
            "next_attempt_at = ?, attempt = attempt + 1 WHERE id = ? AND claim = ?",
            (next_attempt_at, job_id, claim),
        )
        return int(cursor.rowcount) == 1

    def due_job_ids(self, routes: Mapping[str, int], *, now: float, limit: int) -> list[int]:
        paused = self.paused_route_names()
        running = {name: cap for name, cap in routes.items() if name not in paused}
        due = (
            f"{_ACTIVE_SQL} AND (lease_expires_at IS NULL OR lease_expires_at <= ?) "
            "AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
        )
        unlimited = [name for name, cap in running.items() if not cap]
        picked: list[tuple[int, int]] = []
        if unlimited:
            marks = ", ".join("?" for _ in unlimited)
            picked += self.db.execute_sql(
                f"SELECT priority, id FROM jobs WHERE {due} AND route IN ({marks}) "
                "ORDER BY priority DESC, id LIMIT ?",
                (now, now, *unlimited, limit),
            ).fetchall()
        for name, cap in running.items():
            if not cap:
                continue
            free = max(cap - self._running(name, now), 0)
            if free:
                picked += self.db.execute_sql(
                    f"SELECT priority, id FROM jobs WHERE {due} AND route = ? "
                    "ORDER BY priority DESC, id LIMIT ?",
                    (now, now, name, free),
                ).fetchall()
        picked.sort(key=lambda pair: (-pair[0], pair[1]))
        return [job_id for _, job_id in picked[:limit]]

    def expired_lease_count(self, now: float) -> int:
        return int(
            self.db.execute_sql(
                f"SELECT count(*) FROM jobs WHERE {_ACTIVE_SQL} AND lease_owner IS NOT NULL "
                "AND lease_expires_at <= ?",
                (now,),
            ).fetchone()[0]
        )

    def smallest_waiting_size(self, route: str) -> int | None:
        row = self.db.execute_sql(
            "SELECT MIN(COALESCE(NULLIF(size, 0), source_size)) FROM jobs "
            f"WHERE route = ? AND {_ACTIVE_SQL}",
            (route,),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def is_active(self, job_id: int) -> bool:
        row = self.db.execute_sql(
            f"SELECT 1 FROM jobs WHERE id = ? AND {_ACTIVE_SQL} LIMIT 1", (job_id,)
        ).fetchone()
        return row is not None

    def make_due_now(self, job_id: int, *, now: float, by: str) -> bool:
        with self.transaction():
            rows = select_jobs(self.db, "id = ? AND state = ?", job_id, State.RETRY_WAIT.value)
            if not rows:
                return False
            job = rows[0]
            self.db.execute_sql(
                "UPDATE jobs SET next_attempt_at = ?, attempt = 0, updated_at = ? WHERE id = ?",
                (now, now, job_id),
            )
            self.append_event(
                "requeue",
                now=now,
                job_id=job_id,
                route=job.route,
                from_state=job.state,
                to_state=job.state,
                attempt=0,
                details={"by": by, "was_due_at": job.next_attempt_at},
            )
        return True
