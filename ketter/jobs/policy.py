"""The error policy as a decision: what an exception out of a job's steps means.

Two pure functions (no store, no file system, ``now`` passed in), carried
out in one place by :meth:`ketter.jobs.runner.JobRunner.apply`:

* :func:`triage` — which kind of stop an exception is: a stop request
  (released, no attempt used), a lost claim (only our own temporaries
  removed), a job store that cannot record anything (left as a crash would
  leave it), or the job's own error, an :class:`OSError` classified and any
  other exception taken as a bounded, loudly logged transient error.
* :func:`decide` — what the job's error does to the job (docs/guarantees.md):

  - :class:`RouteUnavailable` — the route is paused (one alert per outage,
    one per episode of pauses for room); the job waits in ``retry_wait``
    without using up an attempt. A route that looks fine from outside makes
    it the job's own transient error, except :class:`RouteNotWritable`
    (EROFS: the unit's sandbox or a read-only mount), which pauses the route
    whatever it looks like (for ``max_delay`` when it looks clear).
  - before the placement, a transient error rolls back and retries after a
    backoff; out of attempts, or a permanent error, it rolls back and
    fails; :class:`SourceSuperseded` rolls back and ends ``superseded``.
  - after the placement a job never rolls back: it retries the remaining
    work, and fails with the delivery kept when permanent or out of attempts.
  - :class:`SourceInUse` — a writer holds the source: the job waits (after
    the placement, ``retry.max_delay``), never using up an attempt.
  - :class:`VerificationFailed` alerts ``verify_mismatch`` besides.
  - :class:`JobCancelled` (an operator's cancel, noticed before the
    placement) rolls back and ends ``cancelled``: no retry, no alert, no
    attempt used.

What the route looks like from outside (a mount check, a statvfs, the
store's count of pauses for room) is looked at by the runner only for a route
error — a statvfs on a dead share can block — and passed in as a
:class:`RouteLook`. The errors are told apart by the tree of
:mod:`ketter.errors`, never by a class name.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from ketter.config.schema import RetryConfig
from ketter.engine.oserrors import classify_oserror
from ketter.errors import (
    DestinationFull,
    JobCancelled,
    KetterError,
    LostClaim,
    PermanentError,
    RouteNotWritable,
    RouteUnavailable,
    ShutdownRequested,
    SourceInUse,
    SourceSuperseded,
    TransientError,
    VerificationFailed,
)
from ketter.jobs.backoff import compute_backoff
from ketter.jobs.routes import room_backoff
from ketter.jobs.states import State
from ketter.store.guard import is_unwritable_error


class Stop(StrEnum):
    """Which kind of stop an exception out of a job's steps is."""

    #: A stop request (SIGTERM): the job is given back, no attempt used.
    RELEASE = "release"
    #: Another worker owns the job now: only our own temporaries are removed.
    LET_GO = "let_go"
    #: The job store cannot record anything (disk full, read-only): the job is
    #: left as a crash would leave it; its lease runs out and the sweep
    #: re-rings it once the store is writable.
    STORE = "store"
    #: The job's own error: :func:`decide` says what it means.
    JOB_ERROR = "job_error"
    #: KeyboardInterrupt, SystemExit: not a job error, raised on.
    RAISE = "raise"


@dataclass(frozen=True)
class Triage:
    """:func:`triage`'s answer."""

    stop: Stop
    #: The job's error (``JOB_ERROR`` only), a :class:`KetterError`.
    error: KetterError | None = None
    #: Not an error Ketter knows (a bug): logged with its traceback.
    unexpected: bool = False


def triage(exc: BaseException, *, state_dir: str | None, where: bytes) -> Triage:
    """Which kind of stop ``exc`` is; ``where`` names the file an
    :class:`OSError` is about (the source)."""
    if isinstance(exc, ShutdownRequested):
        return Triage(Stop.RELEASE)
    if isinstance(exc, LostClaim):  # StoreLost too: no claim of that store holds
        return Triage(Stop.LET_GO)
    if isinstance(exc, KetterError):
        # Before the store check: the engine raises ``classify_oserror(e)
        # from e``, and a destination's EPERM (chattr +i) or ENOSPC is the
        # job's error (error policy, a DestinationFull route pause), never
        # "state store not writable" (review of #14 findings 8 and 17).
        return Triage(Stop.JOB_ERROR, exc)
    if is_unwritable_error(exc, state_dir=state_dir):
        return Triage(Stop.STORE)
    if isinstance(exc, OSError):
        return Triage(Stop.JOB_ERROR, classify_oserror(exc, where, "transfer"))
    if isinstance(exc, Exception):  # a bug: retried (bounded), loudly logged
        return Triage(Stop.JOB_ERROR, TransientError(f"unexpected error: {exc!r}"), True)
    return Triage(Stop.RAISE)


