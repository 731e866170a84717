"""In-memory job store: leases (see :class:`ketter.store.ports.leases.LeasesPort`);
the claims, releases and the sweep's choices are
:mod:`ketter.store.composite.leases`, over the queries here."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ketter.choices import Kind
from ketter.jobs.states import State
from ketter.store.composite.leases import SOME_JOB, CompositeLeases
from ketter.store.memory.core import MemoryCore
from ketter.store.ports.leases import ACTIVE_STATES
from ketter.store.rows import JobRow


def _free(job: JobRow, now: float) -> bool:
    """Active, unleased (or lease expired) and due: the claimable condition."""
    return (
        job.state in ACTIVE_STATES
        and (job.lease_expires_at is None or job.lease_expires_at <= now)
        and (job.next_attempt_at is None or job.next_attempt_at <= now)
    )


def _best_first(jobs: Iterable[JobRow]) -> list[JobRow]:
    return sorted(jobs, key=lambda job: (-job.priority, job.id))


class LeasesMemory(MemoryCore, CompositeLeases):
    """The leases queries in memory."""

    def lease_clock_offset(self) -> float:
        return 0.0

    def lease_clock(self, now: float) -> float:
        """The caller's clock: one node, one clock."""
        return now

    def paused_route_names(self) -> set[str]:
        with self._lock:
            return {
                s.route for s in self.tables.route_status.values() if s.paused == 1 or s.held == 1
            }

    def _running(self, route: str, now: float) -> int:
        with self._lock:
            return sum(
                1
                for job in self.tables.jobs.values()
                if job.route == route
                and job.state in ACTIVE_STATES
                and job.lease_expires_at is not None
                and job.lease_expires_at > now
            )

    def _claimable_job(self, job_id: int, now: float) -> JobRow | None:
        with self._lock:
            job = self.tables.jobs.get(job_id)
            return dataclasses.replace(job) if job is not None and _free(job, now) else None

    def _due_jobs(
        self, routes: Sequence[str], now: float, limit: int, *, lock: bool = True
    ) -> list[tuple[int, int, str]]:
        wanted = set(routes)
        with self._lock:
            due = _best_first(
                j for j in self.tables.jobs.values() if _free(j, now) and j.route in wanted
            )
            return [(j.priority, j.id, j.route) for j in due[:limit]]

    def _fresh_file_jobs(
        self, route: str, now: float, *, mode: str, max_size: int, limit: int
    ) -> list[JobRow]:
        with self._lock:
            fresh = _best_first(
                j
                for j in self.tables.jobs.values()
                if _free(j, now)
                and j.route == route
                and j.state == State.DETECTED.value
                and j.lease_owner is None
                and j.kind == Kind.FILE
                and j.mode == mode
                and j.source_size is not None
                and j.source_size <= max_size
            )
            return [dataclasses.replace(job) for job in fresh[:limit]]

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
        with self._write():
            row = self.tables.jobs.get(job.id)
            if row is None or row.claim != job.claim or row.state != job.state:
                return False
            row.claim, row.lease_owner, row.lease_expires_at = token, owner, now + ttl
            row.attempt, row.progress_at, row.updated_at = attempt, now, now
            row.started_at = job.started_at or now
            self._insert_event(event)
            return True

    def _held(self, job_id: int, claim: str) -> JobRow | None:
        job = self.tables.jobs.get(job_id)
        return job if job is not None and job.claim is not None and job.claim == claim else None

    def _first_claimable(self, routes: Sequence[str], now: float) -> int | None:
        return SOME_JOB  # the claim's own search costs as little in memory

    def claim_holder(self, job_id: int) -> str | None:
        with self._lock:
            job = self.tables.jobs.get(job_id)
            return None if job is None else job.claim

    def leases_held(self, claims: Mapping[int, str], *, now: float) -> dict[int, float]:
        with self._lock:
            held = {}
            for job_id, claim in claims.items():
                job = self.tables.jobs.get(job_id)
                if job is not None and job.claim is not None and job.claim == claim:
                    expires = job.lease_expires_at
                    held[job_id] = 0.0 if expires is None else expires - now
            return held

    def let_go(self, job_id: int, claim: str, *, next_attempt_at: float) -> bool:
        with self._write():
            job = self._held(job_id, claim)
            if job is None:
                return False
            job.lease_owner = job.lease_expires_at = None
            job.next_attempt_at = next_attempt_at
            job.attempt += 1
            return True

    def expired_lease_count(self, now: float) -> int:
        with self._lock:
            return sum(
                1
                for j in self.tables.jobs.values()
                if j.state in ACTIVE_STATES
                and j.lease_owner is not None
                and j.lease_expires_at is not None
                and j.lease_expires_at <= now
            )

    def smallest_waiting_size(self, route: str) -> int | None:
        with self._lock:
            sizes = [
                j.size or j.source_size
                for j in self.tables.jobs.values()
                if j.route == route and j.state in ACTIVE_STATES
            ]
            known = [size for size in sizes if size is not None]
            return min(known) if known else None

    def is_active(self, job_id: int) -> bool:
        with self._lock:
            job = self.tables.jobs.get(job_id)
            return job is not None and job.state in ACTIVE_STATES
