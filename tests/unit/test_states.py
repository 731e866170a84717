"""The state machine: every (from, to) pair, allowed or not, through the real
compare-and-set against a real job store."""

from __future__ import annotations

import itertools
import time

import pytest

from ketter.errors import InvalidTransition, LostClaim
from ketter.jobs.create import NewJob, create_job
from ketter.jobs.states import TRANSITIONS, State, is_allowed
from ketter.jobs.transitions import transition
from ketter.store.models import Event, Job

PAIRS = list(itertools.product(State, State))


def make_job(job_store, state: State, claim: str | None = "c1", placed: bool = False) -> int:
    key = f"key-{time.monotonic_ns()}"
    created = create_job(job_store, NewJob("r", "copy", "file", b"/src/f", key, 10), node="n",
                         now=time.time())
    Job.update(state=state.value, claim=claim,
               placed_at=time.time() if placed else None).where(
        Job.id == created.job_id).execute()
    return created.job_id


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(State)
    assert not TRANSITIONS[State.COMPLETED]


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_pair(job_store, src: State, dst: State) -> None:
    job_id = make_job(job_store, src)
    before = Event.select().count()
    if is_allowed(src, dst):
        transition(job_store, job_id, src, dst, claim="c1", now=time.time())
        assert Job.get_by_id(job_id).state == dst.value
        event = Event.select().order_by(Event.id.desc()).get()
        assert (event.job_id, event.from_state, event.to_state) == (job_id, src.value,
                                                                     dst.value)
    else:
        with pytest.raises(InvalidTransition, match="not an allowed transition"):
            transition(job_store, job_id, src, dst, claim="c1", now=time.time())
        assert Job.get_by_id(job_id).state == src.value
        assert Event.select().count() == before


def test_wrong_current_state_is_refused(job_store) -> None:
    job_id = make_job(job_store, State.TRANSFERRING)
    with pytest.raises(InvalidTransition, match="is transferring, not validated"):
        transition(job_store, job_id, State.VALIDATED, State.TRANSFERRING, claim="c1",
                   now=time.time())


def test_lost_claim_is_refused_and_changes_nothing(job_store) -> None:
    job_id = make_job(job_store, State.TRANSFERRING, claim="new-owner")
    with pytest.raises(LostClaim, match="claim c1 is no longer held"):
        transition(job_store, job_id, State.TRANSFERRING, State.VERIFYING, claim="c1",
                   now=time.time())
    assert Job.get_by_id(job_id).state == "transferring"


def test_placed_job_never_rolls_back(job_store) -> None:
    job_id = make_job(job_store, State.VERIFYING, placed=True)
    with pytest.raises(InvalidTransition, match="only moves forward"):
        transition(job_store, job_id, State.VERIFYING, State.ROLLING_BACK, claim="c1",
                   now=time.time())
    transition(job_store, job_id, State.VERIFYING, State.COMPLETED, claim="c1", now=time.time(),
               fsync=True, completed_at=time.time())
    assert Job.get_by_id(job_id).state == "completed"


def test_fields_are_set_with_the_transition(job_store) -> None:
    job_id = make_job(job_store, State.VERIFYING)
    transition(job_store, job_id, State.VERIFYING, State.RETRY_WAIT, claim="c1", now=100.0,
               error="disk full", next_attempt_at=105.0, details={"delay": 5})
    job = Job.get_by_id(job_id)
    assert (job.error, job.next_attempt_at, job.updated_at) == ("disk full", 105.0, 100.0)


def test_superseded_is_terminal_and_reached_only_through_rolling_back() -> None:
    """#14 finding 14: the old version's job ends quietly; its temporaries
    are removed first (rolling_back), and nothing leaves the state."""
    from ketter.jobs.states import TERMINAL
    from ketter.store.models import TERMINAL_STATES

    assert not TRANSITIONS[State.SUPERSEDED]
    assert [s for s in State if State.SUPERSEDED in TRANSITIONS[s]] == [State.ROLLING_BACK]
    assert State.SUPERSEDED in TERMINAL
    assert {s.value for s in TERMINAL} == set(TERMINAL_STATES)


def test_cancelled_is_terminal_reached_through_rolling_back_and_requeued() -> None:
    """#17: a cancel rolls back like a failure, ends quietly, and an operator
    may re-queue it like a failed job; a step forward refuses a cancel."""
    from ketter.jobs.states import DEFAULT_EVENT, FORWARD, TERMINAL

    assert [s for s in State if State.CANCELLED in TRANSITIONS[s]] == [State.ROLLING_BACK]
    assert TRANSITIONS[State.CANCELLED] == frozenset({State.DETECTED})
    assert State.CANCELLED in TERMINAL and DEFAULT_EVENT[State.CANCELLED] == "cancel"
    assert {State.VALIDATED, State.PACKAGED, State.TRANSFERRING, State.VERIFYING} == FORWARD