class Action(StrEnum):
    """What a job error does to the job."""

    #: The route is paused; the job waits in ``retry_wait`` (no attempt used).
    PAUSE_ROUTE = "pause_route"
    #: Placed: ``retry_wait`` until ``retry_at``, then only the remaining work
    #: (forward only, the delivery is never rolled back).
    RETRY_AT = "retry_at"
    #: Placed: ``failed`` with the delivery in place and kept.
    FAIL_KEPT = "fail_kept"
    #: Not placed: ``rolling_back``, then ``then`` (``retry_wait`` after the
    #: rollback's backoff, ``failed``, ``superseded`` or ``cancelled``).
    ROLL_BACK = "roll_back"


class Alert(StrEnum):
    """The alerts a decision sends (the notifier's kinds)."""

    #: A copy did not verify (sent before the job's transition).
    VERIFY_MISMATCH = "verify_mismatch"
    #: The route was paused — sent only when this pause stopped a running route.
    ROUTE_PAUSED = "route_paused"
    #: The job failed for good.
    JOB_FAILED = "job_failed"


@dataclass(frozen=True)
class JobFacts:
    """The job as :func:`decide` sees it (plain values read by the runner)."""

    state: State
    #: Attempts used so far, this one included.
    attempt: int
    placed: bool
    #: Bytes the job needs at the destination (``size`` or ``source_size``, 0
    #: when unknown).
    size: int = 0
    #: The job's steps were set up (its route was found): there may be
    #: temporaries to remove and a route to look at.
    ran: bool = True


@dataclass(frozen=True)
class RouteLook:
    """The route from outside, looked at by the runner for a route error."""

    #: The roots are mounted and readable and the destination has room (for
    #: a :class:`DestinationFull`, room for the job): the route looks fine.
    clear: bool = False
    #: Pauses for room of the current episode so far (nothing delivered since).
    room_pauses_before: int = 0


@dataclass(frozen=True)
class RoomPause:
    """A pause because the destination has no room for the job."""

    #: Bytes the job needs free on top of ``min_free``; the route resumes once they are.
    needed: int
    #: Which pause for room of the episode this is (only the first alerts).
    pauses: int
    #: Seconds before the route may resume (0: at the next sweep that finds room).
    wait: float
    #: The destination shows the room the write did not get (a quota, another writer).
    roomy: bool
    #: The reason says why the route waits and until when
    #: (:func:`ketter.jobs.routes.room_wait_reason`, which reads the free space shown).
    explained: bool


@dataclass(frozen=True)
class Decision:
    """What a job error does (see :class:`Action`); :meth:`JobRunner.apply`
    carries it out."""

    action: Action
    #: The error kept on the job (and the route's pause reason).
    reason: str
    #: ``ROLL_BACK``: the state after the rollback.
    then: State | None = None
    #: ``RETRY_AT`` and ``PAUSE_ROUTE``: when the job is due again, and the delay to it.
    retry_at: float | None = None
    delay: float | None = None
    #: False: the attempt this error ended is given back (a route pause, a
    #: source still being written).
    uses_attempt: bool = True
    #: ``ROLL_BACK``: the error cannot be cured by retrying (shown in the event).
    permanent: bool = False
    #: ``PAUSE_ROUTE``: remove this attempt's temporaries first (not placed;
    #: on a share that is gone the orphan sweep cleans up later).
    remove_temporaries: bool = False
    #: ``PAUSE_ROUTE`` for room: the room needed and the episode's backoff.
    room: RoomPause | None = None
    #: ``PAUSE_ROUTE``: the sweep does not resume the route before then.
    resume_at: float | None = None
    alerts: tuple[Alert, ...] = ()


def room_needed(error: KetterError, job: JobFacts) -> int | None:
    """The bytes a :class:`DestinationFull` job needs free (what the error
    says, else the job's size); None for any other error."""
    if not isinstance(error, DestinationFull):
        return None
    return error.room_needed if error.room_needed is not None else job.size


def looks_at_route(error: KetterError) -> bool:
    """Whether :func:`decide` needs a :class:`RouteLook` for ``error``."""
    return isinstance(error, RouteUnavailable)


