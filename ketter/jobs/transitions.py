"""The one function that changes a job's state: a compare-and-set.

``UPDATE jobs SET state=… WHERE id=? AND state=? AND claim IS ?`` must touch
exactly one row, or nothing changes and :class:`InvalidTransition` (or
:class:`LostClaim` when another worker took the job over) is raised. The
audit event is written in the same transaction, so the trail can never say
something the job store does not, nor the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ketter.audit.chain import record_event
from ketter.errors import InvalidTransition, LostClaim
from ketter.jobs.states import DEFAULT_EVENT, State, is_allowed
from ketter.store.db import durable
from ketter.store.models import Job, database

#: Columns a transition may set (guards the raw SQL below against typos).
_COLUMNS = frozenset(Job._meta.fields)

# Raw SQL, not peewee's query builder: transitions are the hot path (five or
# six per transfer) and building a peewee query costs about a millisecond of
# CPU, more than the SQLite statement itself.


def _update(
    job_id: int, state: str, claim: str | None, values: dict[str, Any], *, not_placed: bool = False
) -> int:
    unknown = set(values) - _COLUMNS
    if unknown:
        raise ValueError(f"not a jobs column: {', '.join(sorted(unknown))}")
    assignments = ", ".join(f'"{name}" = ?' for name in values)
    sql = f"UPDATE jobs SET {assignments} WHERE id = ? AND state = ? AND claim IS ?" + (
        " AND placed_at IS NULL" if not_placed else ""
    )
    cursor = database.obj.execute_sql(sql, (*values.values(), job_id, state, claim))
    return int(cursor.rowcount)


def _route_and_attempt(job_id: int) -> tuple[str, int]:
    row = database.obj.execute_sql(
        "SELECT route, attempt FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    if row is None:
        raise InvalidTransition(f"job {job_id} does not exist")
    return row[0], row[1]


@dataclass(frozen=True)
class Step:
    """One change of a job for :func:`advance`: a transition to ``to``, or a
    note (``to=None``: the state stays, ``event`` is required)."""

    to: State | None
    event: str | None = None
    details: dict[str, Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)


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
    advance(
        job_id,
        from_state,
        [Step(State(to_state), event, details, fields)],
        claim=claim,
        now=now,
        fsync=fsync,
    )


def advance(
    job_id: int,
    state: State | str,
    steps: list[Step],
    *,
    claim: str | None,
    now: float,
    fsync: bool = False,
    route: str | None = None,
    attempt: int | None = None,
) -> State:
    """Apply ``steps`` in order, in one transaction (one commit, one fsync at
    most): each is the same compare-and-set as :func:`transition` or
    :func:`mark`, with its own audit event. All or none of them commit.
    Returns the state after the last step. ``route`` and ``attempt``, when
    the caller knows them (the claim's), spare a read: they cannot have
    changed while ``claim`` is still held, which each step's update checks.

    For consecutive steps that a crash may not separate in a way that
    matters: e.g. ``validated`` and ``transferring`` (nothing is written in
    between), or ``place`` and ``completed`` on a copy route (a crash between
    the rename and the commit is recovered from the temporary's inode).
    """
    current = State(state)
    for step in steps:  # checked before anything is written
        if step.to is None and not step.event:
            raise ValueError("a note needs an event")
        if step.to is not None:
            if not is_allowed(current, step.to):
                raise InvalidTransition(
                    f"job {job_id}: {current} → {step.to} is not an allowed transition"
                )
            current = step.to
    current = State(state)
    db = database.obj
    ctx = durable(db) if fsync else db.atomic()
    with ctx:
        if route is None or attempt is None:
            route, attempt = _route_and_attempt(job_id)
        for step in steps:
            new = current if step.to is None else step.to
            values = {"updated_at": now, **step.fields}
            if step.to is not None:
                values["state"] = new.value
            # A placed delivery is never rolled back: it only moves forward.
            if (
                _update(job_id, current.value, claim, values, not_placed=new is State.ROLLING_BACK)
                != 1
            ):
                raise _refusal(job_id, current, new, claim)
            record_event(
                step.event or DEFAULT_EVENT[new],
                now=now,
                job_id=job_id,
                route=route,
                from_state=current.value,
                to_state=new.value,
                attempt=int(values.get("attempt", attempt)),
                details=step.details,
            )
            current, attempt = new, int(values.get("attempt", attempt))
    return current


def _refusal(
    job_id: int, from_state: State, to_state: State, claim: str | None
) -> InvalidTransition:
    """Explain why the compare-and-set matched no row."""
    job = Job.get_or_none(Job.id == job_id)
    if job is None:
        return InvalidTransition(f"job {job_id} does not exist")
    if job.claim != claim:
        return LostClaim(
            f"job {job_id}: claim {claim} is no longer held (now "
            f"{job.claim or 'unclaimed'}, state {job.state}); another worker "
            "took the job over after this one's lease expired"
        )
    if job.state != from_state.value:
        return InvalidTransition(
            f"job {job_id} is {job.state}, not {from_state}; refused {from_state} → {to_state}"
        )
    return InvalidTransition(
        f"job {job_id} is placed (placed_at set) and only moves "
        f"forward; refused {from_state} → {to_state}"
    )


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
    advance(
        job_id,
        state,
        [Step(None, event, details, fields)],
        claim=claim,
        now=now,
        fsync=fsync,
    )
