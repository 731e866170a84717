"""Contract: an operator's cancel request (recorded with its event, the
fence it puts on steps forward) and hold of a route (no claims, kept apart
from the outage pauses), on every backend (#17)."""

from __future__ import annotations

import json

import pytest

from ketter.audit.chain import Principal
from ketter.errors import JobCancelled
from ketter.store.port import JobStore
from ketter.store.ports.jobs import JobChange
from tests.contract.seed import events_of, put_job

ALICE = Principal("token", "alice")
TTL = 30.0


def details_of(store: JobStore, event: str) -> list[dict]:
    return [json.loads(e.details) for e in store.events_after(0, limit=100) if e.event == event]


def users_of(store: JobStore, event: str) -> list[str]:
    return [e.user for e in store.events_after(0, limit=100) if e.event == event]


# -- cancel -------------------------------------------------------------------


def test_a_cancel_request_is_recorded_once_with_its_event(job_store: JobStore) -> None:
    job_id = put_job(job_store, state="transferring", claim="c1", lease_owner="w")
    assert job_store.cancel_requested(job_id) is False
    assert job_store.request_cancel(job_id, now=50.0, actor=ALICE) is True
    assert job_store.request_cancel(job_id, now=51.0, actor=ALICE) is False  # asked already
    job = job_store.get_job(job_id)
    assert (job.cancel_requested_at, job.cancel_requested_by) == (50.0, "token:alice")
    assert (job.state, job.claim) == ("transferring", "c1")  # the worker's to carry out
    assert job_store.cancel_requested(job_id) is True
    assert events_of(job_store, job_id) == [("cancel_requested", "transferring", "transferring", 0)]
    assert users_of(job_store, "cancel_requested") == ["token:alice"]
    assert details_of(job_store, "cancel_requested") == [{"by": "token:alice", "lease_owner": "w"}]


@pytest.mark.parametrize(
    "fields",
    [
        {"state": "completed"},
        {"state": "failed"},
        {"state": "cancelled"},
        {"state": "verifying", "placed_at": 9.0},
    ],
    ids=["completed", "failed", "cancelled", "placed"],
)
def test_a_finished_or_placed_job_takes_no_cancel_request(
    job_store: JobStore, fields: dict
) -> None:
    job_id = put_job(job_store, **fields)
    assert job_store.request_cancel(job_id, now=50.0, actor=ALICE) is False
    assert job_store.get_job(job_id).cancel_requested_at is None
    assert job_store.request_cancel(job_id + 99, now=50.0, actor=ALICE) is False
    assert job_store.events_after(0, limit=10) == []


def test_a_step_forward_of_a_job_asked_to_cancel_is_refused(job_store: JobStore) -> None:
    job_id = put_job(job_store, state="transferring", claim="c1")
    job_store.request_cancel(job_id, now=50.0)
    forward = JobChange("verifying", "verify", only_uncancelled=True)
    with pytest.raises(JobCancelled, match="cancelled by"):
        job_store.advance(job_id, "transferring", [forward], claim="c1", now=60.0)
    assert job_store.get_job(job_id).state == "transferring"  # nothing written
    # The undo is not a step forward: it goes through.
    back = JobChange("rolling_back", "rollback")
    assert job_store.advance(job_id, "transferring", [back], claim="c1", now=61.0) == (
        "rolling_back"
    )


def test_a_refused_step_of_several_names_the_change_refused(job_store: JobStore) -> None:
    """Several changes in one advance (PostgreSQL sends them as one
    statement): the refusal names the change that was refused, not the
    first one, and none of them is written."""
    job_id = put_job(job_store, state="transferring", claim="c1")
    job_store.request_cancel(job_id, now=50.0)
    before = len(events_of(job_store, job_id))
    note = JobChange(None, "warning", {"what": "a note first"})
    forward = JobChange("verifying", "verify", only_uncancelled=True)
    with pytest.raises(JobCancelled, match="refused transferring → verifying"):
        job_store.advance(job_id, "transferring", [note, forward], claim="c1", now=60.0)
    assert job_store.get_job(job_id).state == "transferring"
    assert len(events_of(job_store, job_id)) == before  # the note is not written either


def test_without_a_request_the_fenced_step_goes_through(job_store: JobStore) -> None:
    job_id = put_job(job_store, state="transferring", claim="c1")
    forward = JobChange("verifying", "verify", only_uncancelled=True)
    assert job_store.advance(job_id, "transferring", [forward], claim="c1", now=60.0) == (
        "verifying"
    )
    assert job_store.compare_and_set(
        job_id, state="verifying", claim="c1", values={"error": None}, only_uncancelled=True
    )


def test_advance_writes_its_events_for_the_actor_given(job_store: JobStore) -> None:
    job_id = put_job(job_store)
    job_store.advance(
        job_id,
        "detected",
        [JobChange("rolling_back", "rollback"), JobChange("cancelled", "cancel")],
        claim=None,
        now=5.0,
        actor=ALICE,
    )
    assert users_of(job_store, "cancel") == ["token:alice"]
    assert job_store.get_job(job_id).state == "cancelled"


# -- hold ---------------------------------------------------------------------


def claim(store: JobStore, route: str) -> object:
    return store.claim_next({route: 0}, hint=None, owner="n1/1/w", now=100.0, ttl=TTL)


