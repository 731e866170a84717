"""Re-queueing by an operator: ``ketter requeue`` and ``make requeue-failed``.

A failed or cancelled job goes back to ``detected`` with its attempts reset
(a cancelled one with its cancel request cleared); a job waiting in
``retry_wait`` is made due now. Each re-queue writes a ``requeue`` event
naming who did it, so the audit trail shows human intervention.
"""

from __future__ import annotations

import getpass
import os
from typing import TYPE_CHECKING

from ketter.jobs.create import active_job
from ketter.jobs.states import State
from ketter.jobs.transitions import transition

if TYPE_CHECKING:
    from ketter.store.port import JobStore


def operator() -> str:
    """The person (or account) running the command."""
    for var in ("SUDO_USER", "USER", "LOGNAME"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def requeue_job(store: JobStore, job_id: int, *, now: float, who: str | None = None) -> str:
    """Re-queue one job; returns what happened (for the CLI to print)."""
    who = who or operator()
    job = store.find_job(job_id)
    if job is None:
        return f"job {job_id}: no such job"
    if job.state in (State.FAILED.value, State.CANCELLED.value):
        was = State(job.state)
        newer = active_job(store, job.source_key)
        if newer is not None:
            return (
                f"job {job_id}: not re-queued, job {newer.id} is already working on the "
                f"same version ({newer.state})"
            )
        transition(
            store,
            job_id,
            was,
            State.DETECTED,
            claim=job.claim,
            now=now,
            event="requeue",
            attempt=0,
            next_attempt_at=now,
            completed_at=None,
            cancel_requested_at=None,
            cancel_requested_by=None,
            details={"by": who, "last_error": job.error, "was": was.value},
        )
        return f"job {job_id}: re-queued (was {was.value}: {job.error})"
    if job.state == State.RETRY_WAIT.value:
        if not store.make_due_now(job_id, now=now, by=who):
            # Claimed or finished since it was read: say what it is now.
            current = store.find_job(job_id)
            return f"job {job_id}: not re-queued, it is {current.state if current else 'gone'}"
        return f"job {job_id}: due now (was waiting to retry)"
    return f"job {job_id}: not re-queued, it is {job.state}"


def failed_jobs(
    store: JobStore, *, route: str | None = None, since: float | None = None
) -> list[int]:
    """Ids of the failed jobs (of ``route``, updated since ``since``), in id order."""
    return store.job_ids(state=State.FAILED.value, route=route or None, updated_since=since)
