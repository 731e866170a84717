"""The error policy as a table (issue #16 item 5): one row per error class ×
situation, each with what :func:`ketter.jobs.policy.decide` (or
:func:`triage`) must answer. Pure functions: no store, no files, ``now``
passed in; the jitter is off so the delays are exact."""

from __future__ import annotations

import errno
import sqlite3
from typing import Any

import pytest

from ketter.audit.mhl import MHLMismatch
from ketter.config.schema import Config, RetryConfig
from ketter.errors import (
    ChecksumMismatch,
    DestinationFull,
    JobCancelled,
    KetterError,
    LostClaim,
    PermanentError,
    RouteNotWritable,
    RouteRemoved,
    RouteUnavailable,
    ShutdownRequested,
    SourceChanged,
    SourceInUse,
    SourceSuperseded,
    StoreLost,
    TransientError,
)
from ketter.jobs.policy import (
    Action,
    Alert,
    Decision,
    JobFacts,
    RoomPause,
    RouteLook,
    Stop,
    decide,
    looks_at_route,
    room_needed,
    triage,
)
from ketter.jobs.runner import JobRunner
from ketter.jobs.states import State

NOW = 1000.0
RETRY = RetryConfig(max_attempts=3, base_delay=10.0, max_delay=100.0, jitter=False)
S = State

#: A job in the middle of its steps, attempts left (attempt 2 of 3).
RUNNING = JobFacts(state=S.TRANSFERRING, attempt=2, placed=False, size=500)
#: The same job on its last attempt.
LAST = JobFacts(state=S.TRANSFERRING, attempt=3, placed=False, size=500)
#: Placed (renamed into its final name), attempts left.
PLACED = JobFacts(state=S.VERIFYING, attempt=2, placed=True, size=500)
#: Placed, on its last attempt.
PLACED_LAST = JobFacts(state=S.VERIFYING, attempt=3, placed=True, size=500)
#: No steps were set up (its route was not found): nothing written.
NO_STEPS = JobFacts(state=S.VALIDATED, attempt=1, placed=False, size=500, ran=False)

CLEAR = RouteLook(clear=True)
DOWN = RouteLook(clear=False)


def roll_back(then: State, reason: str = "boom", **kw: Any) -> Decision:
    return Decision(Action.ROLL_BACK, reason, then=then, **kw)


def pause(reason: str = "boom", *, wait: float = 0.0, **kw: Any) -> Decision:
    defaults: dict[str, Any] = {
        "retry_at": NOW + wait,
        "delay": wait,
        "uses_attempt": False,
        "remove_temporaries": True,
        "resume_at": NOW + wait if wait else None,
        "alerts": (Alert.ROUTE_PAUSED,),
    }
    return Decision(Action.PAUSE_ROUTE, reason, **{**defaults, **kw})


