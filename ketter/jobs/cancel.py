"""An operator's cancel of a job (``ketter cancel``, ``POST
/api/v1/transfers/{id}/cancel``): before its placement the job is rolled back
like a failure and ends ``cancelled``; after it, the cancel is refused.

What happens depends on where the job is, decided in one transaction with
the request's ``cancel_requested`` event:

* **waiting** (``detected`` or ``retry_wait``, no live lease): nothing of it
  is being written, so it ends now — ``rolling_back`` and ``cancelled``
  committed together with the request. A temporary an outage left behind
  is the orphan sweep's (the job is no longer active).
* **running, or left in flight** by a worker that died or stopped: the
  request is recorded (``jobs.cancel_requested_at``/``_by``) and the worker
  holding it — or the next one to claim it — stops at its next step or
  progress check (about once a second while bytes move), rolls the job
  back exactly as for a failure (temporaries removed, the source intact, a
  set-aside old version restored) and ends it ``cancelled``: no retry, no
  ``job_failed`` alert, a ``cancel`` event.
* **placed, or being placed** (``placed_at`` set, or ``verifying``: the copy
  is verified and recorded and the rename into place is under way): refused.
  A placed delivery only moves forward.
* **finished** (a terminal state): refused, saying which.

The race with the placement is settled by the job store: the request is a
compare-and-set that refuses a job in ``verifying`` or placed, and the
worker's step into ``verifying`` (the durable commit right before the
rename) is a compare-and-set that refuses a job asked to cancel
(:data:`ketter.jobs.states.FORWARD`). Both run in write transactions, so one
of them comes first: a cancel recorded first stops the job before its
rename; a ``verifying`` committed first makes the cancel answer ``placed``
and the job completes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from ketter.jobs.states import TERMINAL, State
from ketter.jobs.transitions import Step, advance

if TYPE_CHECKING:
    from ketter.audit.chain import Principal
    from ketter.store.port import JobStore
    from ketter.store.rows import JobRow

S = State

#: States in which a job without a live lease is only waiting: nothing of it
#: is being written, so a cancel ends it at once.
WAITING = frozenset({S.DETECTED, S.RETRY_WAIT})


class Outcome(StrEnum):
    """What a cancel did."""

    #: A worker holds the job (or the next claim will): it rolls back and
    #: ends ``cancelled`` at its next step or progress check.
    REQUESTED = "requested"
    #: The job was waiting: it is ``cancelled`` now.
    CANCELLED = "cancelled"
    #: Refused: the delivery is verified and placed (or being placed).
    PLACED = "placed"
    #: Refused: the job had already finished.
    FINISHED = "finished"
    #: No such job.
    MISSING = "missing"


#: The outcomes that did what was asked (the CLI exits 1 on any other).
ACCEPTED = frozenset({Outcome.REQUESTED, Outcome.CANCELLED})


@dataclass(frozen=True)
class CancelResult:
    """:func:`cancel_job`'s answer: what happened, the job's state after it
    (``None`` when missing) and a sentence for people."""

    outcome: Outcome
    job_id: int
    state: str | None
    message: str

    @property
    def accepted(self) -> bool:
        return self.outcome in ACCEPTED


def cancel_job(store: JobStore, job_id: int, *, now: float, actor: Principal) -> CancelResult:
    """Cancel job ``job_id`` for ``actor`` (module docstring)."""
    # The request is a compare-and-set on the state and claim read just
    # before, in the same transaction: on SQLite (IMMEDIATE) nothing can come
    # between; a backend with weaker isolation may see the job move first,
    # and then the answer is made again from the job as it is now.
    for _ in range(3):
        with store.transaction():
            job = store.find_job(job_id)
            refused = _refusal(job_id, job)
            if refused is not None:
                return refused
            assert job is not None
            if not store.request_cancel(job_id, now=now, actor=actor):
                continue
            # Leases run on the store's clock (the database's on PostgreSQL).
            lease_now = store.lease_clock(now)
            leased = job.lease_expires_at is not None and job.lease_expires_at > lease_now
            state = State(job.state)
            if state in WAITING and not leased:
                _end_now(store, job_id, state, job.claim, now=now, actor=actor)
                return CancelResult(
                    Outcome.CANCELLED,
                    job_id,
                    S.CANCELLED.value,
                    f"job {job_id}: cancelled (was {job.state}, nothing was being written)",
                )
        return CancelResult(
            Outcome.REQUESTED,
            job_id,
            job.state,
            f"job {job_id}: cancel requested; the worker rolls it back and ends it cancelled "
            f"at its next step (it is {job.state})",
        )
    raise RuntimeError(f"job {job_id}: it kept changing under the cancel; try again")


def _refusal(job_id: int, job: JobRow | None) -> CancelResult | None:
    """The answer for a job a cancel cannot (or need not) be recorded on:
    missing, finished, placed or being placed, asked already."""
    if job is None:
        return CancelResult(Outcome.MISSING, job_id, None, f"job {job_id}: no such job")
    state = State(job.state)
    if state in TERMINAL:
        return CancelResult(
            Outcome.FINISHED,
            job_id,
            job.state,
            f"job {job_id}: not cancelled, it has already finished ({job.state})",
        )
    if job.placed_at is not None or state is S.VERIFYING:
        where = job.dest_display or "its destination"
        return CancelResult(
            Outcome.PLACED,
            job_id,
            job.state,
            f"job {job_id}: not cancelled, its delivery is verified and "
            + ("in place" if job.placed_at is not None else "being placed")
            + f" at {where}; a placed job only moves forward (it is {job.state})",
        )
    if job.cancel_requested_at is not None:
        return CancelResult(
            Outcome.REQUESTED,
            job_id,
            job.state,
            f"job {job_id}: cancel already requested by {job.cancel_requested_by}; "
            "it stops at its next step",
        )
    return None


def _end_now(
    store: JobStore, job_id: int, state: State, claim: str | None, *, now: float, actor: Principal
) -> None:
    """A waiting job's ``rolling_back`` and ``cancelled`` in one commit:
    nothing of it is being written (a temporary an outage left is the
    orphan sweep's, the job no longer being active)."""
    by = actor.as_user()
    details = {"reason": "cancelled", "by": by}
    advance(
        store,
        job_id,
        state,
        [
            Step(S.ROLLING_BACK, details=details, fields={"rollback_to": S.CANCELLED.value}),
            Step(
                S.CANCELLED,
                details={**details, "removed": []},
                fields={
                    "rollback_to": None,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "completed_at": now,
                    "error": f"cancelled by {by}",
                },
            ),
        ],
        claim=claim,
        now=now,
        actor=actor,
    )
