"""Job states and the transitions allowed between them (data, not code).

A job is created ``detected`` and normally walks
``detected → validated → (packaged) → transferring → verifying → completed``.
Failures take it to ``retry_wait`` (transient: tried again after a backoff) or
through ``rolling_back`` to ``failed`` (permanent, or attempts exhausted), or
to ``superseded`` when the version it was created for no longer exists, or
to ``cancelled`` when an operator cancelled it before its placement
(:mod:`ketter.jobs.cancel`).
Once a job's delivery is placed (``placed_at`` set) it only moves forward: the
transition function refuses ``rolling_back`` for it, whatever this table says.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """The life cycle of a transfer job (``jobs.state``)."""

    #: Found by the watcher (or submitted by hand); waiting for a worker.
    DETECTED = "detected"
    #: The source still matches its identity, paths are inside the route, the
    #: destination has room and the conflict policy allows the delivery.
    VALIDATED = "validated"
    #: A folder's manifest is recorded (``job_files``) and it is ready to
    #: travel (as a stored ZIP at or above ``package_min_files``).
    PACKAGED = "packaged"
    #: Bytes are being written to a hidden temporary name at the destination.
    TRANSFERRING = "transferring"
    #: The copy is being re-read from the destination disk and compared; the
    #: placement under the final name and (move) the source deletion happen
    #: in this state.
    VERIFYING = "verifying"
    #: Delivered and verified (and, for a move, the source deleted). Terminal.
    COMPLETED = "completed"
    #: Waiting for ``next_attempt_at`` after a transient error.
    RETRY_WAIT = "retry_wait"
    #: Undoing a failed attempt: removing temporaries, restoring a set-aside
    #: old version. Resumable: a crash here finishes the undo on restart.
    ROLLING_BACK = "rolling_back"
    #: Given up; the last error is on the row. Terminal until re-queued.
    FAILED = "failed"
    #: The version detected no longer exists (replaced, or rewritten by a
    #: writer that paused longer than ``stable_seconds``) before it was
    #: placed; the newer version is a job of its own. Terminal, quiet: no
    #: ``job_failed`` alert for a version nobody will ever want.
    SUPERSEDED = "superseded"
    #: Cancelled by an operator (``ketter cancel``, the API) before its
    #: placement, and rolled back like a failure: temporaries removed, the
    #: source intact, a set-aside old version restored. Terminal, quiet (no
    #: ``job_failed`` alert); re-queued like a failed job.
    CANCELLED = "cancelled"


S = State

#: Every allowed ``from → to`` pair. Anything else raises InvalidTransition.
TRANSITIONS: dict[State, frozenset[State]] = {
    # detected → verifying: a re-queued job whose delivery was already placed
    # resumes after its placement (it never copies or rolls back again).
    S.DETECTED: frozenset({S.VALIDATED, S.VERIFYING, S.RETRY_WAIT, S.ROLLING_BACK}),
    S.VALIDATED: frozenset({S.PACKAGED, S.TRANSFERRING, S.COMPLETED, S.RETRY_WAIT, S.ROLLING_BACK}),
    S.PACKAGED: frozenset({S.TRANSFERRING, S.RETRY_WAIT, S.ROLLING_BACK}),
    S.TRANSFERRING: frozenset({S.VERIFYING, S.RETRY_WAIT, S.ROLLING_BACK}),
    # verifying → failed: attempts ran out after placement; the delivery is
    # kept and the job never rolls back (it only moves forward).
    S.VERIFYING: frozenset({S.COMPLETED, S.RETRY_WAIT, S.ROLLING_BACK, S.FAILED}),
    # retry_wait → verifying: a placed job resumes the work left after its
    # placement (source deletion, completion); → failed: the same, out of
    # attempts. Unplaced jobs start again from detected.
    S.RETRY_WAIT: frozenset({S.DETECTED, S.VERIFYING, S.ROLLING_BACK, S.FAILED}),
    # rolling_back → retry_wait: a transient failure's undo is done; → failed:
    # a permanent one's; → superseded: the undo of a job whose source version
    # is gone; → cancelled: the undo of a job an operator cancelled (every
    # unplaced state reaches both through rolling_back; a waiting job's
    # rolling_back and cancelled are committed together, ketter.jobs.cancel).
    S.ROLLING_BACK: frozenset({S.RETRY_WAIT, S.FAILED, S.SUPERSEDED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    # failed → detected: re-queued by an operator (`ketter requeue`).
    S.FAILED: frozenset({S.DETECTED}),
    S.SUPERSEDED: frozenset(),
    # cancelled → detected: re-queued by an operator, like a failed job.
    S.CANCELLED: frozenset({S.DETECTED}),
}

TERMINAL: frozenset[State] = frozenset({S.COMPLETED, S.FAILED, S.SUPERSEDED, S.CANCELLED})
#: The states a job's steps move forward through before its placement. A
#: transition into one of them is refused once a cancel was requested
#: (``jobs.cancel_requested_at``), in the same compare-and-set: the worker
#: notices a cancel at its next step, and ``verifying`` (the commit right
#: before the rename into place) is the last point a cancel can win.
FORWARD: frozenset[State] = frozenset({S.VALIDATED, S.PACKAGED, S.TRANSFERRING, S.VERIFYING})
ACTIVE: frozenset[State] = frozenset(State) - TERMINAL

#: The audit event written with each transition when the caller names none.
DEFAULT_EVENT: dict[State, str] = {
    S.DETECTED: "requeue",
    S.VALIDATED: "prepare",
    S.PACKAGED: "package",
    S.TRANSFERRING: "copy",
    S.VERIFYING: "verify",
    S.COMPLETED: "complete",
    S.RETRY_WAIT: "retry",
    S.ROLLING_BACK: "rollback",
    S.FAILED: "fail",
    S.SUPERSEDED: "supersede",
    S.CANCELLED: "cancel",
}


def is_allowed(from_state: State | str, to_state: State | str) -> bool:
    """True when the table allows ``from_state → to_state``."""
    return State(to_state) in TRANSITIONS[State(from_state)]