DECIDE_ROWS = [
    # -- transient errors: retried after a backoff, rolled back before the placement
    pytest.param(
        # A transient error with attempts left: undo, then retry_wait (the
        # rollback draws the backoff).
        SourceChanged("boom"),
        RUNNING,
        None,
        roll_back(S.RETRY_WAIT),
        id="transient-before-placement-attempts-left",
    ),
    pytest.param(
        # Out of attempts: undo, then failed; the reason says it gave up.
        SourceChanged("boom"),
        LAST,
        None,
        roll_back(S.FAILED, "boom (gave up after 3 attempts)"),
        id="transient-before-placement-exhausted",
    ),
    pytest.param(
        # After the placement: never rolled back, retry the remaining work
        # after base_delay × 2^(attempt-1) = 20 s.
        SourceChanged("boom"),
        PLACED,
        None,
        Decision(Action.RETRY_AT, "boom", retry_at=NOW + 20.0, delay=20.0),
        id="transient-after-placement-attempts-left",
    ),
    pytest.param(
        # After the placement, out of attempts: failed with the delivery kept.
        SourceChanged("boom"),
        PLACED_LAST,
        None,
        Decision(Action.FAIL_KEPT, "boom", alerts=(Alert.JOB_FAILED,)),
        id="transient-after-placement-exhausted",
    ),
    pytest.param(
        # A bug (any exception Ketter does not know) is a transient error
        # once triaged: bounded retries, not a failure at once.
        TransientError("unexpected error: KeyError('x')"),
        RUNNING,
        None,
        roll_back(S.RETRY_WAIT, "unexpected error: KeyError('x')"),
        id="unexpected-exception-attempts-left",
    ),
    # -- permanent errors: fail now
    pytest.param(
        # Retrying cannot help: undo and fail; the rollback alerts job_failed.
        PermanentError("boom"),
        RUNNING,
        None,
        roll_back(S.FAILED, permanent=True),
        id="permanent-before-placement",
    ),
    pytest.param(
        # Permanent after the placement: failed, the delivery kept.
        PermanentError("boom"),
        PLACED,
        None,
        Decision(Action.FAIL_KEPT, "boom", alerts=(Alert.JOB_FAILED,)),
        id="permanent-after-placement",
    ),
    pytest.param(
        # The route left the config: no steps, nothing written; failed here,
        # so the decision itself carries the job_failed alert.
        RouteRemoved("no route named 'r'"),
        NO_STEPS,
        None,
        roll_back(S.FAILED, "no route named 'r'", permanent=True, alerts=(Alert.JOB_FAILED,)),
        id="route-removed-no-steps",
    ),
    pytest.param(
        # A transient error before any step was set up fails no one: retry.
        SourceChanged("boom"),
        NO_STEPS,
        None,
        roll_back(S.RETRY_WAIT),
        id="transient-no-steps",
    ),
    # -- verification: alerted besides the error's own policy
    pytest.param(
        # A checksum mismatch is transient: retried, and alerted.
        ChecksumMismatch("boom"),
        RUNNING,
        None,
        roll_back(S.RETRY_WAIT, alerts=(Alert.VERIFY_MISMATCH,)),
        id="checksum-mismatch-before-placement",
    ),
    pytest.param(
        # A folder that does not match its own MHL history: permanent, alerted
        # (recognised by the error tree, not by its class name).
        MHLMismatch("boom"),
        RUNNING,
        None,
        roll_back(S.FAILED, permanent=True, alerts=(Alert.VERIFY_MISMATCH,)),
        id="mhl-mismatch-before-placement",
    ),
    pytest.param(
        # A mismatch after the placement on the last attempt: failed, kept,
        # both alerts (verify first).
        ChecksumMismatch("boom"),
        PLACED_LAST,
        None,
        Decision(Action.FAIL_KEPT, "boom", alerts=(Alert.VERIFY_MISMATCH, Alert.JOB_FAILED)),
        id="checksum-mismatch-after-placement-exhausted",
    ),
    # -- cancelled by an operator (#17)
    pytest.param(
        # Before the placement: undo, then cancelled, quietly, no attempt used.
        JobCancelled("boom"),
        RUNNING,
        None,
        roll_back(S.CANCELLED, permanent=True, uses_attempt=False),
        id="cancelled-before-placement",
    ),
    pytest.param(
        # On the last attempt too: cancelled, not failed.
        JobCancelled("boom"),
        LAST,
        None,
        roll_back(S.CANCELLED, permanent=True, uses_attempt=False),
        id="cancelled-before-placement-exhausted",
    ),
    pytest.param(
        # Never reached (a cancel is refused once placed); the delivery stands.
        JobCancelled("boom"),
        PLACED,
        None,
        Decision(Action.RETRY_AT, "boom", retry_at=NOW, delay=0.0, uses_attempt=False),
        id="cancelled-after-placement-goes-on",
    ),
    # -- superseded: the detected version is gone
    pytest.param(
        # Before the placement: undo, then superseded, quietly (no alert).
        SourceSuperseded("boom"),
        RUNNING,
        None,
        roll_back(S.SUPERSEDED, permanent=True),
        id="superseded-before-placement",
    ),
    pytest.param(
        # Superseded on the last attempt is still superseded, not failed.
        SourceSuperseded("boom"),
        LAST,
        None,
        roll_back(S.SUPERSEDED, permanent=True),
        id="superseded-before-placement-exhausted",
    ),
    pytest.param(
        # After the placement it is a permanent error: failed, delivery kept.
        SourceSuperseded("boom"),
        PLACED,
        None,
        Decision(Action.FAIL_KEPT, "boom", alerts=(Alert.JOB_FAILED,)),
        id="superseded-after-placement",
    ),
    # -- source in use: waits, never using up attempts
    pytest.param(
        # Before the placement, on the last attempt: still retried, the
        # attempt given back (a render may take hours).
        SourceInUse("boom"),
        LAST,
        None,
        roll_back(S.RETRY_WAIT, uses_attempt=False),
        id="source-in-use-before-placement-exhausted",
    ),
    pytest.param(
        # After the placement (a move's source still open): look again every
        # max_delay, the attempt given back, whatever the attempts.
        SourceInUse("boom"),
        PLACED_LAST,
        None,
        Decision(Action.RETRY_AT, "boom", retry_at=NOW + 100.0, delay=100.0, uses_attempt=False),
        id="source-in-use-after-placement-exhausted",
    ),
    # -- route unavailable: the route pauses, the job keeps its attempts
    pytest.param(
        # The share is gone: pause, remove our temporaries, alert, due at once
        # (the paused route is not claimed until it resumes).
        RouteUnavailable("boom"),
        RUNNING,
        DOWN,
        pause(),
        id="route-unavailable-before-placement",
    ),
    pytest.param(
        # Out of attempts does not matter: a route outage uses none.
        RouteUnavailable("boom"),
        LAST,
        DOWN,
        pause(),
        id="route-unavailable-exhausted",
    ),
    pytest.param(
        # After the placement nothing is removed (the delivery is in place).
        RouteUnavailable("boom"),
        PLACED,
        DOWN,
        pause(remove_temporaries=False),
        id="route-unavailable-after-placement",
    ),
    pytest.param(
        # The route looks fine from outside: the job's own problem (a nested
        # mount), an ordinary transient error using attempts.
        RouteUnavailable("boom"),
        RUNNING,
        CLEAR,
        roll_back(S.RETRY_WAIT),
        id="route-unavailable-but-clear-before-placement",
    ),
    pytest.param(
        # Same after the placement: forward only, after the backoff.
        RouteUnavailable("boom"),
        PLACED,
        CLEAR,
        Decision(Action.RETRY_AT, "boom", retry_at=NOW + 20.0, delay=20.0),
        id="route-unavailable-but-clear-after-placement",
    ),
    pytest.param(
        # Without steps the route was not looked at: it pauses.
        RouteUnavailable("boom"),
        NO_STEPS,
        None,
        pause(remove_temporaries=False),
        id="route-unavailable-no-steps",
    ),
    # -- a route folder that refuses writes (EROFS): the unit's sandbox or a
    # read-only mount. It looks clear from outside, and still pauses (it used
    # to fail the job for good while health stayed healthy, issue #15).
    pytest.param(
        # The sweep tries again after max_delay, not at once; the attempt is given back.
        RouteNotWritable("boom"),
        RUNNING,
        CLEAR,
        pause(wait=100.0),
        id="route-not-writable-clear-before-placement",
    ),
    pytest.param(
        # Out of attempts does not matter either.
        RouteNotWritable("boom"),
        LAST,
        CLEAR,
        pause(wait=100.0),
        id="route-not-writable-exhausted",
    ),
    pytest.param(
        # The look sees the route cannot run (read_only_reason in the
        # sweep's look): no wait, it resumes as soon as it is writable.
        RouteNotWritable("boom"),
        RUNNING,
        DOWN,
        pause(),
        id="route-not-writable-down",
    ),
    pytest.param(
        # After the placement (a move source that may not be deleted): the
        # delivery stays, the route pauses.
        RouteNotWritable("boom"),
        PLACED,
        CLEAR,
        pause(wait=100.0, remove_temporaries=False),
        id="route-not-writable-after-placement",
    ),
    # -- destination full: paused for the job's room
    pytest.param(
        # First pause of an episode, the destination really is full: pause
        # until 700 bytes are free, alert, resume at the sweep that finds room.
        DestinationFull("boom", room_needed=700),
        RUNNING,
        DOWN,
        pause(room=RoomPause(700, 1, 0.0, roomy=False, explained=False)),
        id="destination-full-first-pause",
    ),
    pytest.param(
        # The error does not know the size: the job's own size is the room.
        DestinationFull("boom"),
        RUNNING,
        DOWN,
        pause(room=RoomPause(500, 1, 0.0, roomy=False, explained=False)),
        id="destination-full-size-from-job",
    ),
    pytest.param(
        # Free space shown but the write refused (a quota): wait max_delay,
        # explained in the reason, the first pause alerts.
        DestinationFull("boom", room_needed=700),
        RUNNING,
        CLEAR,
        pause(wait=100.0, room=RoomPause(700, 1, 100.0, roomy=True, explained=True)),
        id="destination-full-quota-first-pause",
    ),
    pytest.param(
        # Second pause of the episode (nothing delivered since): twice the
        # wait, no second alert.
        DestinationFull("boom", room_needed=700),
        RUNNING,
        RouteLook(False, 1),
        pause(
            wait=200.0,
            room=RoomPause(700, 2, 200.0, roomy=False, explained=True),
            alerts=(),
        ),
        id="destination-full-second-pause",
    ),
    pytest.param(
        # The wait doubles up to the 15-minute cap.
        DestinationFull("boom", room_needed=700),
        RUNNING,
        RouteLook(True, 6),
        pause(
            wait=900.0,
            room=RoomPause(700, 7, 900.0, roomy=True, explained=True),
            alerts=(),
        ),
        id="destination-full-capped",
    ),
    pytest.param(
        # Full after the placement (a move's bookkeeping): paused, the
        # delivery left alone; never a rollback.
        DestinationFull("boom", room_needed=700),
        PLACED_LAST,
        DOWN,
        pause(
            remove_temporaries=False,
            room=RoomPause(700, 1, 0.0, roomy=False, explained=False),
        ),
        id="destination-full-after-placement-exhausted",
    ),
    pytest.param(
        # No steps: the route not looked at, no wait, the pause still counted.
        DestinationFull("boom", room_needed=700),
        NO_STEPS,
        RouteLook(False, 1),
        pause(
            remove_temporaries=False,
            room=RoomPause(700, 2, 0.0, roomy=False, explained=False),
            alerts=(),
        ),
        id="destination-full-no-steps",
    ),
]