def decide(
    error: KetterError,
    job: JobFacts,
    now: float,
    *,
    retry: RetryConfig,
    route: RouteLook | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """What ``error`` does to ``job`` (module docstring); ``rng`` draws the
    backoff's jitter."""
    route = route or RouteLook()
    message = error.message
    if isinstance(error, JobCancelled):
        if job.placed:
            # Cannot happen (a cancel is refused once placed, and a placed
            # job never steps forward into FORWARD again); should it, the
            # delivery stands: the remaining work goes on at once.
            return Decision(Action.RETRY_AT, message, retry_at=now, delay=0.0, uses_attempt=False)
        # An operator's cancel: undone like a failure, then ``cancelled``,
        # quietly (it is what was asked for).
        return Decision(
            Action.ROLL_BACK, message, then=State.CANCELLED, uses_attempt=False, permanent=True
        )
    if isinstance(error, DestinationFull):
        # "Does not fit" pauses the route until the job's size is free
        # (R-J7); it never uses attempts (it used to fail the job for good
        # within minutes), and the pause is what `health` and `status`
        # show (issue #14, finding 17). It is never taken for the job's own
        # problem: a quota (EDQUOT) or another writer can refuse a write
        # while the filesystem still counts free space, and then the job
        # waits a backoff so the resumed route does not hit it at once.
        # That backoff is the route's (``resume_at``), doubling with each
        # pause for room with nothing delivered in between, and only the
        # first pause of such an episode alerts: the sweep resumed the
        # route at once and it paused again, an alert every max_delay for
        # ever (review of #14 finding 17).
        needed = room_needed(error, job) or 0
        pauses = route.room_pauses_before + 1
        roomy = job.ran and route.clear
        explained = job.ran and (roomy or pauses > 1)
        wait = room_backoff(pauses, retry.max_delay) if explained else 0.0
        room = RoomPause(needed, pauses, wait, roomy, explained)
        return _pause(message, job, now, wait=wait, room=room)
    if isinstance(error, RouteNotWritable):
        # EROFS: a route folder under the unit's sandbox (created after the
        # start, not in ReadWritePaths=) or on a read-only mount. Mounted,
        # readable and roomy, the route looks clear from outside, yet no job
        # of it can succeed until the units are re-rendered (or the mount
        # made writable): never the job's attempts (it used to fail the job
        # for good while `health` stayed healthy, issue #15). While the
        # route looks clear from outside (the sweep's look does not see the
        # mount's read-only flag), it tries again after max_delay, not at the
        # next sweep; a look that sees it resumes as soon as it is writable.
        clear = job.ran and route.clear
        return _pause(message, job, now, wait=retry.max_delay if clear else 0.0, room=None)
    if isinstance(error, RouteUnavailable):
        if not (job.ran and route.clear):
            return _pause(message, job, now, wait=0.0, room=None)
        # The route looks fine from outside (mounted, room to spare): the
        # cause is this job's (a nested mount, a root on the wrong share),
        # so it uses attempts like any transient error instead of pausing
        # the route again and again.
        error = TransientError(message)

    alerts: tuple[Alert, ...] = ()
    if isinstance(error, VerificationFailed):
        alerts = (Alert.VERIFY_MISMATCH,)
    permanent = isinstance(error, PermanentError)
    # A writer still holds the source open: wait for it, whatever the
    # attempts (never delete, nor rename into place, a file being written,
    # #14 finding 15), looking again every max_delay (a render may take hours).
    in_use = isinstance(error, SourceInUse)
    exhausted = job.attempt >= retry.max_attempts and not in_use
    if job.placed:
        if permanent or exhausted:
            return Decision(
                Action.FAIL_KEPT,
                message,
                uses_attempt=not in_use,
                alerts=(*alerts, Alert.JOB_FAILED),
            )
        if in_use:
            delay = retry.max_delay
        else:
            delay = compute_backoff(
                max(job.attempt, 1),
                base_delay=retry.base_delay,
                max_delay=retry.max_delay,
                jitter=retry.jitter,
                rng=rng,
            )
        return Decision(
            Action.RETRY_AT,
            message,
            retry_at=now + delay,
            delay=delay,
            uses_attempt=not in_use,
            alerts=alerts,
        )
    then = State.FAILED if (permanent or exhausted) else State.RETRY_WAIT
    if isinstance(error, SourceSuperseded):
        # The version detected is gone and its successor is a job of its own
        # (#14 finding 14): ``superseded``, quietly. After the placement it
        # is a permanent error like any other (the delivery is kept).
        then = State.SUPERSEDED
    if exhausted and not permanent:
        message = f"{message} (gave up after {job.attempt} attempts)"
    if then is State.FAILED and not job.ran:
        # With steps set up, the rollback fails the job and alerts itself.
        alerts = (*alerts, Alert.JOB_FAILED)
    return Decision(
        Action.ROLL_BACK,
        message,
        then=then,
        uses_attempt=not in_use,
        permanent=permanent,
        alerts=alerts,
    )


def _pause(
    message: str, job: JobFacts, now: float, *, wait: float, room: RoomPause | None
) -> Decision:
    """The route is paused and the job waits ``wait`` seconds, its attempt given back."""
    return Decision(
        Action.PAUSE_ROUTE,
        message,
        retry_at=now + wait,
        delay=wait,
        uses_attempt=False,
        remove_temporaries=job.ran and not job.placed,
        room=room,
        resume_at=now + wait if wait else None,
        # One alert per outage (the pause that stopped a running route), and
        # one per episode of pauses for room.
        alerts=(Alert.ROUTE_PAUSED,) if room is None or room.pauses <= 1 else (),
    )
