"""Re-queueing by an operator: ``ketter requeue`` and ``make requeue-failed``.

A failed job goes back to ``detected`` with its attempts reset; a job waiting
in ``retry_wait`` is made due now. Each re-queue writes a ``requeue`` event
naming who did it, so the audit trail shows human intervention.
"""

from __future__ import annotations

import getpass
import os

from ketter.audit.chain import record_event
from ketter.jobs.create import active_job
from ketter.jobs.states import State
from ketter.jobs.transitions import transition
from ketter.store.models import Job, database


def operator() -> str:
    """The person (or account) running the command."""
    for var in ("SUDO_USER", "USER", "LOGNAME"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def requeue_job(job_id: int, *, now: float, who: str | None = None) -> str:
    """Re-queue one job; returns what happened (for the CLI to print)."""
    who = who or operator()
    job = Job.get_or_none(Job.id == job_id)
    if job is None:
        return f"job {job_id}: no such job"
    if job.state == State.FAILED.value:
        newer = active_job(job.source_key)
        if newer is not None:
            return (
                f"job {job_id}: not re-queued, job {newer.id} is already working on the "
                f"same version ({newer.state})"
            )
        transition(
            job_id,
            State.FAILED,
            State.DETECTED,
            claim=job.claim,
            now=now,
            event="requeue",
            attempt=0,
            next_attempt_at=now,
            completed_at=None,
            details={"by": who, "last_error": job.error},
        )
        return f"job {job_id}: re-queued (was failed: {job.error})"
    if job.state == State.RETRY_WAIT.value:
        with database.obj.atomic():
            Job.update(next_attempt_at=now, attempt=0, updated_at=now).where(
                Job.id == job_id
            ).execute()
            record_event(
                "requeue",
                now=now,
                job_id=job_id,
                route=job.route,
                from_state=job.state,
                to_state=job.state,
                attempt=0,
                details={"by": who, "was_due_at": job.next_attempt_at},
            )
        return f"job {job_id}: due now (was waiting to retry)"
    return f"job {job_id}: not re-queued, it is {job.state}"


def failed_jobs(*, route: str | None = None, since: float | None = None) -> list[int]:
    query = Job.select(Job.id).where(Job.state == State.FAILED.value)
    if route:
        query = query.where(Job.route == route)
    if since is not None:
        query = query.where(Job.updated_at >= since)
    return [j.id for j in query.order_by(Job.id)]