@pytest.mark.parametrize(("error", "job", "look", "expected"), DECIDE_ROWS)
def test_decide(
    error: KetterError, job: JobFacts, look: RouteLook | None, expected: Decision
) -> None:
    assert decide(error, job, NOW, retry=RETRY, route=look) == expected


@pytest.mark.parametrize(
    ("error", "job", "look"),
    [(p.values[0], p.values[1], p.values[2]) for p in DECIDE_ROWS],
    ids=[p.id for p in DECIDE_ROWS],
)
def test_route_looked_at_only_for_route_errors(
    error: KetterError, job: JobFacts, look: RouteLook | None
) -> None:
    # The runner looks at the route (statvfs, mounts: may block on a dead
    # share) only when decide() uses it; every row given a look is a route error.
    assert looks_at_route(error) == isinstance(error, RouteUnavailable)
    if look is not None:
        assert looks_at_route(error)
    assert (room_needed(error, job) is not None) == isinstance(error, DestinationFull)


@pytest.mark.parametrize(
    ("exc", "stop", "error_type", "unexpected"),
    [
        # A stop request: released, no attempt used.
        (ShutdownRequested("stop"), Stop.RELEASE, None, False),
        # Another worker took the job over: only our temporaries go.
        (LostClaim("taken"), Stop.LET_GO, None, False),
        # The store was replaced: every claim of it is lost.
        (StoreLost("gone"), Stop.LET_GO, None, False),
        # A Ketter error is the job's, as it is.
        (SourceChanged("boom"), Stop.JOB_ERROR, SourceChanged, False),
        # The state disk is full (SQLite says so): left as a crash would.
        (sqlite3.OperationalError("database or disk is full"), Stop.STORE, None, False),
        # ENOSPC on a file of the state disk: the store's problem.
        (
            OSError(errno.ENOSPC, "No space left", "/state/ketter.db-wal"),
            Stop.STORE,
            None,
            False,
        ),
        # ENOSPC anywhere else is the destination's: a route pause for room.
        (OSError(errno.ENOSPC, "No space", "/dst/a.tmp"), Stop.JOB_ERROR, DestinationFull, False),
        # An OSError without a known errno: transient.
        (OSError(errno.EMLINK, "Too many links"), Stop.JOB_ERROR, TransientError, False),
        # EIO: a share whose server is down (#15 §1), or a flaky disk: the
        # route is looked at (paused while it does not answer).
        (OSError(errno.EIO, "I/O error"), Stop.JOB_ERROR, RouteUnavailable, False),
        # A bug: transient (bounded retries), logged with its traceback.
        (ValueError("bug"), Stop.JOB_ERROR, TransientError, True),
        # A KeyError out of the steps is a bug too, never "route removed"
        # (that is RouteRemoved, raised by the route lookup).
        (KeyError("x"), Stop.JOB_ERROR, TransientError, True),
        # Not a job error: raised on.
        (KeyboardInterrupt(), Stop.RAISE, None, False),
    ],
    ids=[
        "shutdown", "lost-claim", "store-lost", "ketter-error", "sqlite-full",
        "enospc-state-disk", "enospc-destination", "oserror-unknown", "oserror-eio", "unexpected",
        "keyerror-is-a-bug", "keyboard-interrupt",
    ],
)  # fmt: skip
def test_triage(exc: BaseException, stop: Stop, error_type: type | None, unexpected: bool) -> None:
    triaged = triage(exc, state_dir="/state", where=b"/src/a")
    assert triaged.stop is stop
    assert triaged.unexpected is unexpected
    if error_type is None:
        assert triaged.error is None
    else:
        assert type(triaged.error) is error_type
    if stop is Stop.JOB_ERROR and isinstance(exc, KetterError):
        assert triaged.error is exc
    if isinstance(exc, KeyError):
        assert not isinstance(triaged.error, PermanentError)


def test_jitter_drawn_from_the_rng_given() -> None:
    # decide() draws the jitter from the rng it is given (the runner's), so
    # a seeded rng gives the same decision twice.
    import random

    retry = RetryConfig(max_attempts=3, base_delay=10.0, max_delay=100.0, jitter=True)
    a = decide(SourceChanged("x"), PLACED, NOW, retry=retry, rng=random.Random(7))
    b = decide(SourceChanged("x"), PLACED, NOW, retry=retry, rng=random.Random(7))
    assert a == b and a.delay is not None and 10.0 <= a.delay <= 20.0


def test_route_lookup_raises_route_removed() -> None:
    # The one place a missing route is recognised: the runner's lookup, which
    # raises the permanent RouteRemoved naming the known routes.
    from ketter.audit.chain import AuditChain
    from ketter.store.memory import MemoryJobStore

    runner = JobRunner(
        Config(),
        store=MemoryJobStore(AuditChain(node="n1")),
        shutdown=None,  # type: ignore[arg-type]
        keeper=None,  # type: ignore[arg-type]
    )
    with pytest.raises(RouteRemoved, match="no route named 'gone'"):
        runner.route_of("gone")
