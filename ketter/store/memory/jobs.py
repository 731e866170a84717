"""In-memory job store: jobs (see :class:`ketter.store.ports.jobs.JobsPort`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ketter.errors import InvalidTransition
from ketter.store.memory.core import MemoryCore
from ketter.store.ports.jobs import JobChange, explain_refusal
from ketter.store.rows import JOB_COLUMNS, JobRow, NoSuchJob

_COLUMNS = frozenset(JOB_COLUMNS)


class JobsMemory(MemoryCore):
    """The jobs operations in memory."""

    def get_job(self, job_id: int) -> JobRow:
        job = self.find_job(job_id)
        if job is None:
            raise NoSuchJob(f"job {job_id} does not exist")
        return job

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
        with self._write():
            job = self.tables.jobs.get(job_id)
            if (
                job is None
                or job.state != state
                or job.claim != claim
                or (only_unplaced and job.placed_at is not None)
            ):
                return False
            for name, value in values.items():
                setattr(job, name, value)
            return True

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
                job = self.tables.jobs.get(job_id)
                if job is None:
                    raise InvalidTransition(f"job {job_id} does not exist")
                route, attempt = job.route, job.attempt
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
        with self._write():
            job = self.tables.jobs.get(job_id)
            if job is None or job.claim is None or job.claim != claim:
                return False
            job.attempt = attempt
            return True

    def set_error(self, job_id: int, error: str) -> None:
        with self._write():
            job = self.tables.jobs.get(job_id)
            if job is not None:
                job.error = error
