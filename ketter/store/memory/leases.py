"""In-memory job store: leases (see :class:`ketter.store.ports.leases.LeasesPort`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from ketter.choices import Kind
from ketter.jobs.states import State
from ketter.store.memory.core import MemoryCore
from ketter.store.ports.leases import ACTIVE_STATES, FRESH_STATES, Taken, new_token, took
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


class LeasesMemory(MemoryCore):
    """The leases operations in memory."""

    def paused_route_names(self) -> set[str]:
        with self._lock:
            return {s.route for s in self.tables.route_status.values() if s.paused == 1}

    def _running(self, route: str, now: float) -> int:
        return sum(
            1
            for job in self.tables.jobs.values()
            if job.route == route
            and job.state in ACTIVE_STATES
            and job.lease_expires_at is not None
            and job.lease_expires_at > now
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
        with self._write():
            paused = self.paused_route_names()

            def eligible(route: str) -> bool:
                if route not in routes or route in paused:
                    return False
                limit = routes[route]
                return not limit or self._running(route, now) < limit

            jobs = self.tables.jobs
            if hint is not None:
                job = jobs.get(hint)
                if job is not None and _free(job, now) and eligible(job.route):
                    return self._take(job, owner, now, ttl)
            running = {name for name in routes if name not in paused}
            if not running:
                return None
            candidates = _best_first(
                j for j in jobs.values() if _free(j, now) and j.route in running
            )[:64]
            verdicts: dict[str, bool] = {}
            for job in candidates:
                if job.route not in verdicts:
                    verdicts[job.route] = eligible(job.route)
                if verdicts[job.route]:
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
        with self._write():
            if route in self.paused_route_names():
                return []
            if max_parallel:
                limit = min(limit, max_parallel - self._running(route, now))
            if limit <= 0:
                return []
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
            )[:limit]
            return [self._take(job, owner, now, ttl) for job in fresh]

    def _take(self, job: JobRow, owner: str, now: float, ttl: float) -> Taken:
        previous = job.lease_owner
        fresh = job.state in FRESH_STATES
        recovered = previous is not None
        released = not fresh and previous is None
        attempt = job.attempt + (0 if released else 1)
        got = took(self, job, new_token(), owner, now, ttl, attempt, recovered, released)
        return dataclasses.replace(got, row=dataclasses.replace(job))

    def renew_lease(
        self,
        job_id: int,
        claim: str,
        *,
        expires_at: float,
        bytes_done: int | None = None,
        progress_at: float | None = None,
    ) -> bool:
        with self._write():
            job = self._held(job_id, claim)
            if job is None:
                return False
            job.lease_expires_at = expires_at
            if bytes_done is not None:
                job.bytes_done = bytes_done
            if progress_at is not None:
                job.progress_at = progress_at
            return True

    def _held(self, job_id: int, claim: str) -> JobRow | None:
        job = self.tables.jobs.get(job_id)
        return job if job is not None and job.claim is not None and job.claim == claim else None

    def claim_holder(self, job_id: int) -> str | None:
        with self._lock:
            job = self.tables.jobs.get(job_id)
            return None if job is None else job.claim

    def release_lease(
        self, job_id: int, claim: str, *, now: float, reason: str, bytes_done: int | None = None
    ) -> bool:
        with self._write():
            job = self._held(job_id, claim)
            if job is None:
                return False
            kept = job.bytes_done if bytes_done is None else bytes_done
            job.claim = job.lease_owner = job.lease_expires_at = None
            job.next_attempt_at = job.updated_at = now
            job.bytes_done = kept
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
        with self._write():
            job = self._held(job_id, claim)
            if job is None:
                return False
            job.lease_owner = job.lease_expires_at = None
            job.next_attempt_at = next_attempt_at
            job.attempt += 1
            return True

    def due_job_ids(self, routes: Mapping[str, int], *, now: float, limit: int) -> list[int]:
        with self._lock:
            paused = self.paused_route_names()
            running = {name: cap for name, cap in routes.items() if name not in paused}
            due = [j for j in self.tables.jobs.values() if _free(j, now)]
            picked = _best_first(j for j in due if j.route in running and not running[j.route])
            picked = picked[:limit]
            for name, cap in running.items():
                if cap:
                    free = max(cap - self._running(name, now), 0)
                    picked += _best_first(j for j in due if j.route == name)[:free]
            return [job.id for job in _best_first(picked)[:limit]]

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

    def make_due_now(self, job_id: int, *, now: float, by: str) -> bool:
        with self._write():
            job = self.tables.jobs.get(job_id)
            if job is None or job.state != State.RETRY_WAIT.value:
                return False
            was_due_at = job.next_attempt_at
            job.next_attempt_at = job.updated_at = now
            job.attempt = 0
            self.append_event(
                "requeue",
                now=now,
                job_id=job_id,
                route=job.route,
                from_state=job.state,
                to_state=job.state,
                attempt=0,
                details={"by": by, "was_due_at": was_due_at},
            )
            return True
