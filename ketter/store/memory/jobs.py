"""In-memory job store: jobs (see :class:`ketter.store.ports.jobs.JobsPort`);
the transitions with their events are :mod:`ketter.store.composite.jobs`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ketter.errors import InvalidTransition
from ketter.store.composite.jobs import CompositeJobs, Planned, one_by_one
from ketter.store.memory.core import MemoryCore
from ketter.store.rows import JobRow


class JobsMemory(MemoryCore, CompositeJobs):
    """The jobs rows in memory."""

    def find_job(self, job_id: int) -> JobRow | None:
        with self._lock:
            job = self.tables.jobs.get(job_id)
            return None if job is None else dataclasses.replace(job)

    def job_ids(
        self,
        *,
        state: str | None = None,
        route: str | None = None,
        updated_since: float | None = None,
    ) -> list[int]:
        with self._lock:
            return sorted(
                job.id
                for job in self.tables.jobs.values()
                if (state is None or job.state == state)
                and (route is None or job.route == route)
                and (updated_since is None or job.updated_at >= updated_since)
            )

    def _compare_and_set(
        self,
        job_id: int,
        state: str,
        claim: str | None,
        values: dict[str, Any],
        unplaced: bool,
        uncancelled: bool = False,
    ) -> bool:
        with self._write():
            job = self.tables.jobs.get(job_id)
            if (
                job is None
                or job.state != state
                or job.claim != claim
                or (unplaced and job.placed_at is not None)
                or (uncancelled and job.cancel_requested_at is not None)
            ):
                return False
            for name, value in values.items():
                setattr(job, name, value)
            return True

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
        with self._write():
            if not self._compare_and_set(job_id, state, claim, values, unplaced, uncancelled):
                return False
            self._insert_event(event)
            return True

    def _change_and_append_all(
        self, job_id: int, claim: str | None, planned: Sequence[Planned]
    ) -> int:
        return one_by_one(self, job_id, claim, planned)

    def _route_and_attempt(self, job_id: int) -> tuple[str, int]:
        with self._lock:
            job = self.tables.jobs.get(job_id)
            if job is None:
                raise InvalidTransition(f"job {job_id} does not exist")
            return job.route, job.attempt

    def _update_held(self, job_id: int, claim: str, values: dict[str, Any]) -> bool:
        with self._write():
            job = self.tables.jobs.get(job_id)
            if job is None or job.claim is None or job.claim != claim:
                return False
            for name, value in values.items():
                setattr(job, name, value)
            return True

    def cancel_requested(self, job_id: int) -> bool:
        with self._lock:
            job = self.tables.jobs.get(job_id)
            return job is not None and job.cancel_requested_at is not None

    def set_error(self, job_id: int, error: str) -> None:
        with self._write():
            job = self.tables.jobs.get(job_id)
            if job is not None:
                job.error = error
