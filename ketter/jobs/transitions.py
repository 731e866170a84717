"""The one function that changes a job's state: a compare-and-set.

The job store's compare-and-set on the job's id, state and claim
(:meth:`ketter.store.ports.jobs.JobsPort.advance`) must match exactly one
row, or nothing changes and :class:`InvalidTransition` (or
:class:`LostClaim` when another worker took the job over) is raised. The
audit event is written in the same transaction, so the trail can never say
something the job store does not, nor the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ketter.errors import InvalidTransition
from ketter.jobs.states import DEFAULT_EVENT, FORWARD, State, is_allowed
from ketter.store.ports.jobs import JobChange

if TYPE_CHECKING:
    from ketter.audit.chain import Principal
    from ketter.store.port import JobStore


@dataclass(frozen=True)
class Step:
    """One change of a job for :func:`advance`: a transition to ``to``, or a
    note (``to=None``: the state stays, ``event`` is required)."""

    to: State | None
    event: str | None = None
    details: dict[str, Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def transition(
    store: JobStore,
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
        store,
        job_id,
        from_state,
        [Step(State(to_state), event, details, fields)],
        claim=claim,
        now=now,
        fsync=fsync,
    )


def advance(
    store: JobStore,
    job_id: int,
    state: State | str,
    steps: list[Step],
    *,
    claim: str | None,
    now: float,
    fsync: bool = False,
    route: str | None = None,
    attempt: int | None = None,
    actor: Principal | None = None,
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
    changes: list[JobChange] = []
    for step in steps:  # checked before anything is written
        if step.to is None and not step.event:
            raise ValueError("a note needs an event")
        if step.to is not None:
            if not is_allowed(current, step.to):
                raise InvalidTransition(
                    f"job {job_id}: {current} → {step.to} is not an allowed transition"
                )
            current = step.to
        changes.append(
            JobChange(
                None if step.to is None else step.to.value,
                step.event or DEFAULT_EVENT[current],
                step.details,
                step.fields,
                # A placed delivery is never rolled back: it only moves forward.
                only_unplaced=current is State.ROLLING_BACK,
                # A cancelled job never moves forward (ketter.jobs.cancel).
                only_uncancelled=step.to in FORWARD,
            )
        )
    return State(
        store.advance(
            job_id,
            State(state).value,
            changes,
            claim=claim,
            now=now,
            durable=fsync,
            route=route,
            attempt=attempt,
            actor=actor,
        )
    )


def mark(
    store: JobStore,
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
        store,
        job_id,
        state,
        [Step(None, event, details, fields)],
        claim=claim,
        now=now,
        fsync=fsync,
    )
