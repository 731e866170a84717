"""The one function that changes a job's state: a compare-and-set.

``UPDATE jobs SET state=… WHERE id=? AND state=? AND claim IS ?`` must touch
exactly one row, or nothing changes and :class:`InvalidTransition` (or
:class:`LostClaim` when another worker took the job over) is raised. The
audit event is written in the same transaction, so the trail can never say
something the job store does not, nor the other way round.
"""

from __future__ import annotations

from typing import Any

from ketter.audit.chain import record_event
from ketter.errors import InvalidTransition, LostClaim
from ketter.jobs.states import DEFAULT_EVENT, State, is_allowed
from ketter.store.db import durable
from ketter.store.models import Job, database


def transition(
    job_id: int,
    from_state: State | str,
    to_state: State | str,
    *,
    claim: str | None,
    now: float,
    event: str | None = None,
    details: dict[str, Any] | None = None,
    fsync: bool = False,
    **fields: Any,
) -> None:
    """Move job ``job_id`` from ``from_state`` to ``to_state`` if this caller
    still holds ``claim``; also sets ``fields`` and records the audit event.

    ``fsync=True`` makes the commit durable against power loss (see
    :func:`ketter.store.db.durable`): use it for the commit that records a
    placement and for those that precede an irreversible step.
    """
    from_state, to_state = State(from_state), State(to_state)
    if not is_allowed(from_state, to_state):
        raise InvalidTransition(f"job {job_id}: {from_state} → {to_state} is not an allowed "
                                "transition")
    db = database.obj
    ctx = durable(db) if fsync else db.atomic()
    with ctx:
        query = Job.update(state=to_state.value, updated_at=now, **fields).where(
            (Job.id == job_id) & (Job.state == from_state.value) & (Job.claim == claim)
        )
        if to_state is State.ROLLING_BACK:
            # A placed delivery is never rolled back: it only moves forward.
            query = query.where(Job.placed_at.is_null())
        if query.execute() != 1:
            raise _refusal(job_id, from_state, to_state, claim)
        row = Job.select(Job.route, Job.attempt).where(Job.id == job_id).get()
        record_event(
            event or DEFAULT_EVENT[to_state],
            now=now,
            job_id=job_id,
            route=row.route,
            from_state=from_state.value,
            to_state=to_state.value,
            attempt=row.attempt,
            details=details,
        )


def _refusal(job_id: int, from_state: State, to_state: State,
             claim: str | None) -> InvalidTransition:
    """Explain why the compare-and-set matched no row."""
    job = Job.get_or_none(Job.id == job_id)
    if job is None:
        return InvalidTransition(f"job {job_id} does not exist")
    if job.claim != claim:
        return LostClaim(f"job {job_id}: claim {claim} is no longer held (now "
                         f"{job.claim or 'unclaimed'}, state {job.state}); another worker "
                         "took the job over after this one's lease expired")
    if job.state != from_state.value:
        return InvalidTransition(f"job {job_id} is {job.state}, not {from_state}; refused "
                                 f"{from_state} → {to_state}")
    return InvalidTransition(f"job {job_id} is placed (placed_at set) and only moves "
                             f"forward; refused {from_state} → {to_state}")



def mark(
    job_id: int,
    state: State | str,
    *,
    claim: str | None,
    now: float,
    event: str,
    details: dict[str, Any] | None = None,
    fsync: bool = False,
    **fields: Any,
) -> None:
    """Record a step that does not change the state (``place``,
    ``delete_source``, ``skip``…): the same compare-and-set on the claim and
    state, the same event in the same transaction."""
    state = State(state)
    db = database.obj
    ctx = durable(db) if fsync else db.atomic()
    with ctx:
        updated = (Job.update(updated_at=now, **fields)
                   .where((Job.id == job_id) & (Job.state == state.value)
                          & (Job.claim == claim))
                   .execute())
        if updated != 1:
            raise _refusal(job_id, state, state, claim)
        row = Job.select(Job.route, Job.attempt).where(Job.id == job_id).get()
        record_event(event, now=now, job_id=job_id, route=row.route, from_state=state.value,
                     to_state=state.value, attempt=row.attempt, details=details)