def test_hold_once_then_release_once_with_who_and_why(job_store: JobStore) -> None:
    assert job_store.held_route_statuses() == []
    assert job_store.release_route("r", now=1.0, actor=ALICE) is False  # never held
    assert job_store.hold_route("r", reason="grading review", now=10.0, actor=ALICE) is True
    assert job_store.hold_route("r", reason="again", now=11.0, actor=ALICE) is False
    status = job_store.route_status("r")
    assert status is not None
    assert (status.held, status.held_reason, status.held_by, status.held_since) == (
        1,
        "grading review",
        "token:alice",
        10.0,
    )
    assert status.paused == 0  # a hold is not an outage pause
    assert job_store.paused_route_statuses() == []
    assert [s.route for s in job_store.held_route_statuses()] == ["r"]
    assert job_store.release_route("r", now=25.5, actor=ALICE) is True
    assert job_store.release_route("r", now=26.0, actor=ALICE) is False
    status = job_store.route_status("r")
    assert status is not None
    assert (status.held, status.held_reason, status.held_by, status.held_since) == (
        0,
        None,
        None,
        None,
    )
    assert details_of(job_store, "route_held") == [{"reason": "grading review"}]
    assert details_of(job_store, "route_released") == [
        {"held_for_s": 15.5, "reason_was": "grading review", "held_by": "token:alice"}
    ]
    assert users_of(job_store, "route_held") == ["token:alice"]


def test_a_held_route_takes_no_claims_nor_batches_nor_doorbells(job_store: JobStore) -> None:
    job_id = put_job(job_store, route="h")
    job_store.hold_route("h", reason="maintenance", now=1.0)
    assert job_store.paused_route_names() == {"h"}
    assert claim(job_store, "h") is None
    assert job_store.claim_next({"h": 0}, hint=job_id, owner="o", now=100.0, ttl=TTL) is None
    assert (
        job_store.claim_batch(
            "h",
            max_parallel=0,
            owner="o",
            now=100.0,
            ttl=TTL,
            limit=4,
            max_size=100,
            mode="copy",
        )
        == []
    )
    assert job_store.due_job_ids({"h": 0}, now=100.0, limit=10) == []
    job_store.release_route("h", now=2.0)
    assert job_store.paused_route_names() == set()
    assert job_store.due_job_ids({"h": 0}, now=100.0, limit=10) == [job_id]


def test_an_outage_pause_and_its_resume_leave_a_hold_as_it_is(job_store: JobStore) -> None:
    job_store.hold_route("r", reason="grading review", now=10.0)
    assert job_store.pause_route("r", "share gone", now=20.0, room_needed=5) is True
    assert job_store.resume_route("r", now=30.0) is True
    status = job_store.route_status("r")
    assert status is not None
    assert (status.paused, status.held, status.held_reason, status.held_since) == (
        0,
        1,
        "grading review",
        10.0,
    )
    assert job_store.paused_route_names() == {"r"}  # still no claims
    # And a hold taken during an outage leaves the pause as it is.
    job_store.release_route("r", now=40.0)
    job_store.pause_route("r", "share gone", now=50.0)
    job_store.hold_route("r", reason="wait for the vendor", now=55.0)
    job_store.release_route("r", now=60.0)
    status = job_store.route_status("r")
    assert status is not None and (status.paused, status.reason, status.held) == (
        1,
        "share gone",
        0,
    )


# -- cancel_job's outcomes (ketter.jobs.cancel), on every backend ---------------


@pytest.mark.parametrize(
    ("fields", "outcome", "state"),
    [
        # Waiting, nothing being written: ended now.
        ({"state": "detected"}, "cancelled", "cancelled"),
        (
            {"state": "retry_wait", "claim": "old", "next_attempt_at": 500.0},
            "cancelled",
            "cancelled",
        ),
        # A crashed claim's lease ran out: waiting too.
        ({"state": "detected", "claim": "c", "lease_expires_at": 50.0}, "cancelled", "cancelled"),
        # A worker holds it (a live lease): its worker carries the cancel out.
        (
            {"state": "transferring", "claim": "c", "lease_owner": "w", "lease_expires_at": 200.0},
            "requested",
            "transferring",
        ),
        (
            {"state": "retry_wait", "claim": "c", "lease_expires_at": 200.0},
            "requested",
            "retry_wait",
        ),
        # Left in flight by a stopped worker: the next claim carries it out.
        ({"state": "transferring", "claim": "c"}, "requested", "transferring"),
        # Its rename into place is under way, or it is placed: refused.
        ({"state": "verifying", "claim": "c", "lease_expires_at": 200.0}, "placed", "verifying"),
        ({"state": "retry_wait", "placed_at": 9.0}, "placed", "retry_wait"),
        ({"state": "completed"}, "finished", "completed"),
        ({"state": "superseded"}, "finished", "superseded"),
    ],
)
def test_cancel_job_outcomes(job_store: JobStore, fields: dict, outcome: str, state: str) -> None:
    from ketter.jobs.cancel import cancel_job

    job_id = put_job(job_store, **fields)
    result = cancel_job(job_store, job_id, now=100.0, actor=ALICE)
    assert (result.outcome, result.job_id, result.state) == (outcome, job_id, state), result
    job = job_store.get_job(job_id)
    assert job.state == state
    requested = outcome in ("requested", "cancelled")
    assert (job.cancel_requested_by is not None) is requested
    events = [e for e, *_ in events_of(job_store, job_id)]
    if outcome == "cancelled":
        assert events == ["cancel_requested", "rollback", "cancel"]
        assert (job.completed_at, job.lease_expires_at, job.rollback_to) == (100.0, None, None)
        assert users_of(job_store, "cancel") == ["token:alice"]
    elif outcome == "requested":
        assert events == ["cancel_requested"]
        again = cancel_job(job_store, job_id, now=101.0, actor=ALICE)
        assert again.outcome == "requested" and "already requested" in again.message
    else:
        assert events == []


def test_cancel_job_of_no_job(job_store: JobStore) -> None:
    from ketter.jobs.cancel import cancel_job

    result = cancel_job(job_store, 4242, now=1.0, actor=ALICE)
    assert (result.outcome, result.state, result.accepted) == ("missing", None, False)
